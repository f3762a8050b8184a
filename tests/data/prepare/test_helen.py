"""Helen: the original per-class masks and the relabelled variant, its splits, hold-out and errors."""
import os
import re

import cv2
import numpy as np
import pytest
from helpers.raw_layouts import img, load_all, write_helen, write_helen_relabelled

from dml_csr.data.prepare import helen
from dml_csr.data.prepare.check import check_root
from dml_csr.data.prepare.common import PrepareError


def test_helen(tmp_path):
    raw, out = str(tmp_path / "raw"), str(tmp_path / "out")
    write_helen(raw)
    info = helen.prepare(raw, out, workers=1, progress=False)
    assert info["counts"] == {"train": 2, "val": 1, "test": 1}
    lab = cv2.imread(os.path.join(out, "train", "labels", "101_2.png"), cv2.IMREAD_UNCHANGED)
    assert lab[0, 0] == 0 and lab[3, 3] == 1 and lab[9, 13] == 6 and lab[4, 21] == 1
    assert info["pixel_histogram"]["nose"] == 4 * 24 and info["pixel_histogram"]["left_brow"] == 0
    assert check_root(out, "helen") == []
    load_all(out, "helen")


@pytest.mark.parametrize("with_lists", [False, True])
def test_helen_relabelled_variant(tmp_path, with_lists):
    raw, out = str(tmp_path / "raw"), str(tmp_path / "out")
    write_helen_relabelled(raw, with_lists)
    info = helen.prepare(raw, out, workers=1, progress=False)
    if with_lists:
        assert info["counts"] == {"train": 1, "val": 1, "test": 1}
        assert os.path.isfile(os.path.join(out, "test", "labels", "101_2.png"))
        train_name = "100_1"
    else:  # the folders give train and test only: check_dataset says so, and --val-from-train holds some out
        assert info["counts"] == {"train": 2, "test": 1}
        assert check_root(out, "helen") == ["split 'val' is missing: no val_list.txt or valid_list.txt"]
        info = helen.prepare(raw, out := str(tmp_path / "out_val"), workers=1, progress=False, val_from_train=1)
        assert info["counts"] == {"train": 1, "test": 1, "val": 1} and info["val_held_out_from_train"] == 1
        train_name = open(os.path.join(out, "train_list.txt")).read().split()[0][len("images/"): -len(".jpg")]
        val_name = open(os.path.join(out, "val_list.txt")).read().split()[0][len("images/"): -len(".jpg")]
        assert {train_name, val_name} == {"100_1", "101_2"}
        with pytest.raises(PrepareError, match=r"expected 1 <= N < 2 \(the training images; 0 = no hold-out\)"):
            helen.prepare(raw, str(tmp_path / "bad"), workers=1, progress=False, val_from_train=2)
    lab = cv2.imread(os.path.join(out, "train", "labels", train_name + ".png"), cv2.IMREAD_UNCHANGED)
    assert lab[0, 0] == 0 and lab[3, 3] == 1 and lab[9, 13] == 6 and lab[5, 4] == 2
    assert info["pixel_histogram"]["left_brow"] == 3 * 12 and info["pixel_histogram"]["nose"] == 3 * 24
    assert check_root(out, "helen") == []
    load_all(out, "helen")


