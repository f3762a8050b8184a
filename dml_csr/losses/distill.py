"""Self-distillation losses (paper eq. 7): KL divergence from the teacher's soft labels to the student's prediction.

Per pixel, ``KL(p_t || p_s) = sum_c p_t,c (log p_t,c - log p_s,c)`` with ``p = softmax(logits / T)``, averaged over
the valid (non-ignored) pixels and multiplied by ``T^2`` (so gradients keep their scale when T changes). Both maps are
upsampled to the label size first, like the supervised losses. The teacher is detached. For identical logits the
two log-softmaxes are bitwise equal, so the loss is exactly 0.

Reduction: the mean over the valid pixels. The authors' code calls ``kl_div(..., reduction="batchmean")`` on tensors
flattened to (pixels, C), where the "batch" is the pixels: the same per-pixel mean (checked against their totals in
the tests).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from dml_csr.conventions import IGNORE_INDEX, resize_bilinear

__all__ = ["kl_distill", "mix_with_onehot"]


def kl_distill(student_logits: Tensor, teacher_logits: Tensor, valid: Optional[Tensor] = None,
               temperature: float = 1.0, size: Optional[tuple[int, int]] = None) -> Tensor:
    """Mean per-pixel KL(teacher || student) times T^2.

    Args:
        student_logits: (B, K, h, w) logits of the model being trained.
        teacher_logits: (B, K, h', w') logits of the teacher (detached here).
        valid: optional (B, H, W) bool mask of pixels to average over; its size is the loss size.
        temperature: T > 0.
        size: (H, W) loss size when ``valid`` is None (default: the student's size).
    Returns:
        scalar >= 0; 0 (attached to the graph) when no pixel is valid.
    """
    if temperature <= 0:
        raise ValueError(f"kl_distill: temperature must be > 0, got {temperature}")
    if student_logits.shape[:2] != teacher_logits.shape[:2]:
        raise ValueError(f"kl_distill: student {tuple(student_logits.shape)} and teacher "
                         f"{tuple(teacher_logits.shape)} disagree in batch or channels")
    if valid is not None:
        size = tuple(valid.shape[-2:])
    elif size is None:
        size = tuple(student_logits.shape[-2:])
    s = resize_bilinear(student_logits.float(), size)
    t = resize_bilinear(teacher_logits.detach().float(), size)
    log_ps = F.log_softmax(s / temperature, dim=1)
    log_pt = F.log_softmax(t / temperature, dim=1)
    kl = F.kl_div(log_ps, log_pt, reduction="none", log_target=True).sum(1)  # (B, H, W)
    if valid is None:
        return kl.mean() * temperature ** 2
    valid = valid.to(kl.dtype)
    return (kl * valid).sum() / valid.sum().clamp_min(1.0) * temperature ** 2


def mix_with_onehot(teacher_logits: Tensor, target: Tensor, weight: float,
                    ignore_index: int = IGNORE_INDEX) -> Tensor:
    """The authors' (and SCHP's) refined target: ``(1 - a) * teacher_logits + a * onehot(target)`` in logit space.

    Args:
        teacher_logits: (B, K, h, w); upsampled to the target size.
        target: (B, H, W) int64 hard labels; ignored pixels get a zero one-hot.
        weight: a in [0, 1]; the authors use ``1 / (cycle + 1)``.
    Returns:
        (B, K, H, W) float32.
    """
    t = resize_bilinear(teacher_logits.detach().float(), tuple(target.shape[-2:]))
    valid = target != ignore_index
    onehot = F.one_hot(torch.where(valid, target, torch.zeros_like(target)), t.shape[1])
    onehot = (onehot * valid.unsqueeze(-1)).movedim(-1, 1).to(t.dtype)
    return (1.0 - weight) * t + weight * onehot
