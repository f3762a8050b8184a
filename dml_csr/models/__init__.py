"""Models: ``build_model(cfg, num_classes)`` picks the builder by ``cfg.name`` from an explicit dict.

Public API: :func:`build_model`, :func:`load_model` (our checkpoints and the authors' files), :func:`upsample_logits`,
:func:`prepare_for_inference`, :func:`autocast_context`, :func:`convert_sync_abn`, :class:`ABN`, :class:`DMLCSR`.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from .dml_csr import DMLCSR, build_dml_csr
from .inference import PRECISIONS, autocast_context, prepare_for_inference, to_model_input, upsample_logits
from .loading import load_model
from .norm import ABN, convert_sync_abn

__all__ = ["build_model", "MODELS", "load_model", "DMLCSR", "ABN", "convert_sync_abn", "upsample_logits",
           "prepare_for_inference", "autocast_context", "to_model_input", "PRECISIONS", "count_parameters"]


def _build_rnn_g(cfg, num_classes: int) -> nn.Module:
    try:
        from .rnn_g import build_rnn_g
    except ImportError as e:
        raise ImportError(f"model.name='rnn_g' needs dml_csr/models/rnn_g.py with build_rnn_g(cfg, num_classes) "
                          f"({e})") from None
    return build_rnn_g(cfg, num_classes)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "dml_csr": build_dml_csr,
    "rnn_g": _build_rnn_g,  # recurrent propagation (Liu et al. 2017), lives in rnn_g.py
}


def build_model(cfg, num_classes: int) -> nn.Module:
    """Build the network named by ``cfg.name`` (a :class:`dml_csr.config.ModelConfig`) for ``num_classes``."""
    try:
        builder = MODELS[cfg.name]
    except KeyError:
        raise KeyError(f"unknown model.name '{cfg.name}'; expected one of {', '.join(MODELS)}") from None
    return builder(cfg, num_classes)


def count_parameters(model: nn.Module) -> int:
    """Number of parameter elements (works on the meta device)."""
    return sum(p.numel() for p in model.parameters())
