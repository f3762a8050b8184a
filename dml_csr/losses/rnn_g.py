"""Losses of RNN-G (Liu et al. 2017, Sec. 3.3 and 5.1): coarse CE, boundary-gate CE with 1:5 sampling, final CE.

Terms (each returned unweighted; ``total`` is their weighted sum):

    coarse_ce   cross-entropy of the CNN's coarse logits (``outputs["coarse"]``), ignore 255
    gate_ce     the gate logit map (``outputs["gate"]``) against ground-truth boundaries: target 0 on a boundary,
                1 elsewhere; every boundary pixel counts and non-boundary pixels are sampled at random, five per
                boundary pixel of the same image (the paper's 1:5 positive:negative ratio)
    parsing_ce  cross-entropy of the final output (``outputs["parsing"]``), ignore 255
    stage1_ce   two-stage models only: CE of the first stage's own logits (``outputs["stage1"]``)

With the paper's two stages the first stage parses background, face and hair: its ``coarse_ce`` and ``stage1_ce``
take the label mapped to those three (``stage1_map``, every class but background and hair being face).
    part_ce     two-stage models only: mean CE of the component networks on their crops (``outputs["part/<name>"]``,
                labels cropped from ``batch["label"]`` with the same boxes ``outputs["box/<name>"]``)

A model output with only ``"parsing"`` (eval mode) gets ``parsing_ce`` alone. The paper's baselines (Sec. 5.2) have
fewer outputs: the ungated RNN and CNN-Deep no ``gate``, CNN-S neither ``gate`` nor ``coarse``; each gets the terms
of what it returns.

``background_ratio`` (the paper's Multi-Face setting, 5): the label terms count every foreground pixel and, per
image, a random sample of background (class 0) pixels of ``background_ratio`` times their number
(:func:`sample_background`).
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from dml_csr.conventions import IGNORE_INDEX
from dml_csr.face_parts import Part, crop_labels
from dml_csr.losses.parsing import parsing_ce

__all__ = ["RNN_G_TERMS", "STAGE_WEIGHTS", "RNNGLoss", "rnn_g_loss", "gate_targets", "sample_gate_pixels", "gate_ce",
           "sample_background"]

RNN_G_TERMS = ("parsing_ce", "coarse_ce", "gate_ce", "stage1_ce", "part_ce")
# the paper's order of training (``model.rnn_train: staged``): the first stage with its three losses, then the
# component networks on their crops; the other terms are still computed and logged, with weight 0
STAGE_WEIGHTS = {1: {"parsing_ce": 0.0, "part_ce": 0.0},
                 2: {"parsing_ce": 0.0, "coarse_ce": 0.0, "gate_ce": 0.0, "stage1_ce": 0.0}}


def gate_targets(edge: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Gate targets at the gate resolution from full-resolution boundaries.

    Args:
        edge: (B, H, W) integer boundaries from the data loader: 1 boundary, 0 not, 255 ignored.
        size: (h, w) of the gate map; a cell is a boundary if any of its pixels is one (adaptive max pooling).
    Returns:
        target: (B, h, w) float, 0 on boundaries and 1 elsewhere; valid: (B, h, w) bool, False where every pixel
        of the cell is ignored.
    """
    if edge.dim() != 3:
        raise ValueError(f"batch['edge'] must be (B, H, W) with 1 = boundary; got shape {tuple(edge.shape)}")
    boundary = (edge == 1).float().unsqueeze(1)
    known = (edge != IGNORE_INDEX).float().unsqueeze(1)
    if tuple(edge.shape[-2:]) != tuple(size):
        boundary = F.adaptive_max_pool2d(boundary, size)
        known = F.adaptive_max_pool2d(known, size)
    return 1.0 - boundary[:, 0], known[:, 0] > 0


