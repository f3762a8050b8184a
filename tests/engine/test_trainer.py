"""The training run: resume equivalence across a cycle boundary, NaN handling, signals, run-directory layout."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from dml_csr import trainer as trainer_mod
from dml_csr.checkpoint import CheckpointError, load_checkpoint
from dml_csr.engine import NonFiniteLossError
from dml_csr.models.norm import inplace_abn_available
from dml_csr.trainer import RunPaths, train

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CSR = ("train.epochs=1", "train.cycles=2", "train.cycle_epochs=2", "train.val_every=1")


def _final(run_dir):
    ckpts = RunPaths(run_dir).checkpoints()
    return load_checkpoint(ckpts[-1])


def test_resume_is_bit_identical_across_cycle_boundary(micro_cfg):
    straight = micro_cfg(*CSR, "name=straight")
    s = train(straight, progress=False)
    assert s["epochs_done"] == 5

    split = micro_cfg(*CSR, "name=split")
    train(split, max_epochs=2, progress=False)  # ends inside cycle 1 (its running sum holds one model)
    mid = _final(split.run_dir)
    assert mid["train_state"]["epoch"] == 2 and mid["csr"]["running_sum"]["count"] == 1
    train(split, resume=split.run_dir, max_epochs=2, progress=False)  # crosses the end of cycle 1
    train(split, resume=split.run_dir, progress=False)

    a, b = _final(straight.run_dir), _final(split.run_dir)
    assert a["train_state"]["epoch"] == b["train_state"]["epoch"] == 5
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for key in a["csr"]["teacher_state"]:
        assert torch.equal(a["csr"]["teacher_state"][key], b["csr"]["teacher_state"][key]), key
    for g1, g2 in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(g1["momentum_buffer"], g2["momentum_buffer"])
    # the teacher is the eq. 6 aggregate, not the student
    assert any(not torch.equal(a["model"][k], a["csr"]["teacher_state"][k]) for k in a["model"]
               if a["model"][k].is_floating_point())


def test_run_directory_layout_and_metrics(micro_cfg):
    cfg = micro_cfg("train.epochs=1", "train.cycles=1", "train.cycle_epochs=1", "train.keep_last=1", "name=layout")
    summary = train(cfg, progress=False)
    paths = RunPaths(cfg.run_dir)
    assert os.path.isfile(paths.config) and os.path.isfile(paths.best)
    assert [os.path.basename(p) for p in paths.checkpoints()] == ["epoch_0002.pt"]  # keep_last=1
    records = [json.loads(l) for l in open(paths.metrics)]
    kinds = [(r["type"], r.get("tag")) for r in records]
    assert ("train", None) in kinds and ("val", "student") in kinds and ("val", "ensemble_1") in kinds
    train_rec = next(r for r in records if r["type"] == "train")
    assert {"total", "parsing_ce", "edge_ce", "semantic_edge_ce"} <= set(train_rec["loss"])
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(paths.tb))
    best = load_checkpoint(paths.best)
    assert best["meta"]["classes"][0] == "background" and best["meta"]["channel_order"] == "BGR"
    assert abs(best["val_mean_f1"] - summary["best_val_mean_f1"]) < 1e-12
    # a second run into the same directory is refused instead of overwriting it
    with pytest.raises(CheckpointError, match="already holds checkpoints"):
        train(cfg, progress=False)


def test_non_finite_loss_stops_with_iteration_and_terms(micro_cfg, monkeypatch):
    cfg = micro_cfg("train.epochs=3", "name=nan")
    real = trainer_mod._build_criterion

    def poisoned(cfg_, num_classes):
        crit = real(cfg_, num_classes)
        calls = {"n": 0}

        def wrapped(outputs, batch, teacher=None, cycle=0):
            terms = crit(outputs, batch, teacher, cycle)
            calls["n"] += 1
            if calls["n"] == 5:  # second epoch, second step
                terms["edge_ce"] = terms["edge_ce"] * float("nan")
                terms["total"] = terms["total"] + terms["edge_ce"]
            return terms
        return wrapped

    monkeypatch.setattr(trainer_mod, "_build_criterion", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"iteration 4 .*edge_ce=nan.*total=nan"):
        train(cfg, progress=False)
    ckpts = RunPaths(cfg.run_dir).checkpoints()
    assert [os.path.basename(p) for p in ckpts] == ["epoch_0001.pt"]
    ck = load_checkpoint(ckpts[-1])
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
    monkeypatch.setattr(trainer_mod, "_build_criterion", real)
    out = train(cfg, resume=cfg.run_dir, progress=False)  # the last good state resumes
    assert out["epochs_done"] == 3


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_to_the_process_group_checkpoints(micro_cfg, tmp_path, sig):
    cfg_path = tmp_path / "cfg.yaml"
    from dml_csr.config import save_config
    # a loader worker too: Ctrl-C, or a scheduler's SIGTERM to the job, reaches the whole process group
    save_config(micro_cfg("train.epochs=200", "name=sig", "data.workers=1"), str(cfg_path))
    cmd = [sys.executable, os.path.join(ROOT, "scripts", "train.py"), "--config", str(cfg_path), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    run_dir = str(tmp_path / "runs" / "sig")
    # wait for the first epoch checkpoint, then interrupt
    import time
    t0 = time.time()
    while not RunPaths(run_dir).checkpoints():
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() - t0 < 120
        time.sleep(0.2)
    os.killpg(proc.pid, sig)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, out
    last = load_checkpoint(RunPaths(run_dir).checkpoints()[-1])
    assert last["train_state"]["epoch"] < 200
    assert "resume with --resume" in out



@pytest.mark.skipif(not inplace_abn_available(), reason="inplace_abn not installed")
def test_inplace_abn_kernels_train_like_our_abn(micro_cfg):
    """model.norm=inplace_abn (the package's kernels, in place) through phase 1 and a CSR cycle (self-ensemble, BN
    re-estimation, distillation) ends where our pure-PyTorch ABN ends: same arithmetic, up to rounding.

    float64, as the DDP test: after one step the two agree to 3e-6 in float32, but batch norm over the micro model's
    2x2 deep maps amplifies rounding through a cycle to 1e-1; in float64 they agree to 5e-8."""
    runs = {}
    for norm in ("abn", "inplace_abn"):
        cfg = micro_cfg("train.epochs=1", "train.cycles=1", "train.cycle_epochs=1", "train.val_every=0",
                        "train.image_log_every=0", "loss.lovasz=false", "train.precision=fp64", f"model.norm={norm}",
                        f"name={norm}")
        train(cfg, progress=False)
        runs[norm] = _final(cfg.run_dir)
    a, b = runs["abn"]["model"], runs["inplace_abn"]["model"]
    shared = [k for k in a if k in b and a[k].is_floating_point()]
    assert len(shared) > 50 and not set(b) - set(a)  # ABN has num_batches_tracked on top of inplace_abn's entries
    worst = max(((a[k] - b[k]).abs().max() / a[k].abs().max().clamp_min(1e-12)).item() for k in shared)
    moved = max(((a[k] - runs["abn"]["csr"]["teacher_state"][k]).abs().max()).item() for k in shared)
    assert worst < 1e-6 and moved > 0, (worst, moved)
