import os
import subprocess
import sys

import cv2
import numpy as np
from helpers import ROOT

from dml_csr.data.prepare.check import check_root

REPO = ROOT


def test_clean_root_passes(prepared):
    assert check_root(prepared, "helen") == []
    assert check_root(prepared) == []  # class count from label_names.txt


def test_every_problem_is_reported_at_once(prepared):
    os.remove(os.path.join(prepared, "train", "images", "train_0.jpg"))
    open(os.path.join(prepared, "train", "labels", "train_1.png"), "wb").write(b"junk")
    cv2.imwrite(os.path.join(prepared, "train", "labels", "train_2.png"), np.full((40, 56), 13, np.uint8))
    cv2.imwrite(os.path.join(prepared, "train", "labels", "train_3.png"), np.zeros((10, 10), np.uint8))
    open(os.path.join(prepared, "test_list.txt"), "w").close()
    problems = check_root(prepared, "helen", workers=2)
    text = "\n".join(problems)
    assert len(problems) == 5, text
    assert "train_0.jpg' is missing" in text and "train_1.png' cannot be decoded" in text
    assert "values [13] outside [0, 11)" in text and "56x40, label" in text and "10x10" in text
    assert "split 'test' is empty" in text
    r = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "check_dataset.py"), prepared, "--dataset",
                        "helen", "--no-progress", "--workers", "1"], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": REPO}, timeout=120)
    assert r.returncode == 1 and r.stdout.count("PROBLEM") == 5 and "5 problem(s)" in r.stdout


def test_missing_split_and_class_count_mismatch(prepared):
    os.remove(os.path.join(prepared, "valid_list.txt"))
    problems = check_root(prepared, "celebamask_hq")
    assert any("split 'val' is missing: no val_list.txt or valid_list.txt" in p for p in problems)
    assert any("lists 11 classes; dataset 'celebamask_hq' has 19" in p for p in problems)
    assert check_root(os.path.join(prepared, "nope")) == [f"dataset root '{prepared}/nope' does not exist"]


def test_duplicate_names_and_truncated_files_are_reported(prepared):
    with open(os.path.join(prepared, "train_list.txt"), "a") as f:
        f.write("images/train_0.png labels/train_5.png\n")  # another file, the same sample name
    cv2.imwrite(os.path.join(prepared, "train", "images", "train_0.png"), np.zeros((40, 56, 3), np.uint8))
    path = os.path.join(prepared, "train", "images", "train_3.jpg")
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    text = "\n".join(check_root(prepared, "helen"))
    assert "train_list.txt:7: sample name 'train_0' (images/train_0.png) is listed twice" in text
    assert "train_3.jpg' is truncated (no JPEG end-of-image marker)" in text


def test_an_evaluation_only_root_passes_when_only_its_splits_are_asked_for(prepared):
    for split in ("train", "valid"):
        os.remove(os.path.join(prepared, f"{split}_list.txt"))
    assert check_root(prepared, "helen") == ["split 'train' is missing: no train_list.txt",
                                             "split 'val' is missing: no val_list.txt or valid_list.txt"]
    assert check_root(prepared, "helen", splits=["test"]) == []


def test_named_splits_are_the_only_ones_read(prepared):
    cv2.imwrite(os.path.join(prepared, "train", "labels", "train_2.png"), np.full((40, 56), 13, np.uint8))
    cv2.imwrite(os.path.join(prepared, "test", "labels", "test_1.png"), np.full((40, 56), 12, np.uint8))
    assert check_root(prepared, "helen", splits=["val", "test"]) == [
        f"label '{prepared}/test/labels/test_1.png' has values [12] outside [0, 11) and 255"]  # val = valid_list.txt
    assert len(check_root(prepared, "helen")) == 2
    assert check_root(prepared, "helen", splits=["hard"]) == ["split 'hard' is missing: no hard_list.txt"]
