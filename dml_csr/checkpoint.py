"""Checkpoint files: one fixed schema, atomic writes, ``weights_only`` loads.

A checkpoint is a plain dict::

    {
      "format": "dml_csr/1",
      "model": state_dict,                  # our parameter names
      "meta": {"classes": [...], "dataset": str, "num_classes": int,
               "channel_order": "BGR"|"RGB", "mean": [3], "std": [3], "input_size": [h, w],
               "model_name": str},
      "config": resolved config dict,       # enough to rebuild the model
      # training state (optional): "optimizer", "scheduler", "scaler", "csr", "epoch", "step", "rng", ...
    }

The metadata alone is enough for prediction: class names and the input convention travel with the weights.
"""
from __future__ import annotations

import os
import tempfile
from typing import Any, Optional

import torch

__all__ = ["FORMAT", "CheckpointError", "make_meta", "save_checkpoint", "load_checkpoint", "atomic_torch_save"]

FORMAT = "dml_csr/1"


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used; the message names the file and what is wrong."""


def make_meta(cfg) -> dict:
    """Checkpoint metadata from a :class:`dml_csr.config.Config`."""
    from .data.labels import get_spec

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
