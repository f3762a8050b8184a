"""RNN-G through the framework's own scripts (train, evaluate, predict, export, benchmark) on a tiny budget, and the
two-stage model trained end to end with ground-truth crops."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from dml_csr.checkpoint import load_checkpoint
from dml_csr.config import load_config
from dml_csr.data.synthetic import render_face, write_dataset
from dml_csr.engine import model_targets
from dml_csr.export import read_onnx_meta
from dml_csr.models import build_model
from dml_csr.models.rnn_g import RNNG
from dml_csr.models.two_stage import PARTS, TwoStageRNNG, boxes_from_keypoints, crop_labels
from dml_csr.trainer import RunPaths, train
from helpers.tiny_checkpoint import subprocess_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "synthetic_rnn_g.yaml")
# a narrow single-stage RNN-G at 64x64: one short epoch on the tiny synthetic set (the two-stage tests add
# model.two_stage=true back)
TINY = ["data.input_size=[64, 64]", "data.batch_size=4", "model.rnn_channels=8", "model.two_stage=false",
        "train.epochs=1", "train.val_every=1", "train.log_every=1", "eval.batch_size=4"]


def script(name: str, *args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", name), *args], capture_output=True, text=True,
                       env=subprocess_env(), timeout=300, cwd=ROOT)
    assert r.returncode == 0, f"{name} failed:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    return r


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Train through scripts/train.py; returns (tmp folder, data root, overrides, best checkpoint)."""
    tmp = tmp_path_factory.mktemp("rnn_g_cli")
    root = str(tmp / "data")
    write_dataset(root, {"train": 8, "val": 4, "test": 3}, seed=2, size=(64, 64))
    sets = [f"data.root={root}", f"output_dir={tmp / 'runs'}", "name=rg", *TINY]
    r = script("train.py", "--config", CONFIG, "--no-progress", "--set", *sets)
    summary = json.loads(r.stdout[r.stdout.index("{"):])
    assert summary["epochs_done"] == 1 and os.path.isfile(summary["best"])
    return tmp, root, sets, summary["best"]


def test_train_script_writes_an_rnn_g_run(trained):
    tmp, _, _, best = trained
    ckpt = load_checkpoint(best)
    assert ckpt["meta"]["model_name"] == "rnn_g" and ckpt["meta"]["num_classes"] == 11
    assert ckpt["config"]["model"]["name"] == "rnn_g" and ckpt["config"]["model"]["rnn_channels"] == 8
    assert "rnn_weight" in ckpt["model"] and "gate_head.weight" in ckpt["model"]
    records = [json.loads(line) for line in open(RunPaths(str(tmp / "runs" / "rg")).metrics)]
    loss = next(r for r in records if r["type"] == "train")["loss"]
    assert {"parsing_ce", "coarse_ce", "gate_ce", "total"} <= set(loss)  # the paper's three losses
    assert all(np.isfinite(v) and v > 0 for v in loss.values())
    assert loss["total"] == pytest.approx(loss["parsing_ce"] + loss["coarse_ce"] + loss["gate_ce"], rel=1e-5)
    # the TensorBoard image grid was written although RNN-G returns maps that are not class maps in training
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp / "runs" / "rg" / "tb"))


def test_evaluate_script_scores_the_checkpoint(trained):
    tmp, _, sets, best = trained
    out = tmp / "eval"
    r = script("evaluate.py", "--config", CONFIG, "--set", *sets, "--checkpoint", best, "--split", "test",
               "--out", str(out), "--no-progress", "--flip")
    rec = json.load(open(out / "metrics.json"))
    assert rec["protocol"]["model"] == "rnn_g" and rec["protocol"]["num_samples"] == 3
    mat = np.array(rec["confusion"])
    assert mat.shape == (11, 11) and mat.sum() == 3 * 64 * 64
    assert 0.0 <= rec["scores"]["pixel_accuracy"] <= 1.0 and "mean F1" in r.stdout


def test_predict_script_writes_labels_at_input_size(trained):
    tmp, _, _, best = trained
    image, _, _ = render_face(5, size=(70, 90))
    cv2.imwrite(str(tmp / "face.png"), image)
    out = tmp / "pred"
    script("predict.py", str(tmp / "face.png"), "--checkpoint", best, "--out", str(out), "--device", "cpu",
           "--no-progress")
    pngs = [os.path.join(d, f) for d, _, fs in os.walk(out) for f in fs if f.endswith(".png")]
    labels = [cv2.imread(p, cv2.IMREAD_UNCHANGED) for p in pngs]
    maps = [lab for lab in labels if lab.ndim == 2]
    assert maps and all(lab.shape == (70, 90) and lab.max() < 11 for lab in maps)


