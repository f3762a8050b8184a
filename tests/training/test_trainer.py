"""The training run: resume equivalence across a cycle boundary, NaN handling, signals, run-directory layout, the
learning rate each epoch got; and two short trainings on synthetic faces that must reach their F1 after a fixed
number of steps (their time is printed, not asserted: a time budget belongs in a benchmark)."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from helpers import ROOT

from dml_csr.training import trainer as trainer_mod
from dml_csr.checkpoint import CheckpointError, RunPaths, load_checkpoint
from dml_csr.config import load_config
from dml_csr.data.dataset import build_dataset
from dml_csr.data.labels import get_spec
from dml_csr.data.loader import collate_samples
from dml_csr.data.synthetic import write_dataset
from dml_csr.evaluation.protocol import evaluate
from dml_csr.training.engine import NonFiniteLossError
from dml_csr.training.faults import DivergedError
from dml_csr.checkpoint import load_model
from dml_csr.models import build_model
from dml_csr.models.norm import inplace_abn_available
from dml_csr.models.two_stage import PaperTwoStageRNNG, TwoStageRNNG
from dml_csr.training.trainer import train

CSR = ("train.epochs=1", "train.cycles=2", "train.cycle_epochs=2", "train.val_every=1", "train.cycle_lr=0.01")


def _final(run_dir):
    ckpts = RunPaths(run_dir).checkpoints()
    return load_checkpoint(ckpts[-1])


def test_resume_is_bit_identical_across_cycle_boundary(micro_cfg):
    straight = micro_cfg(*CSR, "name=straight")
    s = train(straight, progress=False)
    assert s["epochs_done"] == 5
    # 12 train samples, batch 4: 3 steps an epoch. The first phase decays lr 0.01 with poly 0.9 over its 3 steps;
    # each cycle epoch takes the cosine of its place in the cycle (2 epochs: cycle_lr, then cycle_lr / 2)
    records = [json.loads(line) for line in open(RunPaths(straight.run_dir).metrics) if '"train"' in line]
    assert [r["lr"] for r in records] == pytest.approx(  # the rate of each epoch's last step
        [0.01 * (1 - 2 / 3) ** 0.9, 0.01, 0.01 * (1 + math.cos(math.pi / 2)) / 2, 0.01, 0.005], rel=1e-9)
    assert [r["step"] for r in records] == [3, 6, 9, 12, 15]

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


def test_the_official_preset_averages_the_students_as_the_authors_code_does(tiny_synthetic, tmp_path):
    """The official schedule (configs/_base_/schedules/official_150e_5x10.yaml) at 2 first-phase epochs and 2 cycles
    of 1: the first cycle's teacher has the weights of s2, the last first-phase student, and the final teacher those
    of (s2 + s3 + s4) / 3, the students at the end of the first phase and of each cycle (their norm statistics are
    re-estimated, so only the parameters are compared)."""
    from helpers.micro import MICRO

    cfg = load_config(os.path.join(ROOT, "configs", "_base_", "schedules", "official_150e_5x10.yaml"),
                      MICRO + [f"data.root={tiny_synthetic}", f"output_dir={tmp_path}", "name=official",
                               "train.epochs=2", "train.cycles=2", "train.cycle_epochs=1", "train.keep_last=10",
                               "train.val_every=1"])
    assert cfg.loss.preset == "official" and cfg.train.self_ensemble == "moving_average"
    train(cfg, progress=False)
    paths = RunPaths(cfg.run_dir)
    s2, s3, s4 = (load_checkpoint(paths.epoch_ckpt(e)) for e in (2, 3, 4))
    params = [name for name, _ in build_model(cfg.model, 11).named_parameters()]
    for name in params:
        assert torch.equal(s2["csr"]["teacher_state"][name], s2["model"][name]), name
        mean = (s2["model"][name].double() + s3["model"][name].double() + s4["model"][name].double()) / 3
        assert torch.allclose(s4["csr"]["teacher_state"][name].double(), mean, atol=1e-6, rtol=0), name
    assert any(not torch.equal(s3["model"][n], s2["model"][n]) for n in params)  # the students moved
    records = [json.loads(line) for line in open(paths.metrics)]
    assert [r["tag"] for r in records if r["type"] == "val" and r["tag"].startswith("ensemble")] == [
        "ensemble_0", "ensemble_1", "ensemble_2"]


def test_norm_statistics_are_re_estimated_over_every_training_image(micro_cfg, monkeypatch):
    """11 training faces in batches of 4: a training epoch forwards 8 of them, the re-estimation all 11."""
    seen = []
    real = trainer_mod.reestimate_bn

    def spy(model, loader, **kwargs):
        batches = list(loader)
        seen.append(sorted(n for b in batches for n in b["name"]))
        return real(model, batches, **kwargs)

    monkeypatch.setattr(trainer_mod, "reestimate_bn", spy)
    cfg = micro_cfg("train.epochs=1", "train.cycles=1", "train.cycle_epochs=1", "data.max_samples=11", "name=bn11")
    train(cfg, progress=False)
    assert seen == [sorted(build_dataset(cfg, "train", train=True).names)] and len(seen[0]) == 11


def test_run_directory_layout_and_metrics(micro_cfg):
    cfg = micro_cfg("train.epochs=1", "train.cycles=1", "train.cycle_epochs=1", "train.keep_last=1", "name=layout",
                    "train.image_log_every=1")
    summary = train(cfg, progress=False)
    paths = RunPaths(cfg.run_dir)
    assert os.path.isfile(paths.config) and os.path.isfile(paths.best)
    assert [os.path.basename(p) for p in paths.checkpoints()] == ["epoch_0002.pt"]  # keep_last=1
    records = [json.loads(l) for l in open(paths.metrics)]
    kinds = [(r["type"], r.get("tag")) for r in records]
    assert ("train", None) in kinds and ("val", "student") in kinds and ("val", "ensemble_1") in kinds
    train_rec = next(r for r in records if r["type"] == "train")
    assert {"total", "parsing_ce", "edge_ce", "semantic_edge_ce"} <= set(train_rec["loss"])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(paths.tb).Reload()
    assert {"loss/total", "lr", "val_student/mean_f1", "val_ensemble_1/mean_f1"} <= set(events.Tags()["scalars"])
    grid = events.Images("val/input_gt_pred_edges")
    assert [g.step for g in grid] == [1, 2] and grid[0].width == 2 + 5 * (64 + 2)  # input, truth, prediction, 2 edges
    best = load_checkpoint(paths.best)
    assert best["meta"]["classes"][0] == "background" and best["meta"]["channel_order"] == "BGR"
    assert best["meta"]["crop"] == {"kind": "whole_image"}  # the root has no face_template.json
    assert abs(best["val_mean_f1"] - summary["best_val_mean_f1"]) < 1e-12
    # a second run into the same directory is refused instead of overwriting it
    with pytest.raises(CheckpointError, match="already holds checkpoints"):
        train(cfg, progress=False)


def test_checkpoints_record_the_datasets_face_template(micro_cfg, tmp_path):
    from dml_csr.data.face_template import write_template
    from dml_csr.training.trainer import _meta

    crop = {"kind": "template", "points": [[0.6, 0.4], [0.4, 0.4], [0.5, 0.55], [0.6, 0.7], [0.4, 0.7]],
            "input_size": [473, 473]}
    write_template(str(tmp_path), crop)
    meta = _meta(micro_cfg(f"data.root={tmp_path}"))
    assert meta["crop"] == crop and meta["input_size"] == [64, 64]


def test_non_finite_loss_stops_with_iteration_and_terms(micro_cfg, monkeypatch):
    cfg = micro_cfg("train.epochs=3", "name=nan")
    real = trainer_mod.build_criterion

    def poisoned(cfg_, class_names, class_weights=None):
        crit = real(cfg_, class_names, class_weights)
        calls = {"n": 0}

        def wrapped(outputs, batch, teacher=None, cycle=0):
            terms = crit(outputs, batch, teacher, cycle)
            calls["n"] += 1
            if calls["n"] == 5:  # second epoch, second step
                terms["edge_ce"] = terms["edge_ce"] * float("nan")
                terms["total"] = terms["total"] + terms["edge_ce"]
            return terms
        return wrapped

    monkeypatch.setattr(trainer_mod, "build_criterion", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"iteration 4 .*edge_ce=nan.*total=nan"):
        train(cfg, progress=False)
    ckpts = RunPaths(cfg.run_dir).checkpoints()
    assert [os.path.basename(p) for p in ckpts] == ["epoch_0001.pt"]
    ck = load_checkpoint(ckpts[-1])
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
    monkeypatch.setattr(trainer_mod, "build_criterion", real)
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


RNN_G = os.path.join(ROOT, "configs", "synthetic_rnn_g.yaml")
RNN_G_TINY = ["data.input_size=[64, 64]", "data.batch_size=4", "model.rnn_channels=8", "train.epochs=1",
              "train.val_every=1", "train.log_every=1", "eval.batch_size=4"]


@pytest.mark.parametrize("variant", ["paper", "label_crops"])
def test_two_stage_trains_end_to_end_with_its_crops(tiny_synthetic, tmp_path, monkeypatch, variant):
    """The paper's variant gets the batch's keypoints (warped with each sample), ours the ground-truth labels."""
    cfg = load_config(RNN_G, [f"data.root={tiny_synthetic}", f"output_dir={tmp_path}", "name=two", *RNN_G_TINY,
                              "model.two_stage=true", f"model.two_stage_variant={variant}",
                              "model.rnn_stage1_size=[32, 32]", "train.image_log_every=0"])
    model_class = PaperTwoStageRNNG if variant == "paper" else TwoStageRNNG
    seen = []
    real = model_class.forward

    def spy(self, x, *, keypoints=None, label=None):
        if self.training:
            seen.append(keypoints if variant == "paper" else label)
        return real(self, x, keypoints=keypoints, label=label)

    monkeypatch.setattr(model_class, "forward", spy)
    summary = train(cfg, progress=False)
    assert summary["epochs_done"] == 1 and seen and all(t is not None for t in seen)
    assert all(t.shape[1:] == ((5, 2) if variant == "paper" else (64, 64)) for t in seen)
    records = [json.loads(line) for line in open(RunPaths(cfg.run_dir).metrics)]
    loss = next(r for r in records if r["type"] == "train")["loss"]
    assert {"parsing_ce", "coarse_ce", "gate_ce", "stage1_ce", "part_ce"} <= set(loss)
    assert all(math.isfinite(v) for v in loss.values())
    val = next(r for r in records if r["type"] == "val")
    assert 0.0 <= val["mean_f1"] <= 1.0
    # the checkpoint rebuilds the two-stage model
    ckpt = load_checkpoint(summary["best"])
    model = build_model(cfg.model, 11, get_spec("synthetic").classes)
    model.load_state_dict(ckpt["model"])
    assert type(model) is model_class


def test_staged_rnn_g_trains_the_first_stage_then_the_components_with_it_frozen(tiny_synthetic, tmp_path):
    """model.rnn_train=staged (Liu et al.'s order), 1 epoch of the first stage then 2 of the components: the
    components do not move in the first epoch, the first stage -- weights and norm statistics -- not after it; and a
    run stopped at the switch resumes to the straight run's weights, bit for bit."""
    def config(name):
        return load_config(RNN_G, [f"data.root={tiny_synthetic}", f"output_dir={tmp_path}", f"name={name}",
                                   *RNN_G_TINY, "model.two_stage=true", "model.rnn_stage1_size=[32, 32]",
                                   "model.rnn_train=staged", "train.epochs=3", "train.stage1_epochs=1",
                                   "train.keep_last=10", "train.image_log_every=0"])
    cfg = config("staged")
    torch.manual_seed(cfg.seed)
    init = build_model(cfg.model, 11, get_spec("synthetic").classes).state_dict()
    train(cfg, progress=False)
    paths = RunPaths(cfg.run_dir)
    e1, e2, e3 = (load_checkpoint(paths.epoch_ckpt(e))["model"] for e in (1, 2, 3))
    params = dict(build_model(cfg.model, 11, get_spec("synthetic").classes).named_parameters())
    parts = [k for k in params if k.startswith("part_nets.")]
    assert parts and all(torch.equal(e1[k], init[k]) for k in parts)
    assert any(not torch.equal(e1[k], init[k]) for k in params if k.startswith("stage1."))
    stage1 = [k for k in e1 if k.startswith("stage1.")]
    assert all(torch.equal(e1[k], e2[k]) and torch.equal(e1[k], e3[k]) for k in stage1)
    assert any(not torch.equal(e1[k], e3[k]) for k in parts)
    records = [json.loads(line) for line in open(paths.metrics) if '"train"' in line]
    assert records[0]["loss"]["total"] == pytest.approx(sum(records[0]["loss"][t] for t in
                                                            ("coarse_ce", "gate_ce", "stage1_ce")), rel=1e-6)
    assert records[2]["loss"]["total"] == pytest.approx(records[2]["loss"]["part_ce"], rel=1e-6)
    # each stage decays its own rate (the last step's, per epoch): the components start again from the top
    assert records[0]["lr"] < records[1]["lr"] and records[2]["lr"] < records[1]["lr"]
    split = config("staged_split")
    train(split, max_epochs=1, progress=False)
    train(split, resume=split.run_dir, progress=False)
    final = load_checkpoint(RunPaths(split.run_dir).epoch_ckpt(3))["model"]
    assert all(torch.equal(final[k], e3[k]) for k in e3)


# ------------------------------------------------------------------------------------- learning synthetic faces
@pytest.mark.slow
def test_small_dml_csr_reaches_f1_085_and_csr_keeps_it(tmp_path):
    """The demo's model on 480 faces at 96x96 (faces larger in the frame than the demo's, so that the small parts
    keep their pixels at this size): 5 first-phase epochs + one cycle of 2, 60 steps each (420 in all)."""
    data = str(tmp_path / "synthetic")
    write_dataset(data, {"train": 480, "val": 60}, seed=11, size=(120, 120), face_scale=(0.3, 0.38))
    cfg = load_config(os.path.join(ROOT, "configs", "synthetic_dml_csr_tiny.yaml"), [
        f"data.root={data}", f"output_dir={tmp_path / 'runs'}", "name=quality", "data.input_size=[96, 96]",
        "train.epochs=5", "train.cycles=1", "train.cycle_epochs=2", "train.cycle_lr=0.005", "train.val_every=5",
        "train.image_log_every=0", "train.precision=bf16", "train.channels_last=true",  # half the fp32 step time
        "loss.lovasz=false"])  # its sort is a third of this step; Lovasz-softmax has its own tests
    torch.set_num_threads(2)
    cpu0, wall0 = time.process_time(), time.time()
    summary = train(cfg, progress=False)
    cpu, wall = time.process_time() - cpu0, time.time() - wall0
    records = [json.loads(line) for line in open(RunPaths(cfg.run_dir).metrics) if '"val"' in line]
    phase1 = [r for r in records if r["tag"] == "student" and r["epoch"] == cfg.train.epochs][0]
    ensemble = [r for r in records if r["tag"] == "ensemble_1"][0]
    print(f"training: {wall:.0f} s wall, {cpu:.0f} s CPU; val mean F1 {phase1['mean_f1']:.4f} after the first "
          f"phase, {ensemble['mean_f1']:.4f} after self-regulation")
    assert load_checkpoint(RunPaths(cfg.run_dir).checkpoints()[-1])["train_state"]["step"] == 420
    assert phase1["mean_f1"] >= 0.85, phase1["mean_f1"]
    # the eq. 6 aggregate (after BN re-estimation) is at least as good as the first phase, within noise
    assert ensemble["mean_f1"] >= phase1["mean_f1"] - 0.005, (ensemble["mean_f1"], phase1["mean_f1"])
    assert summary["best_val_mean_f1"] >= 0.85


@pytest.mark.slow
@pytest.mark.parametrize("config,epochs", [("synthetic_rnn_g.yaml", 4), ("liu2017/synthetic_rnn_g_staged.yaml", 8)])
def test_rnn_g_with_the_papers_two_stages_reaches_mean_f1_080_on_synthetic_faces(tmp_path, config, epochs):
    """The paper's two stages -- background/face/hair at 128x128, the three component networks on crops of the
    256x256 face placed from its landmarks -- trained jointly (configs/synthetic_rnn_g.yaml, 4 of its 5 epochs) and in
    the paper's order (the staged config's 3 + 5 epochs), 50 steps an epoch on 400 synthetic tight face crops; the
    best-on-val checkpoint is scored on an unseen test split at the original resolution."""
    root = str(tmp_path / "faces")
    write_dataset(root, {"train": 400, "val": 40, "test": 40}, seed=7, size=(256, 256), face_scale=(0.34, 0.42),
                  second_face_prob=0.0)
    cfg = load_config(os.path.join(ROOT, "configs", config),
                      [f"data.root={root}", f"output_dir={tmp_path / 'runs'}", "train.image_log_every=0",
                       f"train.epochs={epochs}", f"train.val_every={epochs}"])
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        t0 = time.process_time()
        summary = train(cfg, progress=False)
        seconds = time.process_time() - t0
        model, meta = load_model(summary["best"])
        assert meta["model_name"] == "rnn_g"
        ds = build_dataset(cfg, "test", train=False)
        loader = torch.utils.data.DataLoader(ds, batch_size=8, collate_fn=collate_samples)
        spec = get_spec("synthetic")
        scores = evaluate(model, loader, ds, spec.num_classes, device=torch.device("cpu")).compute(spec.classes)
    finally:
        torch.set_num_threads(threads)
    per_class = {c: round(v["f1"], 3) for c, v in scores["per_class"].items()}
    print(f"training: {seconds:.0f} CPU s; test mean F1 {scores['mean_f1']:.4f}")
    assert load_checkpoint(RunPaths(cfg.run_dir).checkpoints()[-1])["train_state"]["step"] == epochs * 50
    assert type(model) is PaperTwoStageRNNG
    assert scores["mean_f1"] >= 0.80, f"test mean F1 {scores['mean_f1']:.3f} < 0.80: {per_class}"
    assert summary["best_val_mean_f1"] >= 0.80 - 0.05


@pytest.mark.parametrize("metric,best_epoch", [("mean_f1", 1), ("overall_f1", 2)])
def test_best_model_and_m_best_follow_eval_select_metric(micro_cfg, monkeypatch, metric, best_epoch):
    """Validation scores that disagree (epoch 1 has the better mean F1, epoch 2 the better overall F1): best.pt and
    the teacher of cycle 1 (M_best) are the epoch the configured metric prefers."""
    cfg = micro_cfg("train.epochs=2", "train.cycles=1", "train.cycle_epochs=1", "train.val_every=1",
                    f"eval.select_metric={metric}", f"name=select_{metric}")
    real, seen = trainer_mod._validate, {}

    def fabricated(run, model, tag, epoch):
        scores = real(run, model, tag, epoch)
        if tag == "student" and epoch < 2:
            seen[epoch + 1] = {k: v.detach().clone() for k, v in model.state_dict().items()}
            scores = {**scores, "mean_f1": [0.9, 0.2][epoch], "groups": {**scores["groups"],
                                                                        "overall": [0.1, 0.8][epoch]}}
        else:  # the cycle's student and the ensemble score lower than both
            scores = {**scores, "mean_f1": 0.0, "groups": {**scores["groups"], "overall": 0.0}}
        return scores

    monkeypatch.setattr(trainer_mod, "_validate", fabricated)
    summary = train(cfg, progress=False)
    best = load_checkpoint(RunPaths(cfg.run_dir).best)
    assert best["epoch"] == summary["best_epoch"] == best_epoch and best["select_metric"] == metric
    assert best["val_score"] == summary["best_val_score"] == (0.9 if metric == "mean_f1" else 0.8)
    teacher = _final(cfg.run_dir)["csr"]["best_state"]
    assert all(torch.equal(teacher[k], seen[best_epoch][k]) for k in teacher)


def test_inverse_frequency_class_weights_come_from_the_train_split(micro_cfg, monkeypatch):
    seen = {}
    real = trainer_mod.build_criterion

    def spy(cfg_, class_names, class_weights=None):
        seen["weights"] = class_weights
        return real(cfg_, class_names, class_weights)

    monkeypatch.setattr(trainer_mod, "build_criterion", spy)
    cfg = micro_cfg("train.epochs=1", "train.iters_per_epoch=1", "loss.class_weights=inverse_frequency", "name=w")
    train(cfg, progress=False)
    info = json.load(open(os.path.join(cfg.data.root, "info.json")))["pixel_histogram_by_split"]["train"]
    counts = [info[c] for c in get_spec("synthetic").classes]
    inverse = [1 / n for n in counts if n]
    expected = [(1 / n) / (sum(inverse) / len(inverse)) if n else 0.0 for n in counts]
    assert seen["weights"] == pytest.approx(expected)


def test_class_weights_are_resolved_into_numbers_in_one_place(micro_cfg):
    """A list is taken as it is, null means all ones (None); inverse_frequency is the test above."""
    spec = get_spec("synthetic")
    assert trainer_mod.resolve_class_weights(micro_cfg(), spec) is None
    listed = [0.5, 1, 2, 0, 1, 1, 1, 1, 1, 1, 3]
    assert trainer_mod.resolve_class_weights(micro_cfg(f"loss.class_weights={listed}"), spec) == [float(w) for w in
                                                                                                   listed]


MID = ("train.epochs=2", "train.cycles=1", "train.cycle_epochs=2", "train.val_every=1", "train.cycle_lr=0.01",
       "data.workers=1", "train.keep_last=100")


def test_a_stop_in_the_middle_of_an_epoch_resumes_bit_identically(micro_cfg, monkeypatch):
    """SIGTERM after step 4 (the second epoch's first batch, with a loader worker), a resume, SIGTERM after step 8
    (inside the first cycle), a resume to the end: weights, optimiser and self-regulation state equal a straight
    run's, bit for bit; the stop checkpoints have their own names, and every epoch's record covers the epoch."""
    straight = micro_cfg(*MID, "name=straight_mid")
    train(straight, progress=False)
    cfg = micro_cfg(*MID, "name=stopped_mid")
    real = trainer_mod.RunLog.step

    def stop_after(stop_step):
        def step(self, step, terms, lr):
            real(self, step, terms, lr)
            if step == stop_step:
                os.kill(os.getpid(), signal.SIGTERM)
        return step

    def names():
        return [os.path.basename(p) for p in RunPaths(cfg.run_dir).checkpoints()]

    monkeypatch.setattr(trainer_mod.RunLog, "step", stop_after(4))
    assert train(cfg, progress=False)["stopped"]
    assert names() == ["epoch_0001.pt", "epoch_0001_batch_000001.pt"]  # the clean checkpoint is kept
    monkeypatch.setattr(trainer_mod.RunLog, "step", stop_after(8))
    assert train(cfg, resume=cfg.run_dir, progress=False)["stopped"]
    assert names() == ["epoch_0001.pt", "epoch_0002.pt", "epoch_0002_batch_000002.pt"]  # a passed stop goes
    monkeypatch.setattr(trainer_mod.RunLog, "step", real)
    train(cfg, resume=cfg.run_dir, progress=False)
    a, b = _final(straight.run_dir), _final(cfg.run_dir)
    assert a["train_state"]["step"] == b["train_state"]["step"] == 12
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for g1, g2 in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(g1["momentum_buffer"], g2["momentum_buffer"])
    for key in a["csr"]["teacher_state"]:
        assert torch.equal(a["csr"]["teacher_state"][key], b["csr"]["teacher_state"][key]), key
    records = [[json.loads(line) for line in open(RunPaths(c.run_dir).metrics)] for c in (straight, cfg)]
    train_records = [[(r["epoch"], r["loss"]) for r in rs if r["type"] == "train"] for rs in records]
    assert train_records[0] == train_records[1] and [e for e, _ in train_records[1]] == [1, 2, 3, 4]


def test_a_diverged_run_keeps_its_last_good_checkpoint(micro_cfg, monkeypatch):
    cfg = micro_cfg("train.epochs=3", "train.keep_last=1", "name=diverged")
    real, calls = trainer_mod.train_one_epoch, []

    def exploding(model, *args, **kwargs):
        result = real(model, *args, **kwargs)
        calls.append(1)
        if len(calls) == 2:  # the second epoch ends with weights of 1e29 and a finite loss
            with torch.no_grad():
                for p in model.parameters():
                    p.mul_(1e30)
        return result

    monkeypatch.setattr(trainer_mod, "train_one_epoch", exploding)
    good = RunPaths(cfg.run_dir).epoch_ckpt(1)
    with pytest.raises(DivergedError, match=f"not saved and the last good checkpoint is {good}"):
        train(cfg, progress=False)
    assert RunPaths(cfg.run_dir).checkpoints() == [good]
    assert all(torch.isfinite(v).all() and v.abs().max() < 1e3 for v in load_checkpoint(good)["model"].values()
               if v.is_floating_point())
    monkeypatch.setattr(trainer_mod, "train_one_epoch", real)
    assert train(cfg, resume=cfg.run_dir, progress=False)["epochs_done"] == 3  # the good state resumes


def test_a_run_that_diverges_at_once_says_no_checkpoint_was_written(micro_cfg, tmp_path):
    from dml_csr.config import save_config

    path = str(tmp_path / "lr.yaml")
    save_config(micro_cfg("train.epochs=2", "train.lr=1e6", "name=lr"), path)
    r = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "train.py"), "--config", path, "--no-progress"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 3, r.stderr
    assert "no checkpoint was written" in r.stderr.strip().splitlines()[-1]
    assert RunPaths(str(tmp_path / "runs" / "lr")).checkpoints() == []


