"""prepare_custom.py: your own photos and colour (or index) masks, your own class names -> a prepared root that
declares its classes; the split's draw, resume, every bad input in one line naming the file; check_dataset on it."""
import json
import os

import cv2
import numpy as np
import pytest
from helpers.raw_layouts import OWN_CLASSES, OWN_COLOURS, own_label, run_cli, write_own
from helpers.scripts import run_script

from dml_csr.data.custom import read_custom_spec
from dml_csr.data.prepare import custom
from dml_csr.data.prepare.check import check_root
from dml_csr.data.prepare.common import PrepareError


def _prepare(raw, out, *extra):
    return run_script("prepare_custom", "--images", os.path.join(raw, "photos"), "--masks", os.path.join(raw, "masks"),
                      "--out", out, "--classes", os.path.join(raw, "classes.txt"), "--no-progress", "--workers", "1",
                      *extra)


def _lists(out):
    return {s: sorted(line.split()[0][len("images/"):-4] for line in open(os.path.join(out, f"{s}_list.txt")))
            for s in ("train", "val", "test")}


def test_colour_masks_become_the_classes_of_their_colours(tmp_path):
    raw, out = str(tmp_path / "raw"), str(tmp_path / "root")
    write_own(raw)
    r = _prepare(raw, out, "--colors", os.path.join(raw, "colors.txt"), "--val", "0.2", "--test", "0.2")
    assert r.returncode == 0, r.stderr
    lists = _lists(out)
    assert [len(lists[s]) for s in ("train", "val", "test")] == [6, 2, 2]
    assert sorted(sum(lists.values(), [])) == sorted(f"im{i}" for i in range(10))
    # each pixel's class is the index of its mask colour in colors.txt (counted here pixel by pixel)
    mask = cv2.imread(os.path.join(raw, "masks", "im3.png"))[..., ::-1]
    expected = np.full(mask.shape[:2], 99, np.uint8)
    for k, rgb in enumerate(OWN_COLOURS):
        expected[(mask == rgb).all(2)] = k
    split = next(s for s, names in lists.items() if "im3" in names)
    got = cv2.imread(os.path.join(out, split, "labels", "im3.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(got, expected) and np.array_equal(got, own_label())
    assert open(os.path.join(out, "label_names.txt")).read().split() == list(OWN_CLASSES)
    info = json.load(open(os.path.join(out, "info.json")))
    assert info["counts"] == {"train": 6, "val": 2, "test": 2} and info["class_names"] == list(OWN_CLASSES)
    per_image = np.bincount(own_label().ravel(), minlength=5)
    assert [info["pixel_histogram"][c] for c in OWN_CLASSES] == (10 * per_image).tolist()
    spec = read_custom_spec(out)  # the colours travel in dataset.yaml
    assert spec.classes == OWN_CLASSES and spec.palette.tolist() == [list(c) for c in OWN_COLOURS]
    assert check_root(out, "custom") == [] and check_root(out) == []


def test_the_split_is_a_draw_of_the_seed_and_a_rerun_resumes(tmp_path):
    raw = str(tmp_path / "raw")
    write_own(raw)
    colours = ("--colors", os.path.join(raw, "colors.txt"), "--val", "0.2", "--test", "0.2")
    a, b, c = (str(tmp_path / n) for n in "abc")
    assert _prepare(raw, a, *colours).returncode == 0
    assert _prepare(raw, b, *colours).returncode == 0
    assert _prepare(raw, c, *colours, "--seed", "7").returncode == 0
    assert _lists(a) == _lists(b) and _lists(a) != _lists(c)
    # the draw written out: a permutation of the sorted stems, test first, then val
    order = np.random.default_rng(0).permutation(10)
    stems = [f"im{i}" for i in range(10)]
    assert _lists(a)["test"] == sorted(stems[k] for k in order[:2])
    assert _lists(a)["val"] == sorted(stems[k] for k in order[2:4])
    done = os.path.join(a, "train", "images", f"{_lists(a)['train'][0]}.jpg")
    mtime = os.path.getmtime(done)
    os.remove(os.path.join(a, "val", "labels", f"{_lists(a)['val'][0]}.png"))
    info = open(os.path.join(a, "info.json")).read()
    r = run_cli("prepare_custom.py", "--images", os.path.join(raw, "photos"), "--masks", os.path.join(raw, "masks"),
                "--out", a, "--classes", os.path.join(raw, "classes.txt"), *colours, "--workers", "2",
                "--no-progress")
    assert r.returncode == 0, r.stderr
    assert os.path.getmtime(done) == mtime and open(os.path.join(a, "info.json")).read() == info


def test_index_masks_and_split_lists(tmp_path):
    raw, out = str(tmp_path / "raw"), str(tmp_path / "root")
    write_own(raw, n=4)
    for i in range(4):  # the same maps as class indices, one a pixel
        cv2.imwrite(os.path.join(raw, "masks", f"im{i}.png"), own_label())
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train.txt").write_text("im0\nim2\n")
    (lists / "test.txt").write_text("im1\n")
    r = _prepare(raw, out, "--splits", str(lists))
    assert r.returncode == 0, r.stderr
    assert _lists_present(out) == {"train": ["im0", "im2"], "test": ["im1"]}  # im3 is in no list: left out
    assert np.array_equal(cv2.imread(os.path.join(out, "test", "labels", "im1.png"), cv2.IMREAD_UNCHANGED),
                          own_label())
    assert not os.path.exists(os.path.join(out, "dataset.yaml"))  # no colours given: none to record
    assert check_root(out, splits=["train", "test"]) == []  # info.json: the root declares its classes


def _lists_present(out):
    return {s: [line.split()[0][len("images/"):-4] for line in open(os.path.join(out, f"{s}_list.txt"))]
            for s in ("train", "val", "test") if os.path.isfile(os.path.join(out, f"{s}_list.txt"))}


def _one_line_error(r, caplog, *expected):
    """Exit status 1, and the last error logged is one line with everything expected in it."""
    errors = [rec.getMessage() for rec in caplog.records if rec.levelname == "ERROR"]
    assert r.returncode == 1 and errors, r.stderr
    assert "\n" not in errors[-1] and all(e in errors[-1] for e in expected), errors[-1]
    caplog.clear()


def test_bad_input_is_one_line_naming_the_file(tmp_path, caplog):
    raw = str(tmp_path / "raw")
    write_own(raw, n=4)
    colours = os.path.join(raw, "colors.txt")
    bad = cv2.imread(os.path.join(raw, "masks", "im2.png"))
    bad[5, 7] = (9, 9, 9)  # BGR: a colour colors.txt does not list
    cv2.imwrite(os.path.join(raw, "masks", "im2.png"), bad)
    r = _prepare(raw, str(tmp_path / "o1"), "--colors", colours, "--val", "0.25", "--test", "0.25")
    _one_line_error(r, caplog, "im2.png' has the colour (9, 9, 9)", "x=7, y=5", colours)
    os.remove(os.path.join(raw, "masks", "im2.png"))
    r = _prepare(raw, str(tmp_path / "o2"), "--colors", colours)
    _one_line_error(r, caplog, "1 photo(s) without a file of the same stem", os.path.join(raw, "photos", "im2.jpg"))
    os.remove(os.path.join(raw, "photos", "im2.jpg"))
    cv2.imwrite(os.path.join(raw, "masks", "im1.png"), np.full((48, 64), 7, np.uint8))  # an index map, value 7
    for i in (0, 3):
        cv2.imwrite(os.path.join(raw, "masks", f"im{i}.png"), own_label())
    r = _prepare(raw, str(tmp_path / "o3"), "--val", "0", "--test", "0")
    _one_line_error(r, caplog, "im1.png' has values [7] outside [0, 5)")
    with open(colours, "a") as f:
        f.write("1 2 3\n")
    with pytest.raises(PrepareError, match="has 6 colours for 5 classes"):
        custom.read_colors(colours, OWN_CLASSES)


def test_check_dataset_reads_a_custom_root(tmp_path):
    raw, out = str(tmp_path / "raw"), str(tmp_path / "root")
    write_own(raw, n=5)
    assert _prepare(raw, out, "--colors", os.path.join(raw, "colors.txt"), "--val", "0.2", "--test", "0.2"
                    ).returncode == 0
    with open(os.path.join(out, "dataset.yaml"), "a") as f:
        f.write("pairs:\n  - [lid_left, lid_rite]\ngroups:\n  lids: [lid_left, lid_right]\n")
    cv2.imwrite(os.path.join(out, "train", "labels", f"{_lists(out)['train'][0]}.png"), np.full((48, 64), 5, np.uint8))
    r = run_script("check_dataset", out, "--dataset", "custom", "--no-progress", "--workers", "1")
    assert r.returncode == 1 and r.stdout.count("PROBLEM") == 2, r.stdout
    assert "pairs[0]: 'lid_rite' is not a class of the root" in r.stdout
    assert "values [5] outside [0, 5)" in r.stdout
