"""Edge losses: weighted cross-entropy for the binary edge map and the category-aware (semantic) edge map.

Targets (at the input resolution, 255 = ignored):
    binary edge  (B, H, W) in {0, 1};
    category edge (B, H, W): the class index on edge pixels, 0 elsewhere (so class 0 doubles as "no edge").

Weights are computed per batch over the non-ignored pixels, as in the authors' code:
    binary:   w_neg = N_pos / N, w_pos = N_neg / N. With ``F.cross_entropy``'s weighted mean this is exactly
              ``(mean CE over edge pixels + mean CE over non-edge pixels) / 2``.
    category, ``mode="balanced"`` (default, our reading of the paper's "weighted cross-entropy" for both edge maps):
              the same positive/negative balance with "positive" = any edge class, i.e.
              w_0 = N_edge / N and w_j = N_non-edge / N for j >= 1.
    category, ``mode="frequency"`` (the authors' code, ``preset: official``): w_j = N_j / N, which favours the frequent
              classes (a frequency, not an inverse frequency).
When the weighted denominator is zero (a batch with no edge pixel, or only edge pixels) the loss falls back to the
unweighted mean over the valid pixels instead of dividing by zero (the authors' code gives NaN there).
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from dml_csr.conventions import IGNORE_INDEX, resize_bilinear

__all__ = ["binary_edge_weights", "semantic_edge_weights", "weighted_ce", "binary_edge_ce", "semantic_edge_ce"]


def binary_edge_weights(target: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Per-batch class weights ``[w_neg, w_pos] = [N_pos / N, N_neg / N]`` over the valid pixels.

    Args:
        target: (B, H, W) int64 in {0, 1, ignore_index}.
    Returns:
        (2,) float32; zeros when no pixel is valid.
    """
    valid = target != ignore_index
    n = valid.sum().float()
    n_pos = ((target == 1) & valid).sum().float()
    n_neg = n - n_pos
    return torch.stack([n_pos, n_neg]) / n.clamp_min(1.0)


def semantic_edge_weights(target: Tensor, num_classes: int, mode: Literal["balanced", "frequency"] = "balanced",
                          ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Per-batch class weights of the category-edge cross-entropy (see the module docstring).

    Args:
        target: (B, H, W) int64 in [0, C) or ignore_index; 0 = no edge.
        num_classes: C.
        mode: ``"balanced"`` (edge vs non-edge balance) or ``"frequency"`` (``N_j / N``, the authors').
    Returns:
        (C,) float32.
    """
    valid = target != ignore_index
    n = valid.sum().float().clamp_min(1.0)
    counts = torch.bincount(target[valid].reshape(-1), minlength=num_classes)[:num_classes].float()
    if mode == "frequency":
        return counts / n
    if mode == "balanced":
        n_non_edge = counts[0]
        n_edge = counts[1:].sum()
        w = (n_non_edge / n).expand(num_classes).clone()
        w[0] = n_edge / n
        return w
    raise ValueError(f"semantic_edge_weights: mode={mode!r}; expected 'balanced' or 'frequency'")


def weighted_ce(logits: Tensor, target: Tensor, weights: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Weighted mean cross-entropy ``sum_i w[y_i] CE_i / sum_i w[y_i]`` over valid pixels, at the target size.

    Args:
        logits: (B, K, h, w); target: (B, H, W) int64; weights: (K,).
    Returns:
        scalar; the unweighted mean if the weights of the present classes sum to zero; 0 if no pixel is valid.
    """
    logits = resize_bilinear(logits.float(), tuple(target.shape[-2:]))
    ce = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="none")  # (B, H, W), 0 on ignored
    valid = target != ignore_index
    w_pix = weights.to(ce.device, ce.dtype)[target.clamp(0, weights.numel() - 1)] * valid
    denom = w_pix.sum()
    weighted = (w_pix * ce).sum() / denom.clamp_min(torch.finfo(ce.dtype).tiny)
    plain = ce.sum() / valid.sum().clamp_min(1)
    return torch.where(denom > 0, weighted, plain)  # no host sync, no division by zero


def binary_edge_ce(logits: Tensor, target: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Binary-edge cross-entropy with per-batch positive/negative balance.

    Args:
        logits: (B, 2, h, w) edge logits; target: (B, H, W) int64 in {0, 1, ignore_index}.
    Returns:
        scalar.
    """
    if logits.shape[1] != 2:
        raise ValueError(f"binary_edge_ce: expected 2 edge logit channels, got {logits.shape[1]}")
    return weighted_ce(logits, target, binary_edge_weights(target, ignore_index), ignore_index)


def semantic_edge_ce(logits: Tensor, target: Tensor, mode: Literal["balanced", "frequency"] = "balanced",
                     ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Category-edge weighted cross-entropy.

    Args:
        logits: (B, C, h, w) category-edge logits; target: (B, H, W) int64 class index on edges, 0 elsewhere.
        mode: weighting, see the module docstring.
    Returns:
        scalar.
    """
    weights = semantic_edge_weights(target, logits.shape[1], mode, ignore_index)
    return weighted_ce(logits, target, weights, ignore_index)
