"""What a training run reports besides its checkpoints: ``metrics.jsonl`` (one JSON record per training epoch and per
validation) and TensorBoard (every loss term and the learning rate by step, validation scores per class by epoch, an
image grid of input, truth, prediction and edges). Epochs are counted from 1 in both.

Only the main process writes; on the others every method does nothing.
"""
from __future__ import annotations

import json
import os
import time
from typing import Mapping, Optional

import torch

from ..checkpoint import RunPaths
from ..conventions import IGNORE_INDEX, resize_bilinear
from ..data.drawing import colorize
from ..data.labels import LabelSpec
from ..data.loader import collate_samples
from ..data.transforms import batch_input
from ..files import write_bytes

__all__ = ["RunLog"]

_VAL_KEYS = ("mean_f1", "miou", "miou_fg", "pixel_accuracy", "groups", "per_class")


class RunLog:
    """The run's metrics writer.

    Args:
        paths: the run directory.
        enabled: False on every process but the main one.
        log_every: optimiser steps between TensorBoard loss records.
        image_every: epochs between image grids (0: none).
        resume: ``(epochs done, steps done)`` of the checkpoint a resumed run continues from: what the log holds
            beyond it (written after that checkpoint, before the run stopped) is dropped, so no epoch appears twice.
    """

    def __init__(self, paths: RunPaths, *, enabled: bool, log_every: int = 10, image_every: int = 0,
                 resume: Optional[tuple[int, int]] = None) -> None:
        self.paths = paths
        self.enabled = enabled
        self.log_every = max(log_every, 1)
        self.image_every = image_every
        self._tb = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            if resume is not None:
                self._keep_epochs(resume[0])
            self._tb = SummaryWriter(paths.tb, purge_step=resume[1] + 1 if resume is not None else None)

    def _keep_epochs(self, epochs: int) -> None:
        """Rewrite metrics.jsonl (atomically) with the records of the first ``epochs`` epochs only."""
        if not os.path.isfile(self.paths.metrics):
            return
        with open(self.paths.metrics) as f:
            lines = [line for line in f if line.strip()]
        kept = [line for line in lines if json.loads(line).get("epoch", 0) <= epochs]
        if len(kept) != len(lines):
            write_bytes(self.paths.metrics, "".join(kept).encode())

    def _record(self, record: dict) -> None:
        with open(self.paths.metrics, "a") as f:
            f.write(json.dumps({"time": time.time(), **record}) + "\n")

    def step(self, step: int, terms: Mapping[str, float], lr: float) -> None:
        """After optimiser step ``step`` (1-based count of steps done): its loss terms and learning rate."""
        if self._tb is None or step % self.log_every:
            return
        for k, v in terms.items():
            self._tb.add_scalar(f"loss/{k}", v, step)
        self._tb.add_scalar("lr", lr, step)

    def epoch(self, epoch: int, **record) -> None:
        """A training epoch's record (0-based ``epoch``; written 1-based): cycle, step, lr, mean loss terms, seconds."""
        if self.enabled:
            self._record({"type": "train", "epoch": epoch + 1, **record})

    def validation(self, tag: str, epoch: int, scores: Mapping) -> None:
        """Scores of the model ``tag`` (``student`` or ``ensemble_k``) after 0-based ``epoch``."""
        if not self.enabled:
            return
        self._record({"type": "val", "tag": tag, "epoch": epoch + 1, **{k: scores[k] for k in _VAL_KEYS}})
        for k in ("mean_f1", "miou", "pixel_accuracy"):
            self._tb.add_scalar(f"val_{tag}/{k}", scores[k], epoch + 1)
        for c, v in scores["per_class"].items():
            self._tb.add_scalar(f"val_{tag}_f1/{c}", v["f1"], epoch + 1)
            self._tb.add_scalar(f"val_{tag}_iou/{c}", v["iou"], epoch + 1)

    def images(self, epoch: int, model: torch.nn.Module, dataset, spec: LabelSpec, device: torch.device,
               n: int = 4) -> None:
        """Every ``image_every`` epochs, a grid of the first ``n`` samples of ``dataset`` (see :func:`image_grid`)."""
        if self._tb is None or not self.image_every or (epoch + 1) % self.image_every:
            return
        self._tb.add_image("val/input_gt_pred_edges", image_grid(model, dataset, spec, device, n), epoch + 1)

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


@torch.no_grad()
def image_grid(model: torch.nn.Module, dataset, spec: LabelSpec, device: torch.device, n: int = 4) -> torch.Tensor:
    """(3, H, W) grid, one row per sample: input, ground truth, prediction, binary edge, category edge.

    Only the class maps named here are drawn (``parsing``, and DML-CSR's ``edge`` / ``semantic_edge`` when the model
    returns them); other outputs, such as RNN-G's one-channel boundary gate, are left out."""
    from torchvision.utils import make_grid

    batch = collate_samples([dataset[i] for i in range(min(n, len(dataset)))])
    model.eval()
    out = model(batch_input(batch, device))
    size = batch["image"].shape[-2:]
    up = {k: resize_bilinear(v.float(), size).cpu() for k, v in out.items()
          if k in ("parsing", "edge", "semantic_edge") and isinstance(v, torch.Tensor) and v.dim() == 4
          and v.shape[1] >= 2}
    def colour(labels: torch.Tensor) -> torch.Tensor:  # (H, W) class indices -> (3, H, W) RGB in [0, 1]
        return torch.from_numpy(colorize(labels.numpy(), spec.palette)).permute(2, 0, 1).float() / 255

    tiles = []
    for j in range(batch["image"].shape[0]):
        img = batch["image"][j].flip(0).float() / 255  # the loader's uint8 BGR crop, shown in RGB
        gt = batch["label"][j].clone()
        gt[gt == IGNORE_INDEX] = 0
        tiles += [img, colour(gt), colour(up["parsing"][j].argmax(0))]
        for key in ("edge", "semantic_edge"):
            if key in up:
                e = up[key][j].softmax(0)
                tiles.append((1 - e[0]).expand(3, -1, -1) if key == "edge" else colour(e.argmax(0)))
    cols = len(tiles) // batch["image"].shape[0]
    return make_grid(tiles, nrow=cols, padding=2)
