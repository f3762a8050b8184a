"""Face-parsing metrics from one confusion matrix pooled over a whole split.

Conventions (the authors' ``utils/miou.py`` protocol, stated so results are comparable):
- one confusion matrix over every pixel of the split (not an average of per-image scores); label 255 is ignored;
- per-class F1 = 2 TP / (2 TP + FP + FN) and IoU = TP / (TP + FP + FN); a class absent from both prediction and
  ground truth has an undefined score (NaN) and is left out of the means;
- ``mean_f1``: mean over every class but background; ``miou``: mean over all classes *including* background (the
  authors' number); ``miou_fg``: the same without background;
- merged sets (eyes, brows, mouth, Helen's ``overall``): the classes of the set are merged into one before scoring,
  so confusion *inside* the set counts as correct.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from ..conventions import IGNORE_INDEX

__all__ = ["ConfusionMatrix", "scores_from_confusion", "f1_iou_from_confusion", "merged_f1", "format_scores",
           "selection_score"]


class ConfusionMatrix:
    """Accumulates a (C, C) confusion matrix, rows = ground truth, columns = prediction."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.mat = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred, target) -> None:
        """Add a prediction/ground-truth pair of label maps (any matching shape; tensors or arrays)."""
        pred = torch.as_tensor(pred).reshape(-1).to(torch.int64).cpu()
        target = torch.as_tensor(target).reshape(-1).to(torch.int64).cpu()
        if pred.shape != target.shape:
            raise ValueError(f"prediction has {pred.numel()} pixels but the label map has {target.numel()}")
        keep = target != self.ignore_index
        pred, target = pred[keep], target[keep]
        bad = (target < 0) | (target >= self.num_classes)
        if bad.any():
            raise ValueError(f"label values {sorted(set(target[bad].tolist()))[:10]} outside [0, {self.num_classes})")
        if ((pred < 0) | (pred >= self.num_classes)).any():
            raise ValueError(f"predicted labels outside [0, {self.num_classes})")
        self.mat += torch.bincount(target * self.num_classes + pred, minlength=self.num_classes ** 2).reshape(
            self.num_classes, self.num_classes)

    def all_reduce(self) -> None:
        """Sum the matrices of all processes (no-op without torch.distributed)."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            t = self.mat.clone()
            if torch.distributed.get_backend() == "nccl":
                t = t.cuda()
            torch.distributed.all_reduce(t)
            self.mat = t.cpu()

    def compute(self, classes: Optional[Sequence[str]] = None, groups: Optional[dict] = None,
                f1_classes: Optional[Sequence[int]] = None) -> dict:
        """:func:`scores_from_confusion` of the accumulated matrix."""
        return scores_from_confusion(self.mat.numpy(), classes, groups, f1_classes)


def f1_iou_from_confusion(mat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class F1 and IoU (NaN where the class is in neither prediction nor ground truth)."""
    mat = np.asarray(mat, np.float64)
    tp = np.diag(mat)
    fp = mat.sum(0) - tp
    fn = mat.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
        iou = np.where(tp + fp + fn > 0, tp / (tp + fp + fn), np.nan)
    return f1, iou


def merged_f1(mat: np.ndarray, members: Sequence[int]) -> float:
    """F1 of a merged set of classes: confusion among the members counts as correct."""
    mat = np.asarray(mat, np.float64)
    m = list(members)
    tp = mat[np.ix_(m, m)].sum()
    fp = mat[:, m].sum() - tp
    fn = mat[m, :].sum() - tp
    return float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn > 0 else float("nan")


def _nanmean(x: np.ndarray) -> float:
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else float("nan")


def scores_from_confusion(mat: np.ndarray, classes: Optional[Sequence[str]] = None,
                          groups: Optional[dict] = None, f1_classes: Optional[Sequence[int]] = None) -> dict:
    """All scores as a JSON-ready dict: per-class F1/IoU, mean F1 (over ``f1_classes``, by default every class but
    background), mIoU (with and without background), pixel accuracy, and the F1 of each merged group."""
    mat = np.asarray(mat)
    n = mat.shape[0]
    classes = list(classes) if classes is not None else [str(i) for i in range(n)]
    f1, iou = f1_iou_from_confusion(mat)
    total = mat.sum()
    out = {
        "pixel_accuracy": float(np.trace(mat) / total) if total else float("nan"),
        "mean_f1": _nanmean(f1[1:] if f1_classes is None else f1[list(f1_classes)]),
        "miou": _nanmean(iou),
        "miou_fg": _nanmean(iou[1:]),
        "per_class": {c: {"f1": float(f), "iou": float(i), "pixels": int(mat[k].sum())}
                      for k, (c, f, i) in enumerate(zip(classes, f1, iou))},
        "groups": {g: merged_f1(mat, m) for g, m in (groups or {}).items()},
    }
    return out


def selection_score(scores: dict, metric: str) -> float:
    """The score that picks the best model (``eval.select_metric``): ``mean_f1``, ``miou`` or ``overall_f1`` (the
    merged ``overall`` group: Helen's brows + eyes + nose + mouth)."""
    if metric == "overall_f1":
        if "overall" not in scores.get("groups", {}):
            raise KeyError(f"eval.select_metric = overall_f1, but these scores have no 'overall' group (groups: "
                           f"{', '.join(scores.get('groups', {})) or 'none'})")
        return scores["groups"]["overall"]
    if metric not in ("mean_f1", "miou"):
        raise ValueError(f"eval.select_metric = {metric!r}; expected mean_f1, overall_f1 or miou")
    return scores[metric]


def _pct(x: float) -> str:
    return "   n/a" if x != x else f"{100 * x:6.2f}"


def format_scores(scores: dict) -> str:
    """A plain-text table of :func:`scores_from_confusion`'s output (percentages; n/a = class in neither prediction
    nor ground truth)."""
    rows = scores["per_class"]
    width = max([len("class")] + [len(c) for c in rows] + [len(g) + 2 for g in scores.get("groups", {})])
    lines = [f"{'class':<{width}}      F1     IoU      pixels"]
    for c, r in rows.items():
        lines.append(f"{c:<{width}}  {_pct(r['f1'])}  {_pct(r['iou'])}  {r['pixels']:>10d}")
    lines.append("-" * len(lines[0]))
    if scores.get("groups"):
        lines.append("merged sets, F1 (confusion inside a set counts as correct):")
    for g, v in scores.get("groups", {}).items():
        lines.append(f"{'  ' + g:<{width}}  {_pct(v)}")
    lines.append(f"{'mean F1':<{width}}  {_pct(scores['mean_f1'])}   (foreground classes)")
    lines.append(f"{'mIoU':<{width}}  {_pct(scores['miou'])}   (all classes, background included)")
    lines.append(f"{'mIoU fg':<{width}}  {_pct(scores['miou_fg'])}   (background excluded)")
    lines.append(f"{'pixel acc':<{width}}  {_pct(scores['pixel_accuracy'])}")
    return "\n".join(lines)
