"""Your own data end to end: photos and colour masks of five classes named your own way, in two folders, prepared by
scripts/prepare_custom.py, a tiny model trained on them for a few steps by scripts/train.py and scored by
scripts/evaluate.py; the class names reach metrics.json, the checkpoint's meta and FaceParser, whose colours are the
ones of colors.txt; a flip swaps the classes dataset.yaml pairs."""
import json
import os

import numpy as np
import pytest
import torch
from helpers import ROOT
from helpers.micro import MICRO
from helpers.raw_layouts import OWN_CLASSES, OWN_COLOURS, own_label, write_own
from helpers.scripts import run_script

from dml_csr import FaceParser
from dml_csr.config import load_config
from dml_csr.data.dataset import build_dataset
from dml_csr.data.transforms import EvalTransform

# the micro model, on the own root's classes; the flip on, and no other randomness in the crop
OWN = [s for s in MICRO if not s.startswith("data.dataset")] + ["data.dataset=custom", "data.flip=true",
                                                                    "data.batch_size=3"]
CONFIG = os.path.join(ROOT, "configs", "synthetic_dml_csr_tiny.yaml")  # the README's: the demo's recipe
DESCRIPTION = "pairs:\n  - [lid_left, lid_right]\ngroups:\n  lids: [lid_left, lid_right]\nmean_f1: [lid_left, " \
              "lid_right, snout]\n"


@pytest.fixture(scope="module")
def own_root(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("own")
    raw, root = str(tmp / "raw"), str(tmp / "root")
    write_own(raw)
    r = run_script("prepare_custom", "--images", os.path.join(raw, "photos"), "--masks", os.path.join(raw, "masks"),
                   "--out", root, "--classes", os.path.join(raw, "classes.txt"), "--colors",
                   os.path.join(raw, "colors.txt"), "--val", "0.2", "--test", "0.2", "--workers", "1",
                   "--no-progress")
    assert r.returncode == 0, r.stderr
    with open(os.path.join(root, "dataset.yaml"), "a") as f:  # the user's own additions to the colours
        f.write(DESCRIPTION)
    return tmp, root


def test_own_classes_from_photos_and_masks_to_a_trained_model(own_root):
    tmp, root = own_root
    sets = [*OWN, f"data.root={root}", f"output_dir={tmp / 'runs'}", "name=own", "train.epochs=2", "train.cycles=0",
            "train.warmup_epochs=0"]
    r = run_script("train", "--no-progress", "--config", CONFIG, "--set", *sets)
    assert r.returncode == 0, r.stderr
    best = str(tmp / "runs" / "own" / "best.pt")
    meta = torch.load(best, weights_only=True)["meta"]
    assert meta["classes"] == list(OWN_CLASSES) and meta["dataset"] == "custom"
    assert meta["palette"] == [list(c) for c in OWN_COLOURS] and meta["flip_pairs"] == [[1, 2]]
    out = tmp / "eval"
    r = run_script("evaluate", "--config", str(tmp / "runs" / "own" / "config.yaml"), "--checkpoint", best,
                   "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    rec = json.load(open(out / "metrics.json"))
    assert rec["protocol"]["classes"] == list(OWN_CLASSES) and list(rec["scores"]["per_class"]) == list(OWN_CLASSES)
    assert rec["protocol"]["mean_f1_classes"] == ["lid_left", "lid_right", "snout"]
    f1 = [rec["scores"]["per_class"][c]["f1"] for c in ("lid_left", "lid_right", "snout")]
    assert rec["scores"]["mean_f1"] == pytest.approx(np.nanmean(f1))  # fur and the background stay out
    assert rec["protocol"]["groups"] == {"lids": ["lid_left", "lid_right"]} and "lids" in rec["scores"]["groups"]
    assert all(c in r.stdout for c in OWN_CLASSES) and "mean F1 over: lid_left, lid_right, snout" in r.stdout
    # the checkpoint alone predicts and draws: no root needed, the colours of colors.txt
    os.rename(root, root + "_moved")
    try:
        parser = FaceParser.from_checkpoint(best, flip=True)
        assert parser.classes == list(OWN_CLASSES)
        assert parser.colorize(np.arange(5, dtype=np.uint8)[None]).tolist() == [[list(c) for c in OWN_COLOURS]]
        photo = os.path.join(tmp, "raw", "photos", "im0.jpg")
        labels = parser(photo)
        assert labels.shape == own_label().shape and labels.max() < 5
    finally:
        os.rename(root + "_moved", root)


def test_a_flip_swaps_the_pairs_of_dataset_yaml(own_root):
    tmp, root = own_root
    cfg = load_config(None, [*OWN, f"data.root={root}", "data.scale_range=[1.0, 1.0]", "data.rotation=0"])
    ds = build_dataset(cfg, "train", train=True)
    flipped = next(s for s in (ds[(0, seed)] for seed in range(50)) if s["meta"]["flip"])
    image, label = ds.load_pair(0)
    # the flipped sample is the mirrored photo through the same crop, with lid_left (1) and lid_right (2) swapped
    mirrored = EvalTransform((64, 64))(np.ascontiguousarray(image[:, ::-1]), np.ascontiguousarray(label[:, ::-1]))
    swap = np.array([0, 2, 1, 3, 4] + list(range(5, 256)), np.uint8)
    assert np.array_equal(flipped["label"].numpy(), swap[mirrored["label"].numpy()])
    assert (flipped["label"] == 1).any() and (flipped["label"] == 2).any()