def sample_gate_pixels(target: Tensor, valid: Tensor, ratio: float = 5.0,
                       generator: Optional[torch.Generator] = None) -> Tensor:
    """Pick the pixels of the gate loss: all boundary pixels plus ``ratio`` times as many random others, per image.

    Args:
        target: (B, h, w) 0 on boundaries, 1 elsewhere.
        valid: (B, h, w) bool.
        ratio: negatives (non-boundary) per positive (boundary); the paper uses 5.
    Returns:
        (B, h, w) bool mask. An image without boundaries contributes no pixel.
    """
    pos = (target == 0) & valid
    neg = (target != 0) & valid
    bsz = target.shape[0]
    n_pos = pos.flatten(1).sum(1)
    n_neg = neg.flatten(1).sum(1)
    k = torch.minimum((n_pos.float() * ratio).floor().long(), n_neg)  # (B,)
    gen_device = generator.device if generator is not None else target.device
    score = torch.rand(target.shape, generator=generator, device=gen_device).to(target.device)
    score = torch.where(neg, score, torch.full_like(score, 2.0)).flatten(1)  # non-candidates sort last
    rank = score.argsort(dim=1).argsort(dim=1)  # rank of each pixel among its image's candidates
    chosen = (rank < k[:, None]).view_as(target) & neg
    return (pos | chosen).view(bsz, *target.shape[1:])


def gate_ce(gate_logits: Tensor, edge: Tensor, ratio: float = 5.0,
            generator: Optional[torch.Generator] = None) -> Tensor:
    """Binary CE of the gate map against boundaries with 1:``ratio`` sampling; 0 when the batch has no boundary.

    Args:
        gate_logits: (B, 1, h, w) logits (sigmoid -> probability of "propagate").
        edge: (B, H, W) boundaries, 1 = boundary, 255 = ignored.
    """
    target, valid = gate_targets(edge, tuple(gate_logits.shape[-2:]))
    mask = sample_gate_pixels(target, valid, ratio, generator)
    per_pixel = F.binary_cross_entropy_with_logits(gate_logits[:, 0].float(), target, reduction="none")
    return (per_pixel * mask).sum() / mask.sum().clamp(min=1)


def sample_background(label: Tensor, ratio: float, generator: Optional[torch.Generator] = None) -> Tensor:
    """``label`` with every background (class 0) pixel ignored but a random sample of ``ratio`` times the image's
    foreground pixels (all of them when there are fewer); foreground and ignored pixels are kept. (B, H, W) int64 ->
    the same. An image without foreground keeps no background pixel."""
    valid = label != IGNORE_INDEX
    keep = sample_gate_pixels((label == 0).float(), valid, ratio, generator)  # "boundary" = foreground here
    return torch.where(keep, label, torch.full_like(label, IGNORE_INDEX))


def _part_ce(outputs: Mapping[str, Tensor], name: str, label: Tensor, parts: Optional[Mapping[str, Part]]) -> Tensor:
    if parts is None or name not in parts:
        raise KeyError(f"rnn_g_loss: the model returned 'part/{name}' but no part table names its classes; pass "
                       f"parts=dml_csr.face_parts.part_table(class_names)")
    classes, size, _ = parts[name]
    target = crop_labels(label, outputs[f"box/{name}"], size, classes)
    return F.cross_entropy(outputs[f"part/{name}"].float(), target, ignore_index=IGNORE_INDEX)


