"""The multi-task loss of DML-CSR (paper eq. 5) plus the self-distillation terms of the cycles (eq. 7).

Terms (names are shared by config, the returned dict and the logs; every term is returned unweighted):

    parsing_ce                L_ce^p      cross-entropy, ignore 255                    weight lambda0
    parsing_lovasz            L_lovasz^p  Lovasz-softmax (if loss.lovasz)             weight lambda0
    edge_ce                   L_ce^b      balanced binary-edge CE                      weight lambda1
    semantic_edge_ce          L_ce^c      weighted category-edge CE                    weight lambda2
    edge_attention            L_attn^b    eq. 3                                        weight lambda3
    semantic_edge_attention   L_attn^c    eq. 4, w_j = loss.class_weights             weight lambda4
    kl_parsing, kl_edge, kl_semantic_edge   KL to the teacher (eq. 7)                  weights alpha0, alpha1, alpha2

The edge terms follow eq. 5's grouping: ``edge_ce`` and ``edge_attention`` exist only when the model returns
``"edge"`` (the binary-edge branch), ``semantic_edge_ce`` and ``semantic_edge_attention`` only when it returns
``"semantic_edge"``. A model without edge heads (or a generic model returning only ``"parsing"``) gets the parsing
terms only. ``"total"`` is the weighted sum of the terms present.

Our reading of eq. 7 during the self-regulation cycles: the supervised loss of eq. 5 stays, and the KL terms are
added: ``total = L_DML + alpha0 * KL^p + alpha1 * KL^b + alpha2 * KL^c``. The Lovasz term of eq. 7 is the hard-label
Lovasz of eq. 5, counted once (it needs hard labels; the soft labels enter through the KL terms). This is also what
the authors' code and SCHP, whose cycle DML-CSR follows, do. KL terms are computed for each head present in both
the student's and the teacher's outputs.

Presets (``loss.preset``):
    paper     the weights above; the category-edge CE balances edge against non-edge pixels; the KL target is the
              teacher's softmax (temperature ``loss.temperature``).
    official  the effective multipliers of the authors' code, as extra factors on top of the lambdas:
              parsing terms x2 (a doubled sum), semantic_edge_ce x0.2, so the default lambdas give
              2 Lovasz + 2 CE + 1 WCE_bin + 0.2 WCE_cat + 4 Att_bin + 1 Att_cat; frequency class weights
              (w_j = N_j / N per batch) in the category-edge CE; the category attention term of class j multiplied by
              j (their bug, reproduced: it is finite); the KL target mixes the teacher's logits with the one-hot label,
              ``(1 - a) * teacher + a * onehot`` with ``a = 1 / (cycle + 1)``. Not reproduced: their division by zero
              on edge-free images (we give 0), their crash in the distillation target indexing, and their
              ``batchmean`` KL scaling (see ``distill.py``).
"""
from __future__ import annotations

from typing import Callable, Mapping, Optional

import torch
from torch import Tensor

from dml_csr.config import LossConfig
from dml_csr.losses.attention import binary_edge_attention, semantic_edge_attention
from dml_csr.losses.distill import kl_distill, mix_with_onehot
from dml_csr.losses.edges import binary_edge_ce, semantic_edge_ce
from dml_csr.losses.parsing import IGNORE_INDEX, parsing_lovasz, pixel_ce

__all__ = ["TERMS", "OFFICIAL_FACTORS", "loss_weights", "multitask_loss", "build_criterion"]

TERMS = ("parsing_ce", "parsing_lovasz", "edge_ce", "semantic_edge_ce", "edge_attention", "semantic_edge_attention",
         "kl_parsing", "kl_edge", "kl_semantic_edge")

# extra factors of the authors' code over the paper's lambdas (official_release.md, "Losses")
OFFICIAL_FACTORS = {"parsing_ce": 2.0, "parsing_lovasz": 2.0, "semantic_edge_ce": 0.2}

# head name in the model outputs -> (target key in the batch, KL term name)
_KL_HEADS = {"parsing": ("label", "kl_parsing"), "edge": ("edge", "kl_edge"),
             "semantic_edge": ("semantic_edge", "kl_semantic_edge")}


def loss_weights(cfg: LossConfig) -> dict[str, float]:
    """The multiplier of every term under ``cfg`` (lambdas, alphas and the preset's factors)."""
    l0, l1, l2, l3, l4 = cfg.lambdas
    a0, a1, a2 = cfg.alphas
    w = {"parsing_ce": l0, "parsing_lovasz": l0 if cfg.lovasz else 0.0, "edge_ce": l1, "semantic_edge_ce": l2,
         "edge_attention": l3, "semantic_edge_attention": l4, "kl_parsing": a0, "kl_edge": a1, "kl_semantic_edge": a2}
    if cfg.preset == "official":
        w = {k: v * OFFICIAL_FACTORS.get(k, 1.0) for k, v in w.items()}
    elif cfg.preset != "paper":
        raise ValueError(f"loss.preset = {cfg.preset!r}; expected 'paper' or 'official'")
    return {k: float(v) for k, v in w.items()}