def test_helen_relabelled_errors_name_the_file(tmp_path):
    raw = str(tmp_path / "raw")
    write_helen_relabelled(raw)
    stray = os.path.join(raw, "extra")
    os.makedirs(stray)
    cv2.imwrite(os.path.join(stray, "400_1_image.jpg"), img(20, 30, 9))
    with pytest.raises(PrepareError, match=r"split of 1 .*" + re.escape(os.path.join("extra", "400_1_image.jpg"))):
        helen.prepare(raw, str(tmp_path / "out1"), workers=1, progress=False)
    os.rename(stray, os.path.join(raw, "val"))  # now placed, but its label is missing
    with pytest.raises(PrepareError, match=r"400_1_label.png"):
        helen.prepare(raw, str(tmp_path / "out2"), workers=1, progress=False)
    cv2.imwrite(os.path.join(raw, "val", "400_1_label.png"), np.full((10, 30), 11, np.uint8))
    with pytest.raises(PrepareError, match=r"30x20.*30x10"):
        helen.prepare(raw, str(tmp_path / "out3"), workers=1, progress=False)
    cv2.imwrite(os.path.join(raw, "val", "400_1_label.png"), np.full((20, 30), 11, np.uint8))
    with pytest.raises(PrepareError, match=r"400_1.*\[11\] outside \[0, 11\)"):
        helen.prepare(raw, str(tmp_path / "out4"), workers=1, progress=False)
    assert not os.path.exists(tmp_path / "out4" / "val" / "labels" / "400_1.png")  # no bad output left behind
    cv2.imwrite(os.path.join(raw, "val", "400_1_label.png"), np.full((20, 30), 10, np.uint8))  # fixed: the rerun
    assert helen.prepare(raw, str(tmp_path / "out4"), workers=1, progress=False)["counts"]["val"] == 1  # converts it
    cv2.imwrite(os.path.join(raw, "val", "400_1_label.png"), np.full((20, 30), 11, np.uint8))
    # a colour or 16-bit map is refused, not converted to grey values
    colour = np.zeros((20, 30, 3), np.uint8)
    colour[..., 2] = 1
    for bad, what in ((colour, "3-channel uint8"), (np.ones((20, 30), np.uint16), "single-channel uint16")):
        cv2.imwrite(os.path.join(raw, "val", "400_1_label.png"), bad)
        with pytest.raises(PrepareError, match=f"400_1_label.png' is a {what} image; expected 8-bit class indices"):
            helen.prepare(raw, str(tmp_path / "out5"), workers=1, progress=False)
    os.remove(os.path.join(raw, "val", "400_1_label.png"))
    os.remove(os.path.join(raw, "val", "400_1_image.jpg"))
    cv2.imwrite(os.path.join(raw, "val", "401_1_label.png"), np.zeros((20, 30), np.uint8))  # a label alone
    with pytest.raises(PrepareError, match=re.escape(os.path.join(raw, "val", "401_1_image.jpg")) + "' is missing"):
        helen.prepare(raw, str(tmp_path / "out7"), workers=1, progress=False)
    with open(os.path.join(raw, "exemplars.txt"), "w") as f:  # one list of three: neither lists nor folders
        f.write("1 , 100_1\n")
    with pytest.raises(PrepareError, match="has exemplars.txt but not testing.txt, tuning.txt"):
        helen.prepare(raw, str(tmp_path / "out6"), workers=1, progress=False)


def test_helen_relabelled_image_name_case_is_kept_and_out_must_not_be_raw(tmp_path):
    raw, out = str(tmp_path / "raw"), str(tmp_path / "out")
    write_helen_relabelled(raw)
    d = os.path.join(raw, "helenstar_release", "train")
    os.rename(os.path.join(d, "100_1_image.jpg"), os.path.join(d, "100_1_Image.JPG"))
    assert helen.prepare(raw, out, workers=1, progress=False)["counts"] == {"train": 2, "test": 1}
    with pytest.raises(PrepareError, match="is the raw folder itself"):
        helen.prepare(raw, raw, workers=1, progress=False)


def test_rerun_with_other_splits_removes_the_stale_list(tmp_path):
    raw, out = str(tmp_path / "raw"), str(tmp_path / "out")
    write_helen_relabelled(raw)
    helen.prepare(raw, out, workers=1, progress=False, val_from_train=1)
    assert os.path.isfile(os.path.join(out, "val_list.txt"))
    held_out = open(os.path.join(out, "val_list.txt")).read().split()[0][len("images/"): -len(".jpg")]
    assert not os.path.exists(os.path.join(out, "train", "images", held_out + ".jpg"))
    info = helen.prepare(raw, out, workers=1, progress=False)  # without the hold-out: val must not survive
    assert info["counts"] == {"train": 2, "test": 1} and not os.path.exists(os.path.join(out, "val_list.txt"))
    assert check_root(out, "helen") == ["split 'val' is missing: no val_list.txt or valid_list.txt"]
    assert os.listdir(os.path.join(out, "val", "images")) == []
    helen.prepare(raw, out, workers=1, progress=False, val_from_train=1)  # moved again: the train copy goes
    assert not os.path.exists(os.path.join(out, "train", "labels", held_out + ".png"))
    assert sorted(os.listdir(os.path.join(out, "val", "images"))) == [held_out + ".jpg"]