def test_export_script_onnx_parity(trained):
    tmp, _, _, best = trained
    out = tmp / "rg.onnx"
    r = script("export.py", "--checkpoint", best, "--format", "onnx", "--out", str(out))
    assert "parity" in r.stdout  # the script fails by itself above its tolerance
    meta = read_onnx_meta(str(out))
    assert meta["model_name"] == "rnn_g" and meta["num_classes"] == 11 and meta["input_size"] == [64, 64]
    import onnxruntime as ort
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    logits = sess.run(None, {"image": np.random.default_rng(0).normal(size=(3, 3, 40, 56)).astype(np.float32)})[0]
    assert logits.shape == (3, 11, 40, 56)


def test_benchmark_script_is_model_agnostic(tmp_path):
    out = tmp_path / "bench.json"
    r = script("benchmark.py", "--config", CONFIG, "--set", "data.root=unused", "model.rnn_channels=8",
               "--size", "32", "--repeats", "1", "--warmup", "0", "--train", "--threads", "1", "--json", str(out))
    rec = json.load(open(out))
    assert rec["model"] == "rnn_g" and rec["paper"] is None and "paper:" not in r.stdout
    # the inference model has no coarse-label or gate head: exactly their weights fewer (8 // 4 = 2 hidden channels)
    heads = (2 * 11 * 9 + 11) + (2 + 1)
    assert rec["params_train"] - rec["params_inference"] == heads
    assert rec["flops_inference"] > 0
    paths = {row["path"] for row in rec["rows"]}
    assert {"fp32 eager", "train fp32"} <= paths
    assert all(row["latency_ms"] > 0 for row in rec["rows"])


# ----------------------------------------------------------------------------------------------- two-stage training
def test_model_targets_only_for_models_that_want_them():
    batch = {"image": torch.zeros(1, 3, 8, 8), "label": torch.zeros(1, 8, 8, dtype=torch.long), "name": ["a"]}
    plain = RNNG(11, width=4)
    two = TwoStageRNNG(RNNG(11, width=4), 11, part_width=4)
    assert model_targets(plain, batch) == {}
    assert set(model_targets(two, batch)) == {"label"}
    wrapped = torch.nn.Module()
    wrapped.module = two  # as DistributedDataParallel holds it
    assert set(model_targets(wrapped, {**batch, "keypoints": torch.zeros(1, 5, 2)})) == {"label", "keypoints"}


def test_two_stage_trains_end_to_end_with_ground_truth_crops(tiny_synthetic, tmp_path, monkeypatch):
    cfg = load_config(CONFIG, [f"data.root={tiny_synthetic}", f"output_dir={tmp_path}", "name=two", *TINY,
                               "model.two_stage=true", "train.image_log_every=0"])
    seen = []
    real = TwoStageRNNG.forward

    def spy(self, x, *, keypoints=None, label=None):
        if self.training:
            seen.append(label)
        return real(self, x, keypoints=keypoints, label=label)

    monkeypatch.setattr(TwoStageRNNG, "forward", spy)
    summary = train(cfg, progress=False)
    assert summary["epochs_done"] == 1 and seen and all(lab is not None and lab.dim() == 3 for lab in seen)
    records = [json.loads(line) for line in open(RunPaths(cfg.run_dir).metrics)]
    loss = next(r for r in records if r["type"] == "train")["loss"]
    assert {"parsing_ce", "coarse_ce", "gate_ce", "stage1_ce", "part_ce"} <= set(loss)
    assert all(np.isfinite(v) for v in loss.values())
    val = next(r for r in records if r["type"] == "val")
    assert 0.0 <= val["mean_f1"] <= 1.0
    # the checkpoint rebuilds the two-stage model
    ckpt = load_checkpoint(summary["best"])
    model = build_model(load_config(CONFIG, [f"data.root={tiny_synthetic}", *TINY, "model.two_stage=true"]).model, 11)
    model.load_state_dict(ckpt["model"])
    assert isinstance(model, TwoStageRNNG)


def test_dataset_keypoints_place_each_crop_on_its_component():
    """The synthetic landmark order (subject's left eye first) puts every crop over its own classes."""
    for seed in range(4):
        image, label, kps = render_face(seed, size=(128, 128), second_face_prob=0.0)
        lab = torch.from_numpy(label.astype(np.int64))[None]
        boxes = boxes_from_keypoints(torch.from_numpy(kps)[None])
        for name, (classes, size, _) in PARTS.items():
            local = crop_labels(lab, boxes[name], size, classes)
            inside = [(local == i + 1).sum().item() for i in range(len(classes))]
            total = [(lab == c).sum().item() for c in classes]
            # most of each component's pixels fall in its own crop
            assert all(i >= 0.8 * t for i, t in zip(inside, total)), (seed, name, inside, total)


def test_bf16_autocast_training_step_has_gradients():
    """train.precision=bf16: autocast hands the scan bf16 maps beside fp32 parameters (a dtype mix its backward
    must accept)."""
    torch.manual_seed(0)
    m = RNNG(11, width=8).train()
    x = torch.randn(2, 3, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(x)
    sum(v.float().square().mean() for v in out.values()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
    assert m.rnn_weight.grad.abs().sum() > 0