def _target(batch: Mapping[str, Tensor], key: str, head: str) -> Tensor:
    if key not in batch:
        raise KeyError(f"the model returns '{head}' but the batch has no '{key}' target; make the data loader emit "
                       f"'{key}' (edge targets) or build the model without edge heads")
    return batch[key]


def multitask_loss(outputs: Mapping[str, Tensor], batch: Mapping[str, Tensor], cfg: LossConfig,
                   teacher_outputs: Optional[Mapping[str, Tensor]] = None, cycle: int = 0,
                   ignore_index: int = IGNORE_INDEX) -> dict[str, Tensor]:
    """Every loss term and their weighted ``"total"`` (see the module docstring).

    Args:
        outputs: {"parsing": (B, C, h, w), optional "edge": (B, 2, h, w), optional "semantic_edge": (B, C, h, w)}
            logits (any resolution; upsampled to the label size).
        batch: {"label": (B, H, W) int64, "edge": (B, H, W) int64 in {0, 1}, "semantic_edge": (B, H, W) int64};
            255 = ignored. Edge targets are needed only for the heads the model has.
        cfg: loss configuration.
        teacher_outputs: the teacher's logits (same keys), given during the self-regulation cycles.
        cycle: number of self-ensembles done so far (>= 1 once a teacher exists); used only by the official
            preset's one-hot mixing, ``a = 1 / (cycle + 1)``.
    Returns:
        {term: scalar} for every term computed, plus "total".
    """
    if "parsing" not in outputs:
        raise KeyError(f"model outputs have keys {sorted(outputs)}; expected at least 'parsing'")
    weights = loss_weights(cfg)
    official = cfg.preset == "official"
    parsing = outputs["parsing"]
    labels = _target(batch, "label", "parsing")
    num_classes = parsing.shape[1]
    valid = labels != ignore_index
    ce_map = pixel_ce(parsing, labels, ignore_index)  # (B, H, W), shared by CE and the attention terms

    terms: dict[str, Tensor] = {"parsing_ce": ce_map.sum() / valid.sum().clamp_min(1)}
    if cfg.lovasz:
        terms["parsing_lovasz"] = parsing_lovasz(parsing, labels, ignore_index, per_image=cfg.lovasz_per_image)
    if "edge" in outputs:
        edge = _target(batch, "edge", "edge")
        terms["edge_ce"] = binary_edge_ce(outputs["edge"], edge, ignore_index)
        terms["edge_attention"] = binary_edge_attention(parsing, labels, edge, ce_map, ignore_index)
    if "semantic_edge" in outputs:
        sem = _target(batch, "semantic_edge", "semantic_edge")
        terms["semantic_edge_ce"] = semantic_edge_ce(outputs["semantic_edge"], sem,
                                                     "frequency" if official else "balanced", ignore_index)
        terms["semantic_edge_attention"] = semantic_edge_attention(
            parsing, labels, sem, cfg.class_weights, ce_map, class_index_bug=official, ignore_index=ignore_index)

    if teacher_outputs is not None:
        for head, (key, name) in _KL_HEADS.items():
            if head not in outputs or head not in teacher_outputs:
                continue
            target = _target(batch, key, head)
            teacher = teacher_outputs[head]
            if official:
                teacher = mix_with_onehot(teacher, target, 1.0 / (cycle + 1), ignore_index)
            terms[name] = kl_distill(outputs[head], teacher, valid=target != ignore_index,
                                     temperature=cfg.temperature)

    total = sum(weights[k] * v for k, v in terms.items())
    terms["total"] = total
    return terms


def build_criterion(cfg: LossConfig, num_classes: int) -> Callable[..., dict[str, Tensor]]:
    """Validate ``cfg`` against ``num_classes`` and return ``criterion(outputs, batch, teacher_outputs=None,
    cycle=0) -> dict[str, Tensor]`` (:func:`multitask_loss` bound to ``cfg``)."""
    loss_weights(cfg)  # checks the preset
    if cfg.class_weights is not None:
        if len(cfg.class_weights) != num_classes:
            raise ValueError(f"loss.class_weights has {len(cfg.class_weights)} values; expected {num_classes} "
                             f"(one per class) or null")
        if any(w < 0 for w in cfg.class_weights):
            raise ValueError(f"loss.class_weights = {cfg.class_weights}; expected non-negative values")
    if cfg.temperature <= 0:
        raise ValueError(f"loss.temperature = {cfg.temperature}; expected a positive number")

    def criterion(outputs: Mapping[str, Tensor], batch: Mapping[str, Tensor],
                  teacher_outputs: Optional[Mapping[str, Tensor]] = None, cycle: int = 0) -> dict[str, Tensor]:
        return multitask_loss(outputs, batch, cfg, teacher_outputs, cycle)

    return criterion
