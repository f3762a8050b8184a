"""The dataset over the prepared layout: splits, class counts, bad samples named by file, skipping."""
import logging
import os

import numpy as np
import pytest
import torch

from dml_csr.data.dataset import BadSampleError, FaceParsingDataset
from dml_csr.data.labels import get_spec
from dml_csr.data.transforms import EvalTransform, TrainTransform

SPEC = get_spec("helen")


def test_loads_prepared_layout_and_accepts_val_for_valid(prepared):
    ds = FaceParsingDataset(prepared, "val", SPEC, EvalTransform((32, 32)))
    assert ds.split == "valid" and len(ds) == 3 and ds.names == ["valid_0", "valid_1", "valid_2"]
    s = ds[1]
    assert s["name"] == "valid_1" and s["image"].shape == (3, 32, 32)
    assert s["label"].dtype == torch.uint8 and s["meta"]["size"] == (40, 56)
    assert ds.load_label(1).shape == (40, 56) and ds.load_label(1).dtype == np.uint8
    assert len(FaceParsingDataset(prepared, "train", SPEC, EvalTransform((32, 32)), max_samples=4)) == 4


def test_missing_split_names_what_exists(prepared):
    with pytest.raises(FileNotFoundError, match=r"no 'extra_list.txt'.*test, train, valid"):
        FaceParsingDataset(prepared, "extra", SPEC, EvalTransform((32, 32)))


def test_a_root_of_another_class_count_is_refused_up_front(prepared):
    with pytest.raises(ValueError, match=r"label_names.txt' lists 11 classes, but data.dataset 'lfw_pl' has 3"):
        FaceParsingDataset(prepared, "train", get_spec("lfw_pl"), EvalTransform((32, 32)))


def test_missing_validation_split_says_how_to_make_one(tmp_path):
    (tmp_path / "train_list.txt").write_text("images/a.jpg labels/a.png\n")
    with pytest.raises(FileNotFoundError, match=r"splits present: train \(.*--val-from-train N.*never the test"):
        FaceParsingDataset(str(tmp_path), "val", SPEC, EvalTransform((32, 32)))


def _sample_path(root, name, kind):
    return os.path.join(root, "train", kind, name + (".jpg" if kind == "images" else ".png"))


def _corrupt(root, case):
    import cv2
    if case == "missing image":
        os.remove(_sample_path(root, "train_2", "images"))
        return "train_2.jpg", "is missing"
    if case == "undecodable image":
        open(_sample_path(root, "train_2", "images"), "wb").write(b"not a jpeg")
        return "train_2.jpg", "cannot be decoded"
    if case == "missing label":
        os.remove(_sample_path(root, "train_2", "labels"))
        return "train_2.png", "is missing"
    if case == "undecodable label":
        open(_sample_path(root, "train_2", "labels"), "wb").write(b"\x89PNG garbage")
        return "train_2.png", "cannot be decoded"
    if case == "values out of range":
        lab = np.zeros((40, 56), np.uint8)
        lab[0, 0], lab[1, 1], lab[2, 2] = 11, 17, 255
        cv2.imwrite(_sample_path(root, "train_2", "labels"), lab)
        return "train_2.png", r"values \[11, 17\] outside \[0, 11\)"
    if case == "size mismatch":
        cv2.imwrite(_sample_path(root, "train_2", "labels"), np.zeros((30, 50), np.uint8))
        return "train_2", r"56x40 \(WxH\).*50x30"
    raise AssertionError(case)


CASES = ["missing image", "undecodable image", "missing label", "undecodable label", "values out of range",
         "size mismatch"]


@pytest.mark.parametrize("case", CASES)
def test_bad_sample_stops_with_an_error_naming_the_file(prepared, case):
    fname, what = _corrupt(prepared, case)
    ds = FaceParsingDataset(prepared, "train", SPEC, EvalTransform((32, 32)))
    ds[1]  # good samples still load
    with pytest.raises(BadSampleError, match=fname) as e:
        ds[2]
    assert e.match(what)


@pytest.mark.parametrize("case", ["undecodable image", "values out of range"])
def test_skip_bad_warns_and_counts(prepared, case, caplog):
    _corrupt(prepared, case)
    ds = FaceParsingDataset(prepared, "train", SPEC, EvalTransform((32, 32)), skip_bad=True)
    with caplog.at_level(logging.WARNING):
        s = ds[2]
    assert s["name"] == "train_3" and "train_2" in caplog.text
    assert ds.pop_skipped() == ["train_2"] and ds.pop_skipped() == []


def test_all_bad_raises(prepared):
    for k in range(6):
        os.remove(_sample_path(prepared, f"train_{k}", "labels"))
    ds = FaceParsingDataset(prepared, "train", SPEC, TrainTransform((32, 32), SPEC), skip_bad=True)
    with pytest.raises(BadSampleError, match="every sample"):
        ds[0]


def test_colour_label_is_rejected(prepared):
    import cv2
    cv2.imwrite(_sample_path(prepared, "train_0", "labels"), np.dstack([np.zeros((40, 56), np.uint8),
                                                                      np.ones((40, 56), np.uint8),
                                                                      np.zeros((40, 56), np.uint8)]))
    ds = FaceParsingDataset(prepared, "train", SPEC, EvalTransform((32, 32)))
    with pytest.raises(BadSampleError, match="train_0.png' has 3 colour channels"):
        ds[0]
