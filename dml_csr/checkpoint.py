"""Checkpoint files and run directories: one fixed schema, atomic writes, ``weights_only`` loads, and where a run
keeps what it writes (:class:`RunPaths`) and resumes from (:func:`find_resume_checkpoint`).

A checkpoint is a plain dict::

    {
      "format": "dml_csr/1",
      "model": state_dict,                  # our parameter names
      "meta": {"classes": [...], "dataset": str, "num_classes": int,
               "channel_order": "BGR"|"RGB", "mean": [3], "std": [3], "input_size": [h, w],
               "model_name": str},
      "config": resolved config dict,       # enough to rebuild the model
      # training state (epoch checkpoints): "optimizer", "scaler", "train_state", "csr", "rng"
      # best.pt: "epoch", "tag" (student or ensemble_k), "val_mean_f1"
    }

The metadata alone is enough for prediction: class names and the input convention travel with the weights.

A run directory ``runs/<name>/`` holds ``config.yaml``, ``metrics.jsonl``, ``tb/``, ``checkpoints/epoch_NNNN.pt`` and
``best.pt``.
"""
from __future__ import annotations

import glob
import os
import re
import tempfile
from typing import Any, Optional

import torch

from .data.labels import get_spec

__all__ = ["FORMAT", "CheckpointError", "make_meta", "save_checkpoint", "load_checkpoint", "atomic_torch_save",
           "RunPaths", "find_resume_checkpoint"]

FORMAT = "dml_csr/1"


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used; the message names the file and what is wrong."""


def make_meta(cfg) -> dict:
    """Checkpoint metadata from a :class:`dml_csr.config.Config`."""
    spec = get_spec(cfg.data.dataset)
    return {
        "classes": list(spec.classes),
        "dataset": spec.name,
        "num_classes": spec.num_classes,
        "channel_order": cfg.model.channel_order,
        "mean": list(cfg.model.mean),
        "std": list(cfg.model.std),
        "input_size": list(cfg.data.input_size),
        "model_name": cfg.model.name,
    }


def atomic_torch_save(obj: Any, path: str) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename: a crash never leaves half a file."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pt", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(path: str, model_state: dict, meta: dict, config: Optional[dict] = None, **extra: Any) -> None:
    """Write a checkpoint in our schema, atomically."""
    ckpt = {"format": FORMAT, "model": model_state, "meta": meta, "config": config or {}}
    ckpt.update(extra)
    atomic_torch_save(ckpt, path)


def load_checkpoint(path: str, map_location: Any = "cpu") -> dict:
    """Load any checkpoint file with ``weights_only=True``; errors name the file."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # corrupt, truncated, or holding non-tensor objects
        raise CheckpointError(f"checkpoint '{path}' cannot be loaded with weights_only=True: {e}") from None


class RunPaths:
    """The files of one run directory (``runs/<name>/``, see the module docstring)."""

    def __init__(self, run_dir: str):
        self.root = run_dir
        self.config = os.path.join(run_dir, "config.yaml")
        self.metrics = os.path.join(run_dir, "metrics.jsonl")
        self.tb = os.path.join(run_dir, "tb")
        self.ckpt_dir = os.path.join(run_dir, "checkpoints")
        self.best = os.path.join(run_dir, "best.pt")

    def epoch_ckpt(self, epoch: int) -> str:
        return os.path.join(self.ckpt_dir, f"epoch_{epoch:04d}.pt")

    def checkpoints(self) -> list[str]:
        """The epoch checkpoints, oldest first."""
        files = glob.glob(os.path.join(self.ckpt_dir, "epoch_*.pt"))
        return sorted(files, key=lambda p: int(re.findall(r"epoch_(\d+)", p)[-1]))

    def prune(self, keep: int) -> None:
        """Delete all but the newest ``keep`` (at least one) epoch checkpoints."""
        for old in self.checkpoints()[:-max(keep, 1)]:
            os.remove(old)


def find_resume_checkpoint(target: str) -> str:
    """A checkpoint file, or the newest epoch checkpoint of a run directory."""
    if os.path.isfile(target):
        return target
    if os.path.isdir(target):
        ckpts = RunPaths(target).checkpoints()
        if ckpts:
            return ckpts[-1]
        raise CheckpointError(f"run directory '{target}' has no checkpoints/epoch_*.pt to resume from")
    raise CheckpointError(f"--resume '{target}' is neither a checkpoint file nor a run directory")
