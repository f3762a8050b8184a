"""A run directory protects itself: one training at a time (a stale lock taken over), and a resume that refuses another
model or label set always, and other data or schedule settings unless --allow-changes (then recorded and kept)."""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest
import yaml
from helpers import ROOT
from helpers.scripts import run_script
from helpers.tiny_checkpoint import subprocess_env

from dml_csr._typed import shown
from dml_csr.checkpoint import CheckpointError, RunPaths
from dml_csr.config import config_to_dict, save_config
from dml_csr.data.synthetic import write_dataset
from dml_csr.training.run_guard import LOCK_FILE, config_changes
from dml_csr.training.trainer import train

TRAIN = os.path.join(ROOT, "scripts", "train.py")


def _wait_for_lock(path: str, pid: int, proc: subprocess.Popen, timeout: float = 240.0) -> None:
    start = time.time()
    while time.time() - start < timeout:
        if os.path.exists(path) and open(path).read().startswith(f"process {pid} "):
            return
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.2)
    raise AssertionError("the first training never took the lock")


def test_two_trainings_on_one_run_directory(micro_cfg, tmp_path):
    """While one training runs, a second on its run directory ends in one line naming the holder; once the first is
    killed (-9: its lock file still names it), the next training takes the lock over and says so."""
    cfg = micro_cfg("train.epochs=1000", "train.iters_per_epoch=1", "name=locked")
    path = str(tmp_path / "locked.yaml")
    save_config(cfg, path)
    lock = os.path.join(cfg.run_dir, LOCK_FILE)
    first = subprocess.Popen([sys.executable, TRAIN, "--config", path, "--no-progress"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, env=subprocess_env())
    try:
        _wait_for_lock(lock, first.pid, first)
        second = subprocess.run([sys.executable, TRAIN, "--config", path, "--no-progress", "--resume"],
                                capture_output=True, text=True, timeout=300, env=subprocess_env())
        assert first.poll() is None  # the first one still ran all along
        assert second.returncode == 2
        host = re.escape(socket.gethostname())
        assert re.fullmatch(rf"error: run directory '{re.escape(cfg.run_dir)}' is in use by another training "
                            rf"\(process {first.pid} on {host} since [-0-9: ]+\); wait for it to end, or choose "
                            r"another name \(--set name=\.\.\.\)\n", second.stderr), second.stderr
    finally:
        first.kill()
        first.communicate()
    assert open(lock).read().startswith(f"process {first.pid} ")  # killed: it could not release the lock
    third = subprocess.run([sys.executable, TRAIN, "--config", path, "--no-progress", "--resume", "--max-epochs", "1"],
                           capture_output=True, text=True, timeout=300, env=subprocess_env())
    assert third.returncode == 0, third.stderr
    assert (f"run directory '{cfg.run_dir}': taking over the lock left by process {first.pid} on "
            f"{socket.gethostname()}") in third.stderr and "which is no longer running" in third.stderr
    assert open(lock).read() == ""  # released cleanly


def test_a_resume_with_another_dataset_is_refused_then_allowed_and_both_configs_kept(micro_cfg, tmp_path):
    cfg = micro_cfg("train.epochs=2", "train.iters_per_epoch=1", "name=moved")
    path = str(tmp_path / "moved.yaml")
    save_config(cfg, path)
    assert train(cfg, max_epochs=1, progress=False)["epochs_done"] == 1
    old_root = cfg.data.root
    other = str(tmp_path / "other")
    write_dataset(other, {"train": 8, "val": 4}, seed=7, size=(64, 64))
    ckpt = RunPaths(cfg.run_dir).checkpoints()[-1]
    base = ["--config", path, "--no-progress", "--resume", "--set", f"data.root={other}"]
    r = run_script("train", *base)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith(f"error: '{ckpt}' was trained with other data or schedule settings (data.root: ")
    assert r.stderr.endswith("resume with the config it was trained with (its run directory's config.yaml), or pass "
                             "--allow-changes to go on with these\n")
    config_yaml = os.path.join(cfg.run_dir, "config.yaml")
    assert yaml.safe_load(open(config_yaml))["data"]["root"] == old_root  # nothing was replaced

    r = run_script("train", *base, "--allow-changes")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout[r.stdout.index("{"):])["epochs_done"] == 2
    kept = os.path.join(cfg.run_dir, "config_until_epoch_0001.yaml")
    assert yaml.safe_load(open(kept))["data"]["root"] == old_root
    assert yaml.safe_load(open(config_yaml))["data"]["root"] == other
    records = [json.loads(line) for line in open(RunPaths(cfg.run_dir).metrics)]
    change = [rec for rec in records if rec["type"] == "config_change"]
    assert len(change) == 1 and change[0]["epoch"] == 1 and change[0]["earlier_config"] == os.path.basename(kept)
    assert change[0]["changes"] == [f"data.root: {shown(old_root, 60)} -> {shown(other, 60)}"]  # long paths cut


def test_a_resume_with_another_label_set_is_one_line_even_with_allow_changes(micro_cfg):
    """Another class count was a load_state_dict traceback: it is one line naming both label sets."""
    cfg = micro_cfg("train.epochs=2", "train.iters_per_epoch=1", "name=labels")
    train(cfg, max_epochs=1, progress=False)
    other = micro_cfg("train.epochs=2", "train.iters_per_epoch=1", "name=labels", "data.dataset=celebamask_hq")
    with pytest.raises(CheckpointError) as e:
        train(other, resume=cfg.run_dir, progress=False, allow_changes=True)
    text = str(e.value)
    assert "\n" not in text and "was trained on 11 classes (background, " in text
    assert "data.dataset 'celebamask_hq' has 19 (background, " in text and text.endswith(
        "resume with the dataset it was trained on")


def test_only_where_and_how_a_run_computes_may_change_without_allow_changes(micro_cfg):
    """The device, worker count, logging, compile switch and train.init_from (read only when a run starts) change
    freely; a changed lr, batch size or seed is a change the resume must allow."""
    cfg = micro_cfg("train.lr=0.01", "data.batch_size=4")
    free = micro_cfg("train.lr=0.01", "data.batch_size=4", "data.workers=2", "train.log_every=7", "train.keep_last=9",
                     "train.init_from=elsewhere.pt")
    assert config_changes(free, {"config": config_to_dict(cfg)}) == []
    changed = micro_cfg("train.lr=0.02", "data.batch_size=2", "seed=5")
    assert config_changes(changed, {"config": config_to_dict(cfg)}) == [
        f"seed: {cfg.seed} -> 5", "data.batch_size: 4 -> 2", "train.lr: 0.01 -> 0.02"]
    # a run written before a setting existed was trained with its default: a change from it must be allowed too
    older = config_to_dict(cfg)
    del older["data"]["align"], older["data"]["template"], older["data"]["tanh_warp"]
    assert config_changes(cfg, {"config": older}) == []
    aligned = micro_cfg("train.lr=0.01", "data.batch_size=4", "data.align=landmarks", "data.template=farl")
    assert config_changes(aligned, {"config": older}) == ["data.align: 'whole' -> 'landmarks'",
                                                          "data.template: 'root' -> 'farl'"]
