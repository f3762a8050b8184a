"""The dataset over the prepared layout: splits, class counts, bad samples named by file, skipping."""
import logging
import os

import cv2
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
    if case == "empty image":
        open(_sample_path(root, "train_2", "images"), "wb").close()
        return "train_2.jpg", r"is empty \(0 bytes\)"
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
         "size mismatch", "empty image"]


@pytest.mark.parametrize("case", CASES)
def test_bad_sample_stops_with_an_error_naming_the_file(prepared, case):
    fname, what = _corrupt(prepared, case)
    ds = FaceParsingDataset(prepared, "train", SPEC, EvalTransform((32, 32)))
    ds[1]  # good samples still load
    with pytest.raises(BadSampleError, match=fname) as e:
        ds[2]
    assert e.match(what)


@pytest.mark.parametrize("case", ["undecodable image", "values out of range", "empty image"])
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


@pytest.mark.parametrize("flip", [False, True])
def test_keypoints_follow_the_warp_and_the_flip(tmp_path, flip):
    """Each landmark lands on its own component after the sample's affine; a flip swaps the subject's sides, as the
    labels (the subject's left eye keypoint stays on the left_eye class)."""
    from dml_csr.data.synthetic import write_dataset

    root = str(tmp_path / "syn")
    write_dataset(root, {"train": 3}, seed=4, size=(120, 100), second_face_prob=0.0)
    spec = get_spec("synthetic")
    t = TrainTransform((96, 96), spec, flip=True, scale_range=(0.8, 0.8), rotation=20.0)
    t.sample_params = lambda rng: (0.8, 15.0, flip)
    ds = FaceParsingDataset(root, "train", spec, t, keypoints=True)
    for i in range(len(ds)):
        s = ds[i]
        kp, lab = s["keypoints"], s["label"].long()
        assert kp.shape == (5, 2) and kp.dtype == torch.float32
        mouth = ("upper_lip", "lower_lip", "inner_mouth")
        for point, classes in zip(kp, (("left_eye",), ("right_eye",), ("nose",), mouth, mouth)):
            x, y = (int(round(v)) for v in point.tolist())
            near = lab[max(y - 2, 0):y + 3, max(x - 2, 0):x + 3]
            assert any((near == spec.index(c)).any() for c in classes), (i, classes, point.tolist())


def test_a_missing_or_malformed_landmark_file_is_named(tmp_path):
    from dml_csr.data.dataset import read_five_points
    from dml_csr.data.synthetic import write_dataset

    root = str(tmp_path / "syn")
    write_dataset(root, {"train": 2}, size=(48, 48))
    path = os.path.join(root, "train", "landmarks", "train_00000.txt")
    assert read_five_points(path).shape == (5, 2)
    open(path, "w").write("3\n1 2\n3 4\n5 6\n")
    with pytest.raises(BadSampleError, match="train_00000.txt' has 3 points"):
        read_five_points(path)
    os.remove(path)
    ds = FaceParsingDataset(root, "train", get_spec("synthetic"), EvalTransform((32, 32)), keypoints=True)
    with pytest.raises(BadSampleError, match="train_00000.txt' is missing"):
        ds[0]


def test_inverse_frequency_weights_from_the_train_split_histogram(tmp_path):
    from dml_csr.data.dataset import inverse_frequency_weights, split_histogram
    from dml_csr.data.synthetic import write_dataset

    root = str(tmp_path / "syn")
    info = write_dataset(root, {"train": 3, "val": 2}, size=(48, 48))
    spec = get_spec("synthetic")
    hist = split_histogram(root, "train", spec)
    by_split = info["pixel_histogram_by_split"]
    assert hist.tolist() == [by_split["train"][c] for c in spec.classes] and hist.sum() == 3 * 48 * 48
    assert (hist + split_histogram(root, "val", spec)).tolist() == [info["pixel_histogram"][c] for c in spec.classes]
    w = inverse_frequency_weights([10.0, 0.0, 30.0, 60.0])
    # 1/n over the present classes (1/10, 1/30, 1/60), scaled to mean 1 over them; an absent class gets 0
    inv = [1 / 10, 1 / 30, 1 / 60]
    assert w == pytest.approx([inv[0] / np.mean(inv), 0.0, inv[1] / np.mean(inv), inv[2] / np.mean(inv)])
    os.remove(os.path.join(root, "info.json"))
    with pytest.raises(FileNotFoundError, match="info.json' does not exist"):
        split_histogram(root, "train", spec)


def test_a_name_listed_twice_is_refused_naming_both_lines(prepared):
    """Scores and saved predictions are keyed by the sample name: a second 'train_0' (here under another folder)
    would be scored against the first one's label."""
    with open(os.path.join(prepared, "train_list.txt"), "a") as f:
        f.write("other/train_0.jpg labels/train_1.png\n")
    with pytest.raises(ValueError, match=r"train_list.txt:7: sample name 'train_0' is listed twice \(first on line 1\)"):
        FaceParsingDataset(prepared, "train", SPEC, EvalTransform((32, 32)))


@pytest.mark.parametrize("kind", ["images", "labels"])
def test_a_truncated_file_is_a_bad_sample(prepared, kind):
    path = _sample_path(prepared, "train_1", kind)
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) * 2 // 3])  # what an interrupted copy leaves
    if kind == "images":  # OpenCV decodes a cut JPEG without an error (libjpeg only warns on stderr)
        assert cv2.imread(path, cv2.IMREAD_UNCHANGED) is not None
    ds = FaceParsingDataset(prepared, "train", SPEC, EvalTransform((32, 32)))
    with pytest.raises(BadSampleError, match=r"train_1\.(jpg|png)' is truncated"):
        ds[1]
