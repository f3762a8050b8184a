"""Dual edge-attention losses (paper eq. 3 and 4): the parsing cross-entropy re-weighted on ground-truth edges.

With ``L_i`` the (H, W) parsing cross-entropy map of image i (0 on ignored pixels), ``B_i`` its binary edge mask and
``C_ij`` its mask of category-j edge pixels:

    eq. 3   L_attn^b = 1/N   sum_i            (1 / b_i)  * sum(L_i * B_i)
    eq. 4   L_attn^c = 1/(N C) sum_i sum_j w_j (1 / c_ij) * sum(L_i * C_ij)

``b_i`` and ``c_ij`` are the edge-pixel counts. A term whose count is zero is 0 (not NaN): an image without edge pixels
contributes nothing but still counts in N, as the formula reads. In the category-edge target, 0 means "no edge", so
j runs over 1..C-1 (a background-class edge pixel cannot be told apart from a non-edge one); the normaliser stays
N*C as printed in the paper. ``w_j`` (C weights, default all ones) lift tail classes; ``w_0`` is unused.

The authors' code computes something else for the category term (:func:`official_category_attention`): per image the
sum of ``L_i`` times the category-edge *value* (the class index j) over its category-edge pixels, divided by their
count, then the mean over the batch: no w_j, no per-class mean, no 1/C. Their binary term is eq. 3 with ``b_i``
counting the edge pixels whose label is ignored too (``count_ignored``). Both divide by zero on an image without edges
(NaN); here that image gives 0.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from dml_csr.conventions import IGNORE_INDEX
from dml_csr.losses.parsing import pixel_ce

__all__ = ["binary_edge_attention", "semantic_edge_attention", "official_category_attention"]


def binary_edge_attention(parsing_logits: Tensor, labels: Tensor, edge: Tensor, ce_map: Optional[Tensor] = None,
                          ignore_index: int = IGNORE_INDEX, count_ignored: bool = False) -> Tensor:
    """Binary edge-attention loss, eq. 3.

    Args:
        parsing_logits: (B, C, h, w) parsing logits (upsampled to the label size inside).
        labels: (B, H, W) int64 parsing labels, ``ignore_index`` ignored.
        edge: (B, H, W) int64 binary edge target in {0, 1, ignore_index}.
        ce_map: optional precomputed ``pixel_ce(parsing_logits, labels)`` (B, H, W) to save a pass.
        count_ignored: ``b_i`` also counts edge pixels whose label is ignored (the authors'; their CE is 0).
    Returns:
        scalar, >= 0; exactly 0 when no image has an edge pixel.
    """
    if ce_map is None:
        ce_map = pixel_ce(parsing_logits, labels, ignore_index)
    mask = (edge == 1) if count_ignored else (edge == 1) & (labels != ignore_index)
    mask = mask.to(ce_map.dtype)
    counts = mask.flatten(1).sum(1)  # b_i
    per_image = (ce_map * mask).flatten(1).sum(1) / counts.clamp_min(1.0)
    return per_image.mean()


def semantic_edge_attention(parsing_logits: Tensor, labels: Tensor, semantic_edge: Tensor,
                            class_weights: Optional[Sequence[float] | Tensor] = None, ce_map: Optional[Tensor] = None,
                            ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Category edge-attention loss, eq. 4.

    Args:
        parsing_logits: (B, C, h, w) parsing logits.
        labels: (B, H, W) int64 parsing labels.
        semantic_edge: (B, H, W) int64, class index j on edge pixels, 0 elsewhere, ``ignore_index`` ignored.
        class_weights: w_j, C values (default all ones).
        ce_map: optional precomputed (B, H, W) parsing cross-entropy map.
    Returns:
        scalar, >= 0; exactly 0 when no image has an edge pixel.
    """
    b, num_classes = parsing_logits.shape[0], parsing_logits.shape[1]
    if ce_map is None:
        ce_map = pixel_ce(parsing_logits, labels, ignore_index)
    if class_weights is None:
        w = torch.ones(num_classes, device=ce_map.device, dtype=ce_map.dtype)
    else:
        w = torch.as_tensor(class_weights, device=ce_map.device, dtype=ce_map.dtype)
        if w.numel() != num_classes:
            raise ValueError(f"semantic_edge_attention: {w.numel()} class weights for {num_classes} classes; "
                             f"set loss.class_weights to {num_classes} values or null")
    valid = (labels != ignore_index) & (semantic_edge != ignore_index)
    index = torch.where(valid, semantic_edge, torch.zeros_like(semantic_edge)).flatten(1)  # ignored -> bin 0 (unused)
    sums = ce_map.new_zeros(b, num_classes).scatter_add_(1, index, ce_map.flatten(1) * valid.flatten(1))
    counts = ce_map.new_zeros(b, num_classes).scatter_add_(1, index, valid.flatten(1).to(ce_map.dtype))
    per_class = sums / counts.clamp_min(1.0)  # (B, C): mean CE over each class's edge pixels, 0 if none
    per_class = per_class[:, 1:] * w[1:]
    return per_class.sum() / (b * num_classes)


def official_category_attention(parsing_logits: Tensor, labels: Tensor, semantic_edge: Tensor,
                                ce_map: Optional[Tensor] = None, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """The authors' category edge-attention term (see the module docstring): per image
    ``sum(L_i * j on category-edge pixels) / (their count)``, 0 for an image without any, mean over the batch.

    Args:
        parsing_logits: (B, C, h, w); labels: (B, H, W) int64; semantic_edge: (B, H, W) int64, class index on edge
            pixels, 0 elsewhere, ``ignore_index`` ignored (counted as no edge).
        ce_map: optional precomputed (B, H, W) parsing cross-entropy map.
    Returns:
        scalar, >= 0.
    """
    if ce_map is None:
        ce_map = pixel_ce(parsing_logits, labels, ignore_index)
    value = torch.where(semantic_edge == ignore_index, torch.zeros_like(semantic_edge), semantic_edge).to(ce_map.dtype)
    counts = (value > 0).to(ce_map.dtype).flatten(1).sum(1)  # c_i
    return ((ce_map * value).flatten(1).sum(1) / counts.clamp_min(1.0)).mean()