def rnn_g_loss(outputs: Mapping[str, Tensor], batch: Mapping[str, Tensor], *,
               parts: Optional[Mapping[str, Part]] = None, stage1_map: Optional[Sequence[int]] = None,
               weights: Optional[Mapping[str, float]] = None, gate_ratio: float = 5.0,
               generator: Optional[torch.Generator] = None, background_ratio: float = 0.0) -> dict[str, Tensor]:
    """The three losses of RNN-G (plus ``stage1_ce`` and ``part_ce`` for two-stage models).

    Args:
        outputs: the model's dict: ``parsing`` (B, C, H, W) always; ``coarse`` (B, C, h, w), ``gate`` (B, 1, h, w)
            in training mode; ``stage1``, ``part/<name>``, ``box/<name>`` from a two-stage model.
        batch: ``label`` (B, H, W) int64 with 255 = ignore; ``edge`` (B, H, W) with 1 = boundary (needed when
            ``gate`` is present).
        parts: the two-stage model's components (:func:`dml_csr.face_parts.part_table` of the class names).
        stage1_map: the first stage's class of each class (:func:`dml_csr.face_parts.stage1_map`), when the first
            stage parses fewer classes than the final map (the paper's two stages).
        weights: optional factor per term name (default 1 each).
        gate_ratio: non-boundary pixels sampled per boundary pixel (paper: 5).
        background_ratio: when > 0, background pixels sampled per foreground pixel in the label terms
            (:func:`sample_background`); the component networks' crops keep every pixel.
    Returns:
        dict of the present terms (unweighted) and ``total`` (weighted sum).
    """
    if "label" not in batch:
        raise KeyError("rnn_g_loss: batch has no 'label' (B, H, W) int64 tensor")
    label = batch["label"]
    full = label  # the component networks' crops keep every pixel
    if background_ratio > 0:
        label = sample_background(label, background_ratio, generator)
    first = label  # the first stage's target
    if stage1_map is not None:
        lut = torch.full((256,), IGNORE_INDEX, dtype=label.dtype, device=label.device)
        lut[: len(stage1_map)] = torch.as_tensor(stage1_map, dtype=label.dtype, device=label.device)
        first = lut[label]
    terms: dict[str, Tensor] = {"parsing_ce": parsing_ce(outputs["parsing"], label)}
    if "coarse" in outputs:
        terms["coarse_ce"] = parsing_ce(outputs["coarse"], first)
    if "gate" in outputs:
        if "edge" not in batch:
            raise KeyError("rnn_g_loss: the model returned 'gate' but the batch has no 'edge' (B, H, W) boundaries; "
                           "enable edge targets in the data loader")
        terms["gate_ce"] = gate_ce(outputs["gate"], batch["edge"], gate_ratio, generator)
    if "stage1" in outputs:
        terms["stage1_ce"] = parsing_ce(outputs["stage1"], first)
    part_keys = [k for k in outputs if k.startswith("part/")]
    if part_keys:
        terms["part_ce"] = torch.stack([_part_ce(outputs, k[len("part/"):], full, parts) for k in part_keys]).mean()
    weights = dict(weights or {})
    unknown = set(weights) - set(RNN_G_TERMS)
    if unknown:
        raise KeyError(f"rnn_g_loss: unknown loss weight(s) {sorted(unknown)}; expected {', '.join(RNN_G_TERMS)}")
    terms["total"] = sum(weights.get(k, 1.0) * v for k, v in terms.items())
    return terms


class RNNGLoss:
    """:func:`rnn_g_loss` as a criterion: ``loss(outputs, batch, teacher_outputs=None, cycle=0)``.

    RNN-G has no distillation terms: a teacher's outputs (self-regulation cycles) are not used.

    Args:
        parts: the two-stage model's components, or None for one stage.
        stage1_map, weights, gate_ratio, background_ratio: as :func:`rnn_g_loss`.
    """

    def __init__(self, parts: Optional[Mapping[str, Part]] = None, stage1_map: Optional[Sequence[int]] = None,
                 weights: Optional[Mapping[str, float]] = None, gate_ratio: float = 5.0,
                 background_ratio: float = 0.0) -> None:
        self.parts, self.stage1_map = parts, stage1_map
        self.weights, self.gate_ratio = dict(weights or {}), gate_ratio
        self.background_ratio = background_ratio
        self.base_weights = dict(self.weights)

    def set_stage(self, stage: int) -> None:
        """The weights of a training stage (:data:`STAGE_WEIGHTS`; 0: the joint training's, as built)."""
        self.weights = {**self.base_weights, **STAGE_WEIGHTS.get(stage, {})}

    def __call__(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Tensor],
                 teacher_outputs: Optional[Mapping[str, Tensor]] = None, cycle: int = 0) -> dict[str, Tensor]:
        return rnn_g_loss(outputs, batch, parts=self.parts, stage1_map=self.stage1_map, weights=self.weights,
                          gate_ratio=self.gate_ratio, background_ratio=self.background_ratio)
