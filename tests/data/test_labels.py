"""The registry's by-name mapping between two datasets' class orders."""
import pytest

from dml_csr.data.labels import LabelSpec, class_mapping, get_spec


def test_helen_to_celebamask_matches_names_and_synonyms():
    to_dst, unmatched = class_mapping(get_spec("helen"), get_spec("celebamask_hq"))
    # background skin left_brow right_brow left_eye right_eye nose upper_lip inner_mouth lower_lip hair
    assert to_dst.tolist() == [0, 1, 6, 7, 4, 5, 2, 11, 10, 12, 13]
    assert [get_spec("celebamask_hq").classes[i] for i in unmatched] == [
        "eye_g", "l_ear", "r_ear", "hat", "ear_r", "neck_l", "neck", "cloth"]


def test_celebamask_to_helen_has_no_counterpart_for_the_extra_parts():
    to_dst, unmatched = class_mapping(get_spec("celebamask_hq"), get_spec("helen"))
    assert to_dst.tolist() == [0, 1, 6, -1, 4, 5, 2, 3, -1, -1, 8, 7, 9, 10, -1, -1, -1, -1, -1]
    assert unmatched == ()


def test_lapa_and_helen_share_the_order_and_lfw_keeps_skin_and_hair():
    to_dst, unmatched = class_mapping(get_spec("lapa"), get_spec("helen"))
    assert to_dst.tolist() == list(range(11)) and unmatched == ()
    to_dst, unmatched = class_mapping(get_spec("helen"), get_spec("lfw_pl"))
    assert to_dst.tolist() == [0, 1] + [-1] * 8 + [2] and unmatched == ()  # never merged into the coarser skin


def test_no_shared_name_besides_background_is_an_error():
    other = LabelSpec("cars", ("background", "wheel", "door"))
    with pytest.raises(ValueError, match="'cars' .* and 'lfw_pl' .* share no class name besides background"):
        class_mapping(other, get_spec("lfw_pl"))
