"""Checkpoint files and run directories: one fixed schema, atomic writes, ``weights_only`` loads, and where a run
keeps what it writes (:class:`RunPaths`) and resumes from (:func:`find_resume_checkpoint`).

A checkpoint is a plain dict; every key any writer puts in it::

    {
      "format": "dml_csr/1",
      "model": state_dict,                  # our parameter names
      "meta": {                             # make_meta(): what prediction needs
          "classes": [...], "dataset": str, "num_classes": int,
          "channel_order": "BGR"|"RGB", "mean": [3], "std": [3], "input_size": [h, w], "model_name": str,
          "crop": {...},                    # checkpoints a training writes: how its faces were cropped
                                            # (dml_csr.data.face_template; {"kind": "whole_image"} without one)
          "source": "official",             # checkpoints converted from the authors' files
      },
      "config": resolved config dict,       # enough to rebuild the model
      # epoch and stop checkpoints (checkpoints/epoch_*.pt), what a resume reads:
      "optimizer": state_dict, "scaler": GradScaler state_dict,
      "train_state": {"epoch", "step", "batches_done", "best_score", "best_mean_f1", "best_epoch", "epoch_sums"},
      "csr": {"best_state", "phase1_best", "teacher_state", "running_sum": {"count", "sums", "last"}},
      "rng": {"torch", "numpy", "cuda" (where CUDA is)},   # for the record: nothing restores them
      # best.pt: the epoch (from 1) and model it holds, "student" or "ensemble_<k>", and its validation scores
      "epoch": int, "tag": str, "select_metric": "mean_f1"|"overall_f1"|"miou", "val_score": float,
      "val_mean_f1": float,
      # scripts/convert_official.py: the authors' file it was converted from
      "source_file": str,
    }

The metadata alone is enough for prediction: class names and the input convention travel with the weights.

A run directory ``runs/<name>/`` holds ``config.yaml``, ``metrics.jsonl``, ``tb/``, ``checkpoints/epoch_NNNN.pt`` (after
N epochs), ``checkpoints/epoch_NNNN_batch_MMMMMM.pt`` (a stop M batches into epoch N + 1) and ``best.pt``.
"""
from __future__ import annotations

import glob
import os
import re
from typing import Any, Optional

import torch

from .config import Config
from .data.labels import LabelSpec, label_spec
from .files import atomic_write, remove_partial_writes

__all__ = ["FORMAT", "CheckpointError", "make_meta", "save_checkpoint", "load_checkpoint", "atomic_torch_save",
           "RunPaths", "find_resume_checkpoint"]

FORMAT = "dml_csr/1"


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used; the message names the file and what is wrong."""


def make_meta(cfg: Config, spec: Optional[LabelSpec] = None, **extra: Any) -> dict:
    """Checkpoint metadata: the class layout ``spec`` (default: :func:`dml_csr.data.labels.label_spec` of ``cfg``) and the
    input convention and model of ``cfg``; ``extra`` adds the optional keys of the schema (``crop``, ``source``).

    The one builder of a meta: the authors' files get theirs from a config of the defaults, whose input convention is
    theirs (:mod:`dml_csr.conventions`; :func:`dml_csr.loading.official_meta`)."""
    spec = label_spec(cfg) if spec is None else spec
    return {
        "classes": list(spec.classes),
        "dataset": spec.name,
        "num_classes": spec.num_classes,
        "channel_order": cfg.model.channel_order,
        "mean": list(cfg.model.mean),
        "std": list(cfg.model.std),
        "input_size": list(cfg.data.input_size),
        "model_name": cfg.model.name,
        **extra,
    }


def atomic_torch_save(obj: Any, path: str) -> None:
    """``torch.save`` through :func:`dml_csr.files.atomic_write` (a failure is a :class:`~dml_csr.files.WriteError`
    naming ``path``)."""
    atomic_write(path, lambda f: torch.save(obj, f), suffix=".pt")


def save_checkpoint(path: str, model_state: dict, meta: dict, config: Optional[dict] = None, **extra: Any) -> None:
    """Write a checkpoint in our schema, atomically."""
    ckpt = {"format": FORMAT, "model": model_state, "meta": meta, "config": config or {}}
    ckpt.update(extra)
    atomic_torch_save(ckpt, path)


def load_checkpoint(path: str, map_location: Any = "cpu") -> dict:
    """Load any checkpoint file with ``weights_only=True``; errors name the file."""
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint '{path}' is a directory; give a checkpoint file (a run directory's is "
                              f"checkpoints/epoch_NNNN.pt or best.pt)")
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # corrupt, truncated, or holding non-tensor objects
        first = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise CheckpointError(f"checkpoint '{path}' cannot be loaded with weights_only=True (corrupt, truncated, or "
                              f"holding objects other than tensors and plain values): {first[:200]}") from None


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
        """The checkpoint after ``epoch`` epochs."""
        return os.path.join(self.ckpt_dir, f"epoch_{epoch:04d}.pt")

    def stop_ckpt(self, epoch: int, batches: int) -> str:
        """The checkpoint of a stop ``batches`` batches into the epoch after ``epoch`` epochs."""
        return os.path.join(self.ckpt_dir, f"epoch_{epoch:04d}_batch_{batches:06d}.pt")

    @staticmethod
    def _position(path: str) -> tuple[int, int]:
        m = re.search(r"epoch_(\d+)(?:_batch_(\d+))?\.pt$", path)
        return int(m.group(1)), int(m.group(2) or 0)

    def checkpoints(self) -> list[str]:
        """The epoch and stop checkpoints, oldest first."""
        files = [p for p in glob.glob(os.path.join(self.ckpt_dir, "epoch_*.pt"))
                 if re.search(r"epoch_\d+(_batch_\d+)?\.pt$", p)]
        return sorted(files, key=self._position)

    def remove_partial_writes(self) -> list[str]:
        """Delete the temporary files of checkpoint writes that never finished (a kill during ``torch.save``)."""
        return remove_partial_writes(self.root, self.ckpt_dir, pattern=".tmp-*.pt")

    def prune(self, keep: int) -> None:
        """Keep the newest ``keep`` (at least one) epoch checkpoints, and the stop checkpoints newer than them."""
        ckpts = self.checkpoints()
        clean = [p for p in ckpts if self._position(p)[1] == 0]
        for old in clean[:-max(keep, 1)]:
            os.remove(old)
        if clean:
            newest = self._position(clean[-1])
            for stop in ckpts:
                if self._position(stop)[1] and self._position(stop) < newest:
                    os.remove(stop)


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
