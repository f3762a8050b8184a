"""Checkpoint files and run directories: the schema, weights_only loads, killed writes cleared, the checkpoint to resume
from."""
import os

import pytest
import torch

from dml_csr.checkpoint import (FORMAT, CheckpointError, RunPaths, atomic_torch_save, find_resume_checkpoint,
                                load_checkpoint, make_meta, save_checkpoint)
from dml_csr.config import load_config


def test_save_and_load_round_trip_the_schema(tmp_path):
    cfg = load_config(None, ["data.dataset=lfw_pl", "data.root=x", "data.input_size=[96, 80]",
                             "model.channel_order=RGB"])
    meta = make_meta(cfg)
    assert meta == {"classes": ["background", "skin", "hair"], "dataset": "lfw_pl", "num_classes": 3,
                    "channel_order": "RGB", "mean": list(cfg.model.mean), "std": list(cfg.model.std),
                    "input_size": [96, 80], "model_name": "dml_csr"}
    path = str(tmp_path / "a" / "ck.pt")  # the folder is made
    save_checkpoint(path, {"w": torch.arange(3.0)}, meta, {"name": "x"}, epoch=4)
    ckpt = load_checkpoint(path)
    assert ckpt["format"] == FORMAT and ckpt["meta"] == meta and ckpt["config"] == {"name": "x"}
    assert ckpt["epoch"] == 4 and torch.equal(ckpt["model"]["w"], torch.arange(3.0))
    assert os.listdir(tmp_path / "a") == ["ck.pt"]  # no temporary file left


def test_loads_refuse_what_is_not_a_plain_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="nope.pt' does not exist"):
        load_checkpoint(str(tmp_path / "nope.pt"))
    (tmp_path / "cut.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CheckpointError, match="cut.pt' cannot be loaded with weights_only=True"):
        load_checkpoint(str(tmp_path / "cut.pt"))

    class Payload:
        def __reduce__(self):
            return (print, ("ran",))

    torch.save({"x": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="evil.pt' cannot be loaded with weights_only=True"):
        load_checkpoint(str(tmp_path / "evil.pt"))


def test_run_paths_order_prune_and_the_checkpoint_to_resume(tmp_path):
    paths = RunPaths(str(tmp_path / "run"))
    with pytest.raises(CheckpointError, match="has no checkpoints/epoch_\\*.pt"):
        os.makedirs(paths.ckpt_dir)
        find_resume_checkpoint(paths.root)
    for epoch in (2, 10, 9, 100):
        atomic_torch_save({"epoch": epoch}, paths.epoch_ckpt(epoch))
    assert [os.path.basename(p) for p in paths.checkpoints()] == [
        "epoch_0002.pt", "epoch_0009.pt", "epoch_0010.pt", "epoch_0100.pt"]  # by number, not by name
    assert find_resume_checkpoint(paths.root) == paths.epoch_ckpt(100)
    assert find_resume_checkpoint(paths.epoch_ckpt(9)) == paths.epoch_ckpt(9)  # a file is taken as it is
    paths.prune(2)
    assert paths.checkpoints() == [paths.epoch_ckpt(10), paths.epoch_ckpt(100)]
    paths.prune(0)  # always keeps the newest
    assert paths.checkpoints() == [paths.epoch_ckpt(100)]
    with pytest.raises(CheckpointError, match="neither a checkpoint file nor a run directory"):
        find_resume_checkpoint(str(tmp_path / "elsewhere"))
    assert (paths.config, paths.metrics, paths.best) == tuple(
        os.path.join(paths.root, f) for f in ("config.yaml", "metrics.jsonl", "best.pt"))


def test_killed_writes_are_cleared_and_messages_stay_on_one_line(tmp_path):
    paths = RunPaths(str(tmp_path / "run"))
    os.makedirs(paths.ckpt_dir)
    for folder in (paths.ckpt_dir, paths.root):
        open(os.path.join(folder, ".tmp-abc123.pt"), "wb").write(b"x" * 100)
    atomic_torch_save({"epoch": 1}, paths.epoch_ckpt(1))
    assert sorted(os.path.basename(p) for p in paths.remove_partial_writes()) == [".tmp-abc123.pt"] * 2
    assert os.listdir(paths.ckpt_dir) == ["epoch_0001.pt"]
    with pytest.raises(CheckpointError, match="is a directory; give a checkpoint file"):
        load_checkpoint(paths.root)

    class Payload:
        def __reduce__(self):
            return (print, ("ran",))

    torch.save({"x": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(str(tmp_path / "evil.pt"))
    assert "\n" not in str(e.value) and "evil.pt" in str(e.value)
