"""The parsing decoder and the edge module (binary and category edges), with the authors' parameter names."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from ..conventions import resize_bilinear as _resize
from .norm import NormFactory

__all__ = ["ParsingDecoder", "EdgeModule"]


class ParsingDecoder(nn.Module):
    """Parsing head: context (B, Cc, h8, w8) and layer1 (B, C1, h4, w4) -> logits (B, K, h4, w4), features.

    conv1 1x1 Cc->width + ABN, upsampled to the layer1 size; conv2 1x1 C1->skip + ABN; concatenation; conv3 two
    1x1 convs + ABN (width); conv4 1x1 width->K with bias. The authors use width 256, skip 48.
    """

    def __init__(self, in_context: int, in_low: int, num_classes: int, norm: NormFactory, width: int = 256,
                 skip: int = 48) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(in_context, width, 1, bias=False), norm(width))
        self.conv2 = nn.Sequential(nn.Conv2d(in_low, skip, 1, bias=False), norm(skip))
        self.conv3 = nn.Sequential(nn.Conv2d(width + skip, width, 1, bias=False), norm(width),
                                   nn.Conv2d(width, width, 1, bias=False), norm(width))
        self.conv4 = nn.Conv2d(width, num_classes, 1, bias=True)

    def forward(self, context: torch.Tensor, low: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (logits (B, K, h4, w4), features (B, width, h4, w4))."""
        top = _resize(self.conv1(context), low.shape[-2:])
        x = self.conv3(torch.cat([top, self.conv2(low)], dim=1))
        return self.conv4(x), x


class EdgeModule(nn.Module):
    """Binary and category edges from layer1..3 features; outputs at the layer1 size.

    conv1/2/3: 1x1 in_i -> width + ABN per scale; ONE shared conv4 (3x3 width->K, bias) applied at every scale; the
    three K-channel maps are upsampled to the layer1 size and concatenated (3K); conv5_b 1x1 3K->2 (binary) and
    conv5 1x1 3K->K (category). ``branches`` keeps one of the two output layers only (the paper's Table 6).
    """

    def __init__(self, in_channels: Sequence[int], num_classes: int, norm: NormFactory, width: int = 256,
                 branches: Sequence[str] = ("binary", "category")) -> None:
        super().__init__()
        unknown = set(branches) - {"binary", "category"}
        if unknown or not branches:
            raise ValueError(f"edge branches {list(branches)}: expected a non-empty subset of binary, category")
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels[0], width, 1, bias=False), norm(width))
        self.conv2 = nn.Sequential(nn.Conv2d(in_channels[1], width, 1, bias=False), norm(width))
        self.conv3 = nn.Sequential(nn.Conv2d(in_channels[2], width, 1, bias=False), norm(width))
        self.conv4 = nn.Conv2d(width, num_classes, 3, padding=1, bias=True)
        self.conv5_b = nn.Conv2d(num_classes * 3, 2, 1, bias=True) if "binary" in branches else None
        self.conv5 = nn.Conv2d(num_classes * 3, num_classes, 1, bias=True) if "category" in branches else None

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, x3: torch.Tensor
                ) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor], torch.Tensor]:
        """(B, in_i, h_i, w_i) x3 -> (binary (B, 2, h1, w1), category (B, K, h1, w1), features (B, 3*width, h1, w1));
        a branch that was not built gives None."""
        size = x1.shape[-2:]
        f1, f2, f3 = self.conv1(x1), self.conv2(x2), self.conv3(x3)
        e1, e2, e3 = self.conv4(f1), _resize(self.conv4(f2), size), _resize(self.conv4(f3), size)
        edge = torch.cat([e1, e2, e3], dim=1)
        features = torch.cat([f1, _resize(f2, size), _resize(f3, size)], dim=1)
        binary = self.conv5_b(edge) if self.conv5_b is not None else None
        category = self.conv5(edge) if self.conv5 is not None else None
        return binary, category, features
