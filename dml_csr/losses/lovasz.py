"""Lovasz-softmax loss (Berman, Rannen Triki and Blaschko, CVPR 2018), a convex surrogate of the per-class
Jaccard loss 1 - IoU, written from the paper's definition.

For a class ``c`` with foreground set ``F_c`` and pixel errors ``m_i = |[y_i = c] - p_i(c)|`` in ``[0, 1]``, the loss
is the Lovasz extension of the Jaccard set function ``J_c(M) = |M| / |F_c u M|`` evaluated at ``m``:
sort the errors in decreasing order (permutation ``pi``) and take ``sum_k m_pi(k) * (J_c(pi_1..k) - J_c(pi_1..k-1))``.
The class losses are averaged over the classes present in the ground truth (``classes="present"``) or over all
classes (``classes="all"``).

Default variant: **per batch, present classes** (``per_image=False, classes="present"``): all valid pixels of the
batch form one set, as in the authors' training code. A batch-level set is a closer surrogate of the dataset-level
mIoU the paper reports, tiny classes (e.g. earrings, a few dozen pixels in one image) are not averaged with equal
weight against whole-image classes, and it costs one sort instead of one per image. ``per_image=True`` averages the
per-image losses instead (each image with its own present classes).
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

__all__ = ["lovasz_softmax", "lovasz_softmax_flat", "jaccard_increments"]


def jaccard_increments(fg_sorted: Tensor) -> Tensor:
    """Increments of the Jaccard loss along a sorted prefix order.

    Args:
        fg_sorted: (K, P) float in {0, 1}: for each of K rows (classes), the foreground indicator of the P pixels in
            the order of decreasing error.
    Returns:
        (K, P): ``J(pi_1..k) - J(pi_1..k-1)`` for k = 1..P, with ``J(empty) = 0``.
    """
    gts = fg_sorted.sum(1, keepdim=True)  # |F|
    inter = gts - fg_sorted.cumsum(1)  # |F \ M_k|, foreground pixels not yet in the prefix
    union = gts + (1.0 - fg_sorted).cumsum(1)  # |F u M_k|
    # union >= 1 from the first element on (either it is foreground, so |F| >= 1, or it adds to M)
    jac = 1.0 - inter / union.clamp_min(1.0)
    return torch.cat([jac[:, :1], jac[:, 1:] - jac[:, :-1]], 1)


def lovasz_softmax_flat(probs: Tensor, labels: Tensor,
                        classes: Literal["present", "all"] = "present") -> Tensor:
    """Lovasz-softmax over a flat set of pixels.

    Args:
        probs: (P, C) class probabilities (rows sum to 1), valid pixels only.
        labels: (P,) int64 in [0, C).
        classes: average over the classes present in ``labels`` or over all C.
    Returns:
        scalar; 0 (attached to the graph) when there is no pixel or no present class.
    """
    if probs.numel() == 0:
        return probs.sum() * 0.0
    num_classes = probs.shape[1]
    fg = torch.nn.functional.one_hot(labels, num_classes).to(probs.dtype).t()  # (C, P): one sort per class row
    errors = (fg - probs.t()).abs()
    errors_sorted, perm = torch.sort(errors, dim=1, descending=True)
    fg_sorted = torch.gather(fg, 1, perm)
    per_class = (errors_sorted * jaccard_increments(fg_sorted)).sum(1)  # (C,)
    if classes == "present":
        present = (fg.sum(1) > 0).to(per_class.dtype)  # no host sync; 0 when no class is present
        return (per_class * present).sum() / present.sum().clamp_min(1.0)
    if classes == "all":
        return per_class.mean()
    raise ValueError(f"lovasz_softmax: classes={classes!r}; expected 'present' or 'all'")


def lovasz_softmax(probs: Tensor, labels: Tensor, ignore_index: int = 255, per_image: bool = False,
                   classes: Literal["present", "all"] = "present") -> Tensor:
    """Lovasz-softmax of a batch of probability maps.

    Args:
        probs: (B, C, H, W) probabilities (softmax of logits at the label size).
        labels: (B, H, W) int64 class indices; ``ignore_index`` pixels are left out.
        ignore_index: label value of pixels to ignore.
        per_image: average per-image losses (True) or treat the batch as one set of pixels (False, default).
        classes: ``"present"`` (default) or ``"all"``.
    Returns:
        scalar loss.
    """
    if probs.dim() != 4 or labels.shape != (probs.shape[0],) + probs.shape[2:]:
        raise ValueError(f"lovasz_softmax: expected probs (B,C,H,W) and labels (B,H,W); got {tuple(probs.shape)} "
                         f"and {tuple(labels.shape)}")

    def flat(p: Tensor, y: Tensor) -> Tensor:
        p = p.movedim(1, -1).reshape(-1, p.shape[1])
        y = y.reshape(-1)
        keep = y != ignore_index
        return lovasz_softmax_flat(p[keep], y[keep], classes)

    if per_image:
        return torch.stack([flat(probs[i:i + 1], labels[i:i + 1]) for i in range(probs.shape[0])]).mean()
    return flat(probs, labels)
