"""Models: ``build_model(cfg, num_classes, class_names=...)`` picks the builder by ``cfg.name`` from an explicit dict.

A model knows no dataset: it gets a class count (and, where it needs them, class names) and returns a dict of
logits. Loading a model from a checkpoint file is :func:`dml_csr.checkpoint.load_model`.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

from torch import nn

from .dml_csr import DMLCSR, build_dml_csr
from .norm import ABN, convert_sync_abn
from .precision import PRECISIONS, autocast_context, prepare_for_inference, to_model_input
from .rnn_g import build_rnn_g

__all__ = ["build_model", "MODELS", "DMLCSR", "ABN", "convert_sync_abn", "prepare_for_inference", "autocast_context",
           "to_model_input", "PRECISIONS", "count_parameters"]

MODELS: dict[str, Callable[..., nn.Module]] = {
    "dml_csr": build_dml_csr,  # Zheng et al. 2022
    "rnn_g": build_rnn_g,  # recurrent propagation, Liu et al. 2017
}


def build_model(cfg, num_classes: int, class_names: Optional[Sequence[str]] = None) -> nn.Module:
    """Build the network that ``cfg`` names for ``num_classes``: a whole :class:`dml_csr.config.Config` (what
    ``load_config`` returns) or its model section (a :class:`dml_csr.config.ModelConfig`).

    ``class_names`` (the dataset's, in index order) are needed by models that find classes by name (the two-stage
    RNN-G); the others ignore them."""
    cfg = getattr(cfg, "model", cfg)
    try:
        builder = MODELS[cfg.name]
    except KeyError:
        raise KeyError(f"unknown model.name '{cfg.name}'; expected one of {', '.join(MODELS)}") from None
    return builder(cfg, num_classes, class_names)


def count_parameters(model: nn.Module) -> int:
    """Number of parameter elements (works on the meta device)."""
    return sum(p.numel() for p in model.parameters())
