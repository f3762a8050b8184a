"""Parsing losses: pixel-wise cross-entropy (ignore 255) and Lovasz-softmax, on logits upsampled to the label size.

The network predicts at stride 4; like the authors, every loss first upsamples the logits to the label size
(bilinear, ``align_corners=True``) and computes the loss there.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from dml_csr.conventions import IGNORE_INDEX, resize_bilinear
from dml_csr.losses.lovasz import lovasz_softmax

__all__ = ["parsing_ce", "pixel_ce", "parsing_lovasz"]


def pixel_ce(logits: Tensor, labels: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Per-pixel cross-entropy map.

    Args:
        logits: (B, C, h, w) logits at any resolution.
        labels: (B, H, W) int64; ``ignore_index`` pixels get 0.
    Returns:
        (B, H, W) float: ``-log softmax(logits)[label]`` at the label size, 0 on ignored pixels.
    """
    logits = resize_bilinear(logits.float(), tuple(labels.shape[-2:]))
    return F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="none")


def parsing_ce(logits: Tensor, labels: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Mean cross-entropy over the non-ignored pixels of the batch.

    Args:
        logits: (B, C, h, w); labels: (B, H, W) int64.
    Returns:
        scalar; 0 (attached to the graph) when every pixel is ignored.
    """
    ce = pixel_ce(logits, labels, ignore_index)
    valid = (labels != ignore_index).sum()
    return ce.sum() / valid.clamp_min(1)


def parsing_lovasz(logits: Tensor, labels: Tensor, ignore_index: int = IGNORE_INDEX, per_image: bool = False) -> Tensor:
    """Lovasz-softmax of ``softmax(upsample(logits))`` against ``labels`` (present classes; see ``lovasz.py``).

    Args:
        logits: (B, C, h, w); labels: (B, H, W) int64.
    Returns:
        scalar.
    """
    logits = resize_bilinear(logits.float(), tuple(labels.shape[-2:]))
    return lovasz_softmax(logits.softmax(1), labels, ignore_index=ignore_index, per_image=per_image)