def test_resume_errors_and_a_restart_script_that_always_passes_resume(micro_cfg, tmp_path):
    # --resume on a run directory with no checkpoint yet starts the run (a restart script passes it every time)
    cfg = micro_cfg("train.epochs=1", "train.iters_per_epoch=1", "name=first")
    os.makedirs(cfg.run_dir)
    assert train(cfg, resume=cfg.run_dir, progress=False)["epochs_done"] == 1
    # a checkpoint of another model: one line naming the settings that differ, not a state_dict dump
    other = micro_cfg("train.epochs=2", "train.iters_per_epoch=1", "name=other", "model.decoder_channels=8")
    with pytest.raises(CheckpointError, match=r"trained with other model settings \(model.decoder_channels = 16 "
                                              r"there, 8 here\)") as e:
        train(other, resume=cfg.run_dir, progress=False)
    assert "\n" not in str(e.value)
    # a killed checkpoint write leaves a temporary file: the next start removes it
    leftover = os.path.join(RunPaths(cfg.run_dir).ckpt_dir, ".tmp-dead.pt")
    open(leftover, "wb").write(b"half a checkpoint")
    train(micro_cfg("train.epochs=2", "train.iters_per_epoch=1", "name=first"), resume=cfg.run_dir, progress=False,
          allow_changes=True)  # one more epoch: a schedule change
    assert not os.path.exists(leftover)


