"""A dataset's landmark template: measured from its landmark files (or a detector) through the whole-image crop,
written beside the lists, recorded by training in the checkpoints' crop convention."""
from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
from helpers.scripts import run_script

from dml_csr.data.synthetic import write_dataset
from dml_csr.photos.faces import Face
from dml_csr.data.face_template import WHOLE_IMAGE, check_crop, crop_for_training, read_template, write_template
from dml_csr.data.split_template import measure_split


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = str(tmp_path_factory.mktemp("syn"))
    write_dataset(r, {"train": 6, "test": 2}, seed=3, size=(120, 120))
    return r


def _landmarks(root, split="train"):
    folder = os.path.join(root, split, "landmarks")
    return [np.loadtxt(os.path.join(folder, f), skiprows=1) for f in sorted(os.listdir(folder))]


def test_the_template_is_the_mean_landmark_position_in_the_input(root):
    """The authors' whole-image crop of a 120x120 image maps the 119 px from the first to the last pixel centre
    onto the input's 473 px, centre to centre: x -> (x - 59.5) * 473 / 119 + 236.5."""
    crop = measure_split(root, "train", (473, 473))
    expected = np.mean([(p - 59.5) * 473 / 119 + 236.5 for p in _landmarks(root)], 0) / 473
    np.testing.assert_allclose(crop["points"], expected, atol=1e-6)
    assert crop["kind"] == "template" and crop["faces"] == 6 and crop["input_size"] == [473, 473]
    assert "6 landmark files, 0 detected" in crop["source"]
    three = measure_split(root, "train", (473, 473), limit=3)  # evenly spaced: samples 0, 2 and 5 of 6
    picked = [_landmarks(root)[i] for i in (0, 2, 5)]
    np.testing.assert_allclose(three["points"], np.mean([(p - 59.5) / 119 + 0.5 for p in picked], 0), atol=1e-6)


PTS = np.array([[70, 50], [50, 50], [60, 62], [68, 72], [52, 72]], np.float32)  # the subject's left eye first


def test_lapas_106_points_give_their_five(root, tmp_path):
    """LaPa's eyes' centres are points 104 (image left) and 105, its nose tip 54, its mouth corners 84 and 90 (the
    five FaRL aligns by); no detector is needed."""
    import shutil

    lapa = str(tmp_path / "lapa_like")
    shutil.copytree(root, lapa)
    folder = os.path.join(lapa, "train", "landmarks")
    points = np.tile([[1.0, 2.0]], (106, 1))
    points[[105, 104, 54, 90, 84]] = PTS
    for f in os.listdir(folder):
        with open(os.path.join(folder, f), "w") as fh:
            fh.write("106\n" + "".join(f"{x} {y}\n" for x, y in points))
    crop = measure_split(lapa, "train", (473, 473))
    assert "6 landmark files, 0 detected" in crop["source"]
    np.testing.assert_allclose(crop["points"], ((PTS - 59.5) * 473 / 119 + 236.5) / 473, atol=1e-6)


def test_samples_without_five_point_files_go_through_the_detector(root, tmp_path):
    import shutil

    other = str(tmp_path / "ibug_like")
    shutil.copytree(root, other)
    folder = os.path.join(other, "train", "landmarks")
    for f in os.listdir(folder):  # another scheme: 300-W's 68 points
        with open(os.path.join(folder, f), "w") as fh:
            fh.write("68\n" + "1 2\n" * 68)
    seen = []
    pts = PTS

    def detector(image):
        seen.append(image.shape)
        return [Face((10, 10, 20, 20), pts / 2), Face((30, 30, 80, 80), pts)]  # the larger face is used

    crop = measure_split(other, "train", (473, 473), detector)
    assert len(seen) == 6 and "0 landmark files, 6 detected" in crop["source"]
    np.testing.assert_allclose(crop["points"], ((pts - 59.5) * 473 / 119 + 236.5) / 473, atol=1e-6)
    with pytest.raises(ValueError, match="no landmarks in split 'train' of .*ibug_like.*no detector given"):
        measure_split(other, "train", (473, 473))


def test_training_records_the_template_only_at_its_aspect(root, tmp_path, caplog):
    assert crop_for_training(str(tmp_path), (473, 473)) == {"kind": "whole_image"}
    crop = measure_split(root, "train", (473, 473))
    write_template(str(tmp_path), crop)
    assert read_template(str(tmp_path)) == crop
    assert crop_for_training(str(tmp_path), (256, 256)) == crop  # the fractions hold at any square input
    with caplog.at_level(logging.WARNING):
        assert crop_for_training(str(tmp_path), (256, 192)) == {"kind": "whole_image"}
    assert "aspect differs" in caplog.text
    (tmp_path / "face_template.json").write_text("{")
    with pytest.raises(ValueError, match="face_template.json' is not valid JSON"):
        read_template(str(tmp_path))


def test_measure_template_script_writes_the_file(root, tmp_path):
    import shutil

    r = str(tmp_path / "r")
    shutil.copytree(root, r)
    res = run_script("measure_template", "--root", r, "--detector", "none", "--input-size", "64", "64")
    assert res.returncode == 0, res.stderr
    with open(os.path.join(r, "face_template.json")) as f:
        crop = json.load(f)
    assert crop["input_size"] == [64, 64] and crop["faces"] == 6
    np.testing.assert_allclose(crop["points"], measure_split(root, "train", (473, 473))["points"], atol=1e-5)
    res = run_script("measure_template", "--root", str(tmp_path / "none"), "--detector", "none")
    assert res.returncode != 0 and "does not exist" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_a_non_square_split_is_padded_to_the_square_input(tmp_path):
    """96x128 (HxW) images: the whole-image crop scales the 127 px between the first and last column centres onto
    473 px and pads the rows: x -> (x - 63.5) * 473 / 127 + 236.5, y -> (y - 47.5) * 473 / 127 + 236.5."""
    write_dataset(str(tmp_path), {"train": 3}, seed=5, size=(96, 128))
    crop = measure_split(str(tmp_path), "train", (473, 473))
    expected = np.mean([(p - [63.5, 47.5]) / 127 + 0.5 for p in _landmarks(str(tmp_path))], 0)
    np.testing.assert_allclose(crop["points"], expected, atol=1e-6)


def test_crop_conventions_are_checked():
    assert check_crop(None) == WHOLE_IMAGE
    with pytest.raises(ValueError, match="kind 'box' is unknown"):
        check_crop({"kind": "box"})
    with pytest.raises(ValueError, match=r"'points' must be 5 \[x, y\] fractions of the input; got shape \(2, 2\)"):
        check_crop({"kind": "template", "points": [[0, 0], [1, 1]]})


def test_crop_conventions_need_an_object_and_a_size():
    with pytest.raises(ValueError, match="expected an object with a 'kind', got list"):
        check_crop([1, 2])
    pts = [[0.6, 0.4], [0.4, 0.4], [0.5, 0.5], [0.6, 0.6], [0.4, 0.6]]
    with pytest.raises(ValueError, match=r"'input_size' must be \[height, width\] in pixels; got \[0, 4\]"):
        check_crop({"kind": "template", "points": pts, "input_size": [0, 4]})
