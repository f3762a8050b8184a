"""Class maps: a Helen-order model trained on a root in CelebAMask-HQ's 19-class order, the mapped label maps checked
pixel by pixel against a mapping written out here; mappings in the YAML and in a file; every bad map one line naming
the key and the value."""
import numpy as np
import pytest
import torch
from helpers.micro import MICRO

from dml_csr.config import ConfigError, load_config
from dml_csr.data.class_map import build_class_map
from dml_csr.data.dataset import build_dataset, read_label, read_split_list
from dml_csr.data.class_map import label_spec
from dml_csr.data.labels import get_spec
from dml_csr.data.synthetic import write_dataset
from dml_csr.training.trainer import train

# CelebAMask-HQ's order -> Helen's, written out: 0 background, 1 skin, 2 nose -> 6, 3 eye_g -> ignore, 4 l_eye -> 4,
# 5 r_eye -> 5, 6 l_brow -> 2, 7 r_brow -> 3, 8 l_ear, 9 r_ear -> ignore, 10 mouth -> 8 (inner_mouth),
# 11 u_lip -> 7, 12 l_lip -> 9, 13 hair -> 10, 14 hat, 15 ear_r, 16 neck_l, 17 neck, 18 cloth -> ignore
TO_HELEN = {0: 0, 1: 1, 2: 6, 3: 255, 4: 4, 5: 5, 6: 2, 7: 3, 8: 255, 9: 255, 10: 8, 11: 7, 12: 9, 13: 10, 14: 255,
            15: 255, 16: 255, 17: 255, 18: 255, 255: 255}


@pytest.fixture(scope="module")
def root19(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("synthetic19"))
    write_dataset(root, {"train": 8, "val": 4}, seed=3, size=(64, 64), order="synthetic19")
    return root


def _cfg(root, tmp, *extra):
    sets = [s for s in MICRO if not s.startswith("data.dataset")]
    return load_config(None, sets + ["data.dataset=synthetic19", f"data.root={root}", f"output_dir={tmp}", *extra])


def test_a_helen_order_model_trains_on_a_19_class_root(root19, tmp_path):
    cfg = _cfg(root19, tmp_path, "data.class_map=helen", "train.epochs=1", "train.iters_per_epoch=2", "name=h")
    assert label_spec(cfg) == get_spec("helen")
    ds = build_dataset(cfg, "train", train=False)
    seen = set()
    for i, (_, _, label_path) in enumerate(read_split_list(root19, "train")):
        raw = read_label(label_path)
        expected = np.vectorize(TO_HELEN.__getitem__)(raw).astype(np.uint8)
        assert np.array_equal(ds.load_label(i), expected)
        seen |= set(np.unique(raw).tolist())
    assert {3, 13, 17} <= seen  # glasses, hair, neck are there to map
    # the training samples carry the mapped labels (the edges are computed from them): no value beyond Helen's 11
    sample = build_dataset(cfg, "train", train=True)[(0, 1)]
    assert set(np.unique(sample["label"].numpy()).tolist()) <= set(range(11)) | {255}
    summary = train(cfg, progress=False)
    meta = torch.load(summary["best"], weights_only=True)["meta"]
    assert meta["classes"] == list(get_spec("helen").classes) and meta["dataset"] == "helen"
    assert "palette" not in meta  # Helen's own entry: found by name


def test_a_mapping_in_the_yaml_or_a_file_names_the_models_classes(root19, tmp_path):
    spec19 = get_spec("synthetic19")
    keep = {"background": "bg", "skin": "face", "hair": "hair", "l_eye": "eye", "r_eye": "eye"}
    mapping = {c: keep.get(c, "face" if c in ("nose", "l_brow", "r_brow", "mouth", "u_lip", "l_lip") else "ignore")
               for c in spec19.classes}
    path = tmp_path / "map.yaml"
    path.write_text("".join(f"{k}: {v}\n" for k, v in mapping.items()))
    for setting in (mapping, str(path)):
        cmap = build_class_map(spec19, setting, "data.class_map")
        assert cmap.target.classes == ("bg", "face", "eye", "hair")
        assert cmap.lut[[0, 1, 2, 4, 5, 13, 17, 255]].tolist() == [0, 1, 1, 2, 2, 3, 255, 255]
        assert cmap.target.palette[3].tolist() == spec19.palette[13].tolist()  # hair keeps its colour
        assert cmap.target.flip_pairs == ()  # both eyes became one class: nothing left to swap
    cfg = _cfg(root19, tmp_path, f"data.class_map={path}")
    assert label_spec(cfg).classes == ("bg", "face", "eye", "hair")


def test_model_classes_the_root_lacks_leave_the_mean_f1():
    """A CelebAMask-HQ-order model on a Helen-order root: eye_g, ears, hat, ... are never in its ground truth."""
    cmap = build_class_map(get_spec("synthetic"), "celebamask_hq", "data.class_map")
    target = cmap.target
    assert target.classes == get_spec("celebamask_hq").classes
    assert [target.classes[i] for i in target.mean_f1_indices] == [
        "skin", "nose", "l_eye", "r_eye", "l_brow", "r_brow", "mouth", "u_lip", "l_lip", "hair"]
    assert cmap.record["unsupervised"] == ["eye_g", "l_ear", "r_ear", "hat", "ear_r", "neck_l", "neck", "cloth"]


@pytest.mark.parametrize("setting,message", [
    ("{background: bg, skin: face, eyes: eye}", "data.class_map: 'eyes' is not a class of the root (synthetic19:"),
    ("{background: bg, skin: face}", "data.class_map: no entry for the root's class(es) nose, eye_g"),
    ("helenn", "data.class_map = 'helenn': neither a registry dataset"),
])
def test_a_bad_class_map_is_one_line_naming_the_key_and_value(root19, tmp_path, setting, message):
    cfg = _cfg(root19, tmp_path, f"data.class_map={setting}")
    with pytest.raises(ConfigError) as e:
        label_spec(cfg)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_class_map_file_naming_an_unknown_class_names_the_file(root19, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("".join(f"{c}: {c}\n" for c in get_spec("synthetic19").classes) + "l_eyee: left_eye\n")
    with pytest.raises(ConfigError, match=rf"data.class_map file '{path}': 'l_eyee' is not a class of the root"):
        label_spec(_cfg(root19, tmp_path, f"data.class_map={path}"))
    with pytest.raises(ConfigError, match=r"'data.class_map' = 3 is invalid; expected str or a mapping of str to str"):
        _cfg(root19, tmp_path, "data.class_map=3")
    spec = get_spec("lfw_pl")
    with pytest.raises(ConfigError, match=r"the root's background 'background' -> ignore; expected a model class"):
        build_class_map(spec, {"background": "ignore", "skin": "skin", "hair": "hair"}, "data.class_map")