def test_a_resume_from_an_older_checkpoint_does_not_repeat_epochs_in_the_log(micro_cfg):
    cfg = micro_cfg("train.epochs=3", "train.iters_per_epoch=1", "train.keep_last=10", "name=older")
    train(cfg, progress=False)
    paths = RunPaths(cfg.run_dir)
    train(cfg, resume=paths.epoch_ckpt(1), progress=False)  # epochs 2 and 3 again
    epochs = [(r["type"], r["epoch"]) for r in map(json.loads, open(paths.metrics))]
    assert epochs == [("train", 1), ("val", 1), ("train", 2), ("val", 2), ("train", 3), ("val", 3)]


def test_a_resnet101_without_pretrained_weights_warns_loudly(micro_cfg, caplog, monkeypatch):
    import logging

    from dml_csr.training import trainer as trainer_module

    monkeypatch.setattr(trainer_module, "build_model", lambda *a, **k: torch.nn.Linear(1, 1))
    cfg = micro_cfg("model.backbone=resnet101_deepstem")
    spec = trainer_module.label_spec(cfg)
    dist = trainer_module.du.DistInfo()
    with caplog.at_level(logging.WARNING):
        trainer_module._build_model(cfg, spec, torch.device("cpu"), dist, None)
    assert "model.pretrained is unset" in caplog.text and "RANDOM weights" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # a resume loads trained weights: nothing to warn about
        trainer_module._build_model(cfg, spec, torch.device("cpu"), dist,
                                    {"model": torch.nn.Linear(1, 1).state_dict()})
    assert "model.pretrained" not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # RNN-G trains from scratch: the (unused) backbone field is no concern
        rnn_g = micro_cfg("model.backbone=resnet101_deepstem", "model.name=rnn_g")
        trainer_module._build_model(rnn_g, spec, torch.device("cpu"), dist, None)
    assert "model.pretrained" not in caplog.text


