"""Losses of DML-CSR: parsing (CE + Lovasz-softmax), edges, dual edge attention, self-distillation, and the total.

``build_criterion(cfg.loss, num_classes)`` is the entry point of the trainer; see ``total.py`` for the terms.
"""
from dml_csr.losses.attention import binary_edge_attention, semantic_edge_attention
from dml_csr.losses.distill import kl_distill, mix_with_onehot
from dml_csr.losses.edges import (binary_edge_ce, binary_edge_weights, semantic_edge_ce, semantic_edge_weights,
                                  weighted_ce)
from dml_csr.losses.lovasz import lovasz_softmax, lovasz_softmax_flat
from dml_csr.losses.parsing import IGNORE_INDEX, parsing_ce, parsing_lovasz, pixel_ce, upsample_to
from dml_csr.losses.total import TERMS, build_criterion, loss_weights, multitask_loss

__all__ = [
    "IGNORE_INDEX", "TERMS", "binary_edge_attention", "binary_edge_ce", "binary_edge_weights", "build_criterion",
    "kl_distill", "lovasz_softmax", "lovasz_softmax_flat", "loss_weights", "mix_with_onehot", "multitask_loss",
    "parsing_ce", "parsing_lovasz", "pixel_ce", "semantic_edge_attention", "semantic_edge_ce",
    "semantic_edge_weights", "upsample_to", "weighted_ce",
]
