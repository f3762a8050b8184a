"""Losses: parsing (CE + Lovasz-softmax), edges, dual edge attention, self-distillation and their totals for DML-CSR
(:class:`MultiTaskLoss`); the three losses of RNN-G (:class:`RNNGLoss`).

Losses take tensors and numbers. ``build_criterion(cfg, class_names, class_weights)`` picks the criterion of
``cfg.model.name`` from :data:`CRITERIA`, as :func:`dml_csr.models.build_model` picks the model, and configures it from
``cfg.loss`` and the class weights resolved from ``loss.class_weights`` by the caller
(:func:`dml_csr.training.trainer.resolve_class_weights`).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

from dml_csr.face_parts import part_table, stage1_map
from dml_csr.losses.attention import binary_edge_attention, official_category_attention, semantic_edge_attention
from dml_csr.losses.distill import kl_distill, mix_with_onehot
from dml_csr.losses.edges import (binary_edge_ce, binary_edge_weights, semantic_edge_ce, semantic_edge_weights,
                                  weighted_ce)
from dml_csr.losses.lovasz import lovasz_softmax, lovasz_softmax_flat
from dml_csr.losses.parsing import parsing_ce, parsing_lovasz, pixel_ce
from dml_csr.losses.rnn_g import RNNGLoss, rnn_g_loss
from dml_csr.losses.total import TERMS, MultiTaskLoss, multipliers

__all__ = [
    "CRITERIA", "TERMS", "MultiTaskLoss", "RNNGLoss", "multipliers", "binary_edge_attention", "binary_edge_ce",
    "binary_edge_weights",
    "build_criterion", "kl_distill", "lovasz_softmax", "lovasz_softmax_flat", "mix_with_onehot",
    "official_category_attention", "parsing_ce",
    "parsing_lovasz", "pixel_ce", "rnn_g_loss", "semantic_edge_attention", "semantic_edge_ce",
    "semantic_edge_weights", "weighted_ce",
]


def _dml_csr_criterion(cfg, class_names: Sequence[str], class_weights: Optional[Sequence[float]]) -> MultiTaskLoss:
    if cfg.loss.background_ratio:
        raise ValueError(f"loss.background_ratio = {cfg.loss.background_ratio!r} has no effect on model.name=dml_csr "
                         f"(it samples RNN-G's label losses, Liu et al.'s Multi-Face setting); remove it")
    return MultiTaskLoss.from_config(cfg.loss, len(class_names), class_weights)


def _rnn_g_criterion(cfg, class_names: Sequence[str], class_weights: Optional[Sequence[float]]) -> RNNGLoss:
    # every loss.* field but background_ratio configures DML-CSR's multi-task loss; a set one would be ignored here
    defaults = type(cfg.loss)()
    changed = [f.name for f in dataclasses.fields(cfg.loss) if f.name != "background_ratio"
               and getattr(cfg.loss, f.name) != getattr(defaults, f.name)]
    if changed:
        raise ValueError(f"loss.{changed[0]} = {getattr(cfg.loss, changed[0])!r} has no effect on model.name=rnn_g "
                         f"(its losses are the coarse CE, the boundary-gate CE and the final CE, unweighted); "
                         f"remove loss.{', loss.'.join(changed)} from the config")
    ratio = cfg.loss.background_ratio
    if not cfg.model.two_stage:
        return RNNGLoss(background_ratio=ratio)
    paper = cfg.model.two_stage_variant == "paper"
    return RNNGLoss(part_table(class_names), stage1_map(class_names) if paper else None, background_ratio=ratio)


CRITERIA: dict[str, Callable[..., Callable]] = {
    "dml_csr": _dml_csr_criterion,
    "rnn_g": _rnn_g_criterion,
}


def build_criterion(cfg, class_names: Sequence[str], class_weights: Optional[Sequence[float]] = None) -> Callable:
    """The training criterion of ``cfg.model.name`` configured by ``cfg.loss`` (a :class:`dml_csr.config.Config`):
    ``criterion(outputs, batch, teacher_outputs=None, cycle=0) -> {term: scalar, ..., "total": scalar}``.
    ``class_weights``: the w_j, numbers (None: all ones), resolved by the caller from ``loss.class_weights`` (a list,
    or ``inverse_frequency`` from the data); this function does not read that setting."""
    try:
        builder = CRITERIA[cfg.model.name]
    except KeyError:
        raise KeyError(f"no criterion for model.name '{cfg.model.name}'; expected one of "
                       f"{', '.join(CRITERIA)}") from None
    return builder(cfg, class_names, class_weights)