def test_a_resume_does_not_read_the_initialisation_again(micro_cfg, tmp_path):
    """The checkpoint holds the trained weights: a resume must not need model.pretrained's file (moved since, or a
    registry name or torchvision download that is offline now)."""
    init = tmp_path / "resnet18-init.pth"
    torch.save(build_model(micro_cfg().model, 11).backbone.state_dict(), init)  # a backbone file of the right keys
    cfg = micro_cfg("train.epochs=2", "train.iters_per_epoch=1", f"model.pretrained={init}")
    train(cfg, max_epochs=1, progress=False)
    init.unlink()
    assert train(cfg, resume=cfg.run_dir, progress=False)["epochs_done"] == 2


def test_the_cpu_optimiser_is_fused_and_steps_as_the_plain_loop_does(micro_cfg):
    """The fused SGD kernel (one pass a tensor) must give the per-term loop's values exactly: resumes and the DDP
    comparison rely on one run's arithmetic, and the momentum buffer is checkpointed."""
    cfg = micro_cfg("train.weight_decay=0.01")
    torch.manual_seed(0)
    a, b = torch.nn.Linear(64, 32), torch.nn.Linear(64, 32)
    b.load_state_dict(a.state_dict())
    start = [p.detach().clone() for p in a.parameters()]
    fused = trainer_mod._sgd(a, cfg, torch.device("cpu"))
    assert fused.defaults["fused"] is True
    loop = torch.optim.SGD(b.parameters(), lr=cfg.train.lr, momentum=cfg.train.momentum,
                           weight_decay=cfg.train.weight_decay, foreach=False)
    for step in range(4):
        x = torch.randn(8, 64, generator=torch.Generator().manual_seed(step))
        for model, opt in ((a, fused), (b, loop)):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    for pa, pb, p0 in zip(a.parameters(), b.parameters(), start):
        assert torch.equal(pa, pb) and not torch.equal(pa, p0)
