"""Each prepare script on tiny fixtures written in the dataset's real download layout, then check and load."""
import json
import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest

from dml_csr.data.dataset import FaceParsingDataset
from dml_csr.data.labels import get_spec
from dml_csr.data.prepare import celebamask_hq, helen, lapa, lfw_pl
from dml_csr.data.prepare.check import check_root
from dml_csr.data.prepare.common import PrepareError
from dml_csr.data.transforms import TrainTransform

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def img(h, w, seed):
    rng = np.random.default_rng(seed)
    return cv2.resize(rng.integers(0, 255, (4, 4, 3), dtype=np.uint8), (w, h), interpolation=cv2.INTER_LINEAR)


def run_cli(script, *args):
    env = {**os.environ, "PYTHONPATH": REPO}
    return subprocess.run([sys.executable, os.path.join(REPO, "scripts", script), *args], capture_output=True,
                          text=True, env=env, timeout=120)


def load_all(root, dataset):
    spec = get_spec(dataset)
    for split in ("train", "val", "test"):
        ds = FaceParsingDataset(root, split, spec, TrainTransform((24, 24), spec))
        for i in range(len(ds)):
            s = ds[i]
            assert s["image"].shape == (3, 24, 24)


# ----------------------------------------------------------------------------------------------- CelebAMask-HQ
def write_celebamask(raw, orig=(100, 170_000, 190_000, 5)):
    os.makedirs(os.path.join(raw, "CelebA-HQ-img"))
    with open(os.path.join(raw, "CelebA-HQ-to-CelebA-mapping.txt"), "w") as f:
        f.write("idx orig_idx orig_file\n")
        for idx, o in enumerate(orig):
            f.write(f"{idx} {o} {o + 1:06d}.jpg\n")
    for idx in range(len(orig)):
        cv2.imwrite(os.path.join(raw, "CelebA-HQ-img", f"{idx}.jpg"), img(128, 128, idx))
        d = os.path.join(raw, "CelebAMask-HQ-mask-anno", str(idx // 2000))
        os.makedirs(d, exist_ok=True)
        masks = {"skin": (100, 400, 100, 400), "l_eye": (200, 230, 300, 350), "hair": (0, 150, 0, 512)}
        if idx == 1:
            masks.pop("l_eye")  # an absent part has no file
        for part, (y0, y1, x0, x1) in masks.items():
            m = np.zeros((512, 512), np.uint8)
            m[y0:y1, x0:x1] = 255
            cv2.imwrite(os.path.join(d, f"{idx:05d}_{part}.png"), m)


def test_celebamask_hq(tmp_path):
    raw, out = str(tmp_path / "raw"), str(tmp_path / "out")
    write_celebamask(raw)
    info = celebamask_hq.prepare(raw, out, workers=1, progress=False)
    assert info["counts"] == {"train": 2, "val": 1, "test": 1}
    spec = get_spec("celebamask_hq")
    lab = cv2.imread(os.path.join(out, "train", "labels", "0.png"), cv2.IMREAD_UNCHANGED)
    assert lab.shape == (512, 512) and lab[0, 0] == spec.index("hair")
    assert lab[120, 200] == spec.index("hair")  # hair painted after skin wins
    assert lab[210, 320] == spec.index("l_eye") and lab[300, 300] == spec.index("skin") and lab[450, 450] == 0
    assert cv2.imread(os.path.join(out, "train", "images", "0.jpg")).shape == (512, 512, 3)
    assert open(os.path.join(out, "train_list.txt")).read() == "images/0.jpg labels/0.png\nimages/3.jpg labels/3.png\n"
    assert info["pixel_histogram"]["l_eye"] == 3 * 30 * 50  # every face but idx 1 has the eye
    assert check_root(out, "celebamask_hq") == []
    load_all(out, "celebamask_hq")
    # the partition file decides when given
    with open(os.path.join(raw, "list_eval_partition.txt"), "w") as f:
        f.write("000101.jpg 2\n170001.jpg 0\n190001.jpg 1\n000006.jpg 0\n")
    info2 = celebamask_hq.prepare(raw, str(tmp_path / "out2"), workers=1, progress=False)
    assert info2["counts"] == {"train": 2, "val": 1, "test": 1}
    assert open(os.path.join(tmp_path, "out2", "test_list.txt")).read().startswith("images/0.jpg")


def test_celebamask_bad_mask_size_is_named(tmp_path):
    raw = str(tmp_path / "raw")
    write_celebamask(raw, orig=(1,))
    cv2.imwrite(os.path.join(raw, "CelebAMask-HQ-mask-anno", "0", "00000_nose.png"), np.zeros((100, 100), np.uint8))
    with pytest.raises(PrepareError, match=r"00000_nose.png' is 100x100; expected 512x512"):
        celebamask_hq.prepare(raw, str(tmp_path / "out"), workers=1, progress=False)


# ------------------------------------------------------------------------------------------------------- LaPa
def write_lapa(raw, per_split=2):
    for s, split in enumerate(("train", "val", "test")):
        for k in ("images", "labels", "landmarks"):
            os.makedirs(os.path.join(raw, split, k))
        for i in range(per_split):
            name = f"{split}{i}"
            lab = np.zeros((30, 40), np.uint8)
            lab[5:25, 5:35] = 1
            lab[10:14, 8:14] = 4
            lab[10:14, 26:32] = 5
            lab[0:4, :] = 10
            cv2.imwrite(os.path.join(raw, split, "images", name + ".jpg"), img(30, 40, s * 10 + i))
            cv2.imwrite(os.path.join(raw, split, "labels", name + ".png"), lab)
            with open(os.path.join(raw, split, "landmarks", name + ".txt"), "w") as f:
                f.write("106\n" + "".join(f"{k * 0.3:.2f} {k * 0.2:.2f}\n" for k in range(106)))


def test_lapa_prepare_resume_idempotent_and_cli(tmp_path):
    raw, out = str(tmp_path / "raw"), str(tmp_path / "out")
    write_lapa(raw)
    info = lapa.prepare(raw, out, workers=1, progress=False)
    assert info["counts"] == {"train": 2, "val": 2, "test": 2}
    assert info["pixel_histogram"]["left_eye"] == 6 * 24
    assert os.path.isfile(os.path.join(out, "val", "landmarks", "val1.txt"))
    snapshot = {p: open(os.path.join(out, p), "rb").read() for p in ("info.json", "train_list.txt", "label_names.txt")}
    # resume: remove one sample's outputs and rerun through the CLI with two worker processes
    os.remove(os.path.join(out, "test", "labels", "test1.png"))
    mtime = os.path.getmtime(os.path.join(out, "train", "images", "train0.jpg"))
    r = run_cli("prepare_lapa.py", raw, out, "--workers", "2", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert os.path.isfile(os.path.join(out, "test", "labels", "test1.png"))
    assert os.path.getmtime(os.path.join(out, "train", "images", "train0.jpg")) == mtime  # done samples untouched
    assert {p: open(os.path.join(out, p), "rb").read() for p in snapshot} == snapshot  # idempotent
    assert check_root(out, "lapa") == []
    load_all(out, "lapa")


def test_lapa_reports_every_bad_sample(tmp_path):
    raw = str(tmp_path / "raw")
    write_lapa(raw)
    os.remove(os.path.join(raw, "train", "landmarks", "train0.txt"))
    cv2.imwrite(os.path.join(raw, "val", "labels", "val1.png"), np.full((30, 40), 12, np.uint8))
    with pytest.raises(PrepareError, match="2 of 6 samples failed"):
        lapa.prepare(raw, str(tmp_path / "out"), workers=1, progress=False)
    r = run_cli("prepare_lapa.py", raw, str(tmp_path / "out"), "--workers", "1", "--no-progress")
    assert r.returncode == 1
    assert "train0.txt' is missing" in r.stderr and "label values [12]" in r.stderr


# ------------------------------------------------------------------------------------------------------ Helen
def write_helen(raw):
    os.makedirs(os.path.join(raw, "images"))
    lists = {"exemplars.txt": ["100_1", "101_2"], "tuning.txt": ["200_1"], "testing.txt": ["300_1"]}
    k = 0
    for fn, names in lists.items():
        with open(os.path.join(raw, fn), "w") as f:
            for name in names:
                k += 1
                f.write(f"{k} , {name}\n")
                cv2.imwrite(os.path.join(raw, "images", name + ".jpg"), img(20, 30, k))
                d = os.path.join(raw, "labels", name)
                os.makedirs(d)
                for c in range(11):
                    m = np.zeros((20, 30), np.uint8)
                    if c == 0:
                        m[:] = 128
                    elif c == 1:
                        m[2:18, 2:28] = 200  # skin beats background
                    elif c == 6:
                        m[8:12, 12:18] = 250  # nose beats skin
                    elif c == 2:
                        m[4:6, 20:26] = 90  # weaker than skin's 200: stays skin
                    cv2.imwrite(os.path.join(d, f"{name}_lbl{c:02d}.png"), m)


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


def write_helen_relabelled(raw, with_lists=False):
    """The relabelled variant: NAME_image.jpg + NAME_label.png (+ a visualisation to ignore) in split folders."""
    layout = {"train": ["100_1", "101_2"], "test": ["300_1"]}
    for k, (folder, names) in enumerate(sorted(layout.items())):
        d = os.path.join(raw, "helenstar_release", folder)
        os.makedirs(d)
        for j, name in enumerate(names):
            cv2.imwrite(os.path.join(d, f"{name}_image.jpg"), img(20, 30, 10 * k + j))
            lab = np.zeros((20, 30), np.uint8)
            lab[2:18, 2:28] = 1
            lab[8:12, 12:18] = 6
            lab[5:7, 4:10] = 2  # the subject's left brow
            cv2.imwrite(os.path.join(d, f"{name}_label.png"), lab)
            cv2.imwrite(os.path.join(d, f"{name}_viz.png"), np.dstack([lab * 20] * 3))
    if with_lists:  # the original lists in the root decide the split instead of the folders
        for fn, names in {"exemplars.txt": ["100_1"], "tuning.txt": ["300_1"], "testing.txt": ["101_2"]}.items():
            with open(os.path.join(raw, fn), "w") as f:
                f.writelines(f"{i} , {n}\n" for i, n in enumerate(names, 1))


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


# ----------------------------------------------------------------------------------------------------- LFW-PL
def write_lfw(raw):
    lists = {"parts_train.txt": [("Aaron_Eckhart", "1"), ("Zoe_Ball", "0002")],
             "parts_validation.txt": [("Ann_Lee", "12")], "parts_test.txt": [("Bo_Li", "0003")]}
    os.makedirs(os.path.join(raw, "parts_lfw_funneled_gt_images"))
    for fn, rows in lists.items():
        with open(os.path.join(raw, fn), "w") as f:
            for person, n in rows:
                f.write(f"{person} {n}\n")
                name = f"{person}_{int(n):04d}"
                os.makedirs(os.path.join(raw, "lfw_funneled", person), exist_ok=True)
                cv2.imwrite(os.path.join(raw, "lfw_funneled", person, name + ".jpg"), img(25, 25, len(name)))
                col = np.zeros((25, 25, 3), np.uint8)
                col[:] = (255, 0, 0)  # BGR blue: background
                col[5:20, 5:20] = (0, 255, 0)  # green: skin
                col[0:5, 5:20] = (0, 0, 255)  # red: hair
                cv2.imwrite(os.path.join(raw, "parts_lfw_funneled_gt_images", name + ".ppm"), col)


def test_lfw_pl_pads_numbers_and_maps_colours(tmp_path):
    raw, out = str(tmp_path / "raw"), str(tmp_path / "out")
    write_lfw(raw)
    info = lfw_pl.prepare(raw, out, workers=1, progress=False)
    assert info["counts"] == {"train": 2, "val": 1, "test": 1}
    assert "images/Aaron_Eckhart_0001.jpg" in open(os.path.join(out, "train_list.txt")).read()
    assert os.path.isfile(os.path.join(out, "val", "labels", "Ann_Lee_0012.png"))
    assert info["pixel_histogram"] == {"background": 4 * (625 - 225 - 75), "skin": 4 * 225, "hair": 4 * 75}
    assert check_root(out, "lfw_pl") == []
    load_all(out, "lfw_pl")
    with pytest.raises(PrepareError, match="no dominant colour"):
        lfw_pl.colours_to_labels(np.full((2, 2, 3), 255, np.uint8), "x.ppm")


@pytest.mark.parametrize("script", ["prepare_celebamask_hq.py", "prepare_helen.py", "prepare_lfw_pl.py",
                                    "prepare_helen.py relabelled"])
def test_cli_runs(tmp_path, script):
    raw, out = str(tmp_path / "raw"), str(tmp_path / "out")
    writers = {"prepare_celebamask_hq.py": lambda r: write_celebamask(r, (1, 170_001, 190_000)),
               "prepare_helen.py": write_helen, "prepare_lfw_pl.py": write_lfw,
               "prepare_helen.py relabelled": lambda r: write_helen_relabelled(r, True)}
    writers[script](raw)
    script = script.split()[0]
    r = run_cli(script, raw, out, "--workers", "2")
    assert r.returncode == 0, r.stderr
    counts = json.load(open(os.path.join(out, "info.json")))["counts"]
    assert sum(counts.values()) >= 3 and set(counts) == {"train", "val", "test"}
