"""scripts/evaluate.py end to end on a tiny checkpoint and synthetic faces: protocol record, scores consistent with
the pooled confusion, re-scoring the saved predictions without a model, and the error paths."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from helpers import ROOT
from helpers.scripts import load_script, run_script
from helpers.tiny_checkpoint import write_config, write_tiny_checkpoint

from dml_csr.data.dataset import read_label, read_split_list
from dml_csr.data.synthetic import write_dataset
from dml_csr.metrics import scores_from_confusion

CONFIG = os.path.join(ROOT, "configs", "synthetic_rnn_g.yaml")


def run(*args):
    return run_script("evaluate", "--no-progress", *args)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eval")
    root = str(tmp / "data")
    write_dataset(root, {"test": 3}, size=(56, 72))  # not the network's 64x64: the inverse mapping matters
    cfg = write_config(str(tmp / "tiny.yaml"), root)
    ckpt = write_tiny_checkpoint(str(tmp / "run" / "best.pt"))
    return tmp, root, cfg, ckpt


def test_checkpoint_scores_protocol_and_rescoring(setup):
    tmp, root, cfg, ckpt = setup
    out = str(tmp / "out")
    r = run("--config", cfg, "--checkpoint", ckpt, "--split", "test", "--flip", "--scales", "0.75,1",
            "--out", out, "--save-predictions")
    assert r.returncode == 0, r.stderr
    assert "background included" in r.stdout and "skin" in r.stdout
    rec = json.load(open(os.path.join(out, "metrics.json")))
    proto = rec["protocol"]
    assert proto["flip"] is True and proto["scales"] == [0.75, 1.0] and proto["split"] == "test"
    assert proto["resolution"]["network_input"] == [64, 64] and "original" in proto["resolution"]["scored_at"]
    import hashlib
    assert proto["checkpoint_sha256"] == hashlib.sha256(open(ckpt, "rb").read()).hexdigest()
    assert proto["miou_includes_background"] is True and proto["classes"][0] == "background"
    assert proto["dataset_root"] == os.path.abspath(root) and proto["num_samples"] == 3
    # the confusion matrix counts every scored pixel of the original label maps
    mat = np.array(rec["confusion"])
    labels = [read_label(lp) for _, _, lp in read_split_list(root, "test")]
    assert mat.sum() == sum(int((lab != 255).sum()) for lab in labels)
    for k, n in enumerate(mat.sum(1)):
        assert n == sum(int((lab == k).sum()) for lab in labels)
    again = scores_from_confusion(mat, proto["classes"], {"overall": [2, 3, 4, 5, 6, 7, 8, 9]})
    assert rec["scores"]["miou"] == pytest.approx(again["miou"])
    assert rec["scores"]["groups"]["overall"] == pytest.approx(again["groups"]["overall"])
    # the saved predictions are at the original resolution and score the same without a model
    names = [n for n, _, _ in read_split_list(root, "test")]
    for n, lab in zip(names, labels):
        assert read_label(os.path.join(out, "labels", f"{n}.png")).shape == lab.shape
        assert os.path.isfile(os.path.join(out, "colour", f"{n}.png"))
    out2 = str(tmp / "out2")
    r2 = run("--predictions", os.path.join(out, "labels"), "--data", root, "--dataset", "synthetic",
             "--split", "test", "--out", out2)
    assert r2.returncode == 0, r2.stderr
    rec2 = json.load(open(os.path.join(out2, "metrics.json")))
    assert rec2["confusion"] == rec["confusion"] and rec2["protocol"]["source"] == "predictions"


def test_a_prediction_that_cannot_be_written_stops_with_its_path(setup):
    """cv2.imwrite returns False instead of raising: a lost prediction used to go unnoticed (exit 0)."""
    tmp, root, cfg, ckpt = setup
    out = tmp / "blocked"
    name = read_split_list(root, "test")[0][0]
    (out / "labels" / f"{name}.png").mkdir(parents=True)  # a folder where the label PNG goes
    r = run("--config", cfg, "--checkpoint", ckpt, "--split", "test", "--out", str(out), "--save-predictions")
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()[-1]
    assert err.startswith("error: could not write") and f"{name}.png" in err
    assert not [n for n in os.listdir(out / "labels") if n.startswith(".tmp-")]


def test_class_count_mismatch_names_both_numbers_and_files(setup):
    tmp, root, cfg, _ = setup
    ckpt19 = write_tiny_checkpoint(str(tmp / "c19" / "best.pt"), dataset="synthetic19")
    r = run("--config", cfg, "--checkpoint", ckpt19)
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()[-1]
    assert "19 classes" in err and "has 11" in err and ckpt19 in err and cfg in err


def test_missing_and_wrong_size_predictions(setup, tmp_path):
    _, root, _, _ = setup
    names = [n for n, _, _ in read_split_list(root, "test")]
    import cv2
    cv2.imwrite(str(tmp_path / f"{names[0]}.png"), np.zeros((56, 72), np.uint8))
    r = run("--predictions", str(tmp_path), "--data", root, "--dataset", "synthetic", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "2 of 3" in r.stderr and names[1] in r.stderr
    for n in names[1:]:
        cv2.imwrite(str(tmp_path / f"{n}.png"), np.zeros((10, 10), np.uint8))
    r = run("--predictions", str(tmp_path), "--data", root, "--dataset", "synthetic", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "original resolution" in r.stderr and names[1] in r.stderr


def test_usage_errors(capsys):
    script = load_script("evaluate")
    with pytest.raises(SystemExit) as e:
        script.parse_args(["--checkpoint", "x.pt"])
    assert e.value.code == 2 and "--config" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.parse_args(["--predictions", "d"])
    assert "--data and --dataset" in capsys.readouterr().err
    with pytest.raises(ValueError, match="0.75,1,1.25"):
        script.parse_scales("0.75;1")


def test_evaluate_script_scores_the_checkpoint_rnn_g(rnn_g_run):
    tmp, _, sets, best = rnn_g_run
    out = tmp / "eval"
    r = run_script("evaluate", "--config", CONFIG, "--set", *sets, "--checkpoint", best, "--split", "test",
                   "--out", str(out), "--no-progress", "--flip")
    assert r.returncode == 0, r.stderr
    rec = json.load(open(out / "metrics.json"))
    assert rec["protocol"]["model"] == "rnn_g" and rec["protocol"]["num_samples"] == 3
    mat = np.array(rec["confusion"])
    assert mat.shape == (11, 11) and mat.sum() == 3 * 64 * 64
    assert 0.0 <= rec["scores"]["pixel_accuracy"] <= 1.0 and "mean F1" in r.stdout
