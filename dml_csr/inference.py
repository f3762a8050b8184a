"""Prediction shared by evaluation, the inference API, the predict CLI and export checks.

``predict_probs`` runs a model over a batch at one or several scales, optionally with horizontal-flip testing, and
returns class probabilities at a requested size. Flip testing mirrors the prediction back and swaps left/right
channels with the label registry's permutation.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from .conventions import KEYPOINTS_MIRRORED, resize_bilinear
from .models.precision import autocast_context, to_model_input

__all__ = ["predict_probs"]


@torch.no_grad()
def predict_probs(model: torch.nn.Module, images: torch.Tensor, *, size: Optional[Sequence[int]] = None,
                  scales: Sequence[float] = (1.0,), flip_perm: Optional[Sequence[int]] = None,
                  precision: str = "fp32", channels_last: bool = False,
                  keypoints: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Class probabilities, averaged over scales (and flips).

    Args:
        model: returns ``{"parsing": (B, C, h, w)}`` logits.
        images: (B, 3, H, W) normalised input.
        size: output (height, width); defaults to the input's.
        scales: input rescaling factors; the average of the softmax outputs is returned.
        flip_perm: when given, also run on the mirrored input; ``flip_perm[c]`` is the class ``c`` becomes mirrored.
        precision, channels_last: the fast path (autocast dtype, memory format); fp32 is the reference.
        keypoints: (B, 5, 2) pixels of ``images``, passed on (scaled and mirrored with each input) to models that
            place crops from them (``model(x, keypoints=...)``).
    Returns:
        (B, C, *size) float32 probabilities.
    """
    size = tuple(size or images.shape[-2:])
    h, w = images.shape[-2:]
    total, n = None, 0
    for s in scales:
        x = images if s == 1.0 else resize_bilinear(images, (max(1, round(h * s)), max(1, round(w * s))))
        variants = [(x, False)] + ([(torch.flip(x, dims=[3]), True)] if flip_perm is not None else [])
        for inp, flipped in variants:
            kwargs = {} if keypoints is None else {"keypoints": _move_keypoints(keypoints, (h, w), x.shape[-2:],
                                                                                  flipped)}
            with autocast_context(inp.device, precision):
                logits = model(to_model_input(inp, channels_last), **kwargs)["parsing"]
            logits = resize_bilinear(logits.float(), size)
            p = torch.softmax(logits.float(), dim=1)
            if flipped:
                p = torch.flip(p, dims=[3])[:, torch.as_tensor(flip_perm, device=p.device)]
            total = p if total is None else total + p
            n += 1
    return total / n


def _move_keypoints(kp: torch.Tensor, src: Sequence[int], dst: Sequence[int], flipped: bool) -> torch.Tensor:
    """Keypoints of an (h, w) image on its resize to ``dst`` (corners aligned), mirrored (and reordered) if flipped."""
    fy = (dst[0] - 1) / max(src[0] - 1, 1)
    fx = (dst[1] - 1) / max(src[1] - 1, 1)
    out = kp.float() * torch.tensor([fx, fy], device=kp.device)
    if flipped:
        out = torch.stack([(dst[1] - 1) - out[..., 0], out[..., 1]], -1)[:, list(KEYPOINTS_MIRRORED)]
    return out
