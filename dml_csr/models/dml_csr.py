"""DML-CSR (Zheng et al., "Decoupled Multi-task Learning with Cyclical Self-Regulation for Face Parsing", CVPR 2022).

Backbone -> DDGCN context on layer4 -> parsing decoder with the layer1 skip; in training an edge module on
layer1..3 gives binary and category edges. The heads take the backbone's four maps whatever their channels and
strides (the authors' ResNet: 4, 8, 8, 8; a timm or FaRL backbone: 4, 8, 16, 32): the context runs at the last map's
size, and every other map is resized to the first one's. The edge module shares only the backbone with parsing, so
dropping it (:meth:`DMLCSR.drop_edge_heads`, or ``edge_heads=False``) leaves the parsing output unchanged.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from .backbone import build_backbone
from .context import CONTEXTS
from .heads import EdgeModule, ParsingDecoder
from .precision import check_image_input
from .norm import NormFactory, make_norm

__all__ = ["DMLCSR", "build_dml_csr"]


class DMLCSR(nn.Module):
    """The DML-CSR network; (B, 3, H, W) -> dict of logits at stride 4 (layer1's size), not upsampled.

    Outputs: ``"parsing"`` (B, K, h, w) always; ``"edge"`` (B, 2, h, w) and ``"semantic_edge"`` (B, K, h, w) when the
    edge heads (and those branches, ``edge_branches``) exist. Submodules: ``backbone``, ``context`` (authors'
    ``context``: the DDGCN head, or the ablation's conv baseline), ``decoder`` (``layer6``), ``edges``
    (``edge_layer``, or None).
    """

    training_only = ("edges.",)  # state_dict prefixes of the heads used in training only

    def __init__(self, backbone: nn.Module, num_classes: int, norm: NormFactory, context_channels: int = 512,
                 decoder_channels: int = 256, edge_channels: int = 256, edge_heads: bool = True,
                 context: str = "ddgcn", edge_branches: Sequence[str] = ("binary", "category")) -> None:
        super().__init__()
        if context not in CONTEXTS:
            raise ValueError(f"model.context = {context!r}; expected one of {', '.join(CONTEXTS)}")
        c1, c2, c3, c4 = backbone.channels
        self.num_classes = num_classes
        self.backbone = backbone
        self.context = CONTEXTS[context](c4, context_channels, norm)
        self.decoder = ParsingDecoder(context_channels, c1, num_classes, norm, width=decoder_channels)
        self.edges: Optional[EdgeModule] = None
        if edge_heads and edge_branches:
            self.edges = EdgeModule((c1, c2, c3), num_classes, norm, width=edge_channels, branches=edge_branches)

    @property
    def has_edge_heads(self) -> bool:
        return self.edges is not None

    def drop_edge_heads(self) -> "DMLCSR":
        """Remove the edge module in place (the inference model); returns self."""
        self.edges = None
        return self

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        check_image_input(x, "DMLCSR", self.decoder.conv4.weight.dtype)
        x1, x2, x3, x4 = self.backbone(x)
        parsing, _ = self.decoder(self.context(x4), x1)
        if self.edges is None:
            return {"parsing": parsing}
        edge, semantic_edge, _ = self.edges(x1, x2, x3)
        out = {"parsing": parsing, "edge": edge, "semantic_edge": semantic_edge}
        return {k: v for k, v in out.items() if v is not None}


def build_dml_csr(cfg, num_classes: int, class_names: Optional[Sequence[str]] = None) -> DMLCSR:
    """Build DML-CSR from a :class:`dml_csr.config.ModelConfig` (``class_names`` are not needed)."""
    if num_classes < 2:
        raise ValueError(f"num_classes={num_classes}; a parsing model needs at least 2 classes")
    norm = make_norm(cfg.norm)
    backbone = build_backbone(cfg.backbone, norm, cfg.output_stride, cfg.pretrained, tuple(cfg.input_size),
                              convention=(cfg.channel_order, tuple(cfg.mean), tuple(cfg.std)))
    return DMLCSR(backbone, num_classes, norm, context_channels=cfg.context_channels,
                  decoder_channels=cfg.decoder_channels, edge_channels=cfg.edge_channels,
                  edge_heads=cfg.edge_heads, context=cfg.context, edge_branches=tuple(cfg.edge_branches))
