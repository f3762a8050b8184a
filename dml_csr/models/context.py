"""The DDGCN context module (paper sec. 3.2, "Context Embedding without Pooling"), as the authors' code builds it.

Parameter names follow the authors' modules (``conva``, ``dualgcn.*``, ``convb``, ``bottleneck``) so that their
checkpoints map by a prefix only. Where the paper and the code differ, this follows the code:

- spatial branch: three stride-2 depthwise 3x3 convs (+ABN) shrink the map, a channel-affinity graph
  (:class:`SpatialGCN`) runs on it, it is upsampled back (bilinear, align_corners=True) and applied as
  ``x * local + x``;
- feature branch: projection to a 128-node (C/4) graph with 256 (C/2) features, adjacency and state-update 1D convs
  with plain BatchNorm1d, re-projection, ``gamma1 * y + x``;
- the two branches are concatenated and fused by a 1x1 conv + ABN.
"""
from __future__ import annotations

import torch
from torch import nn

from ..conventions import resize_bilinear
from .norm import NormFactory

__all__ = ["SpatialGCN", "DDualGCN", "DDualGCNHead", "ConvContext", "CONTEXTS"]


class SpatialGCN(nn.Module):
    """Graph over channels of a small map: (B, C, h, w) -> (B, C, h, w); inner width C/2.

    A = softmax(q v^T) (C/2 x C/2, softmax over the last axis), out = k A -> Conv1d + BatchNorm1d -> 1x1 conv + ABN,
    returned as ``gamma * out + x`` (gamma initialised to 0).
    """

    def __init__(self, planes: int, norm: NormFactory) -> None:
        super().__init__()
        inter = planes // 2
        self.node_k = nn.Conv2d(planes, inter, 1)
        self.node_v = nn.Conv2d(planes, inter, 1)
        self.node_q = nn.Conv2d(planes, inter, 1)
        self.conv_wg = nn.Conv1d(inter, inter, 1, bias=False)
        self.bn_wg = nn.BatchNorm1d(inter)
        self.out = nn.Sequential(nn.Conv2d(inter, planes, 1), norm(planes))
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, v, q = self.node_k(x), self.node_v(x), self.node_q(x)
        b, c, h, w = k.shape
        k = k.flatten(2).transpose(1, 2)  # (B, hw, c)
        v = v.flatten(2).transpose(1, 2)  # (B, hw, c)
        q = q.flatten(2)  # (B, c, hw)
        affinity = torch.softmax(torch.bmm(q, v), dim=2)  # (B, c, c)
        av = torch.bmm(k, affinity).transpose(1, 2).contiguous()  # (B, c, hw)
        avw = self.bn_wg(self.conv_wg(av)).view(b, c, h, w)
        return self.gamma * self.out(avw) + x


class DDualGCN(nn.Module):
    """Dynamic dual graph convolution: (B, C, H, W) -> (B, C, H, W); ``ratio`` sets the graph sizes (C/ratio nodes)."""

    def __init__(self, planes: int, norm: NormFactory, ratio: int = 4) -> None:
        super().__init__()
        nodes, feats = planes // ratio, planes // ratio * 2
        self.phi = nn.Conv2d(planes, feats, 1, bias=False)
        self.bn_phi = norm(feats)
        self.theta = nn.Conv2d(planes, nodes, 1, bias=False)
        self.bn_theta = norm(nodes)
        self.conv_adj = nn.Conv1d(nodes, nodes, 1, bias=False)
        self.bn_adj = nn.BatchNorm1d(nodes)
        self.conv_wg = nn.Conv1d(feats, feats, 1, bias=False)
        self.bn_wg = nn.BatchNorm1d(feats)
        self.conv3 = nn.Conv2d(feats, planes, 1, bias=False)
        self.bn3 = norm(planes)
        self.local = nn.Sequential(
            nn.Conv2d(planes, planes, 3, stride=2, padding=1, groups=planes, bias=False), norm(planes),
            nn.Conv2d(planes, planes, 3, stride=2, padding=1, groups=planes, bias=False), norm(planes),
            nn.Conv2d(planes, planes, 3, stride=2, padding=1, groups=planes, bias=False), norm(planes))
        self.gcn_local_attention = SpatialGCN(planes, norm)
        self.final = nn.Sequential(nn.Conv2d(planes * 2, planes, 1, bias=False), norm(planes))
        self.gamma1 = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        local = self.gcn_local_attention(self.local(x))
        local = resize_bilinear(local, (h, w))
        spatial_local = x * local + x

        proj = self.bn_phi(self.phi(x)).flatten(2)  # (B, C/2, HW)
        nodes = self.bn_theta(self.theta(x)).flatten(2)  # (B, C/4, HW)
        z_idt = torch.matmul(proj, nodes.transpose(1, 2))  # (B, C/2, C/4)
        z = self.bn_adj(self.conv_adj(z_idt.transpose(1, 2).contiguous()))  # (B, C/4, C/2)
        z = z.transpose(1, 2).contiguous() + z_idt
        z = self.bn_wg(self.conv_wg(z))  # (B, C/2, C/4)
        y = torch.matmul(z, nodes).view(n, -1, h, w)  # (B, C/2, H, W)
        y = self.bn3(self.conv3(y))
        g_out = self.gamma1 * y + x
        return self.final(torch.cat([spatial_local, g_out], dim=1))


class DDualGCNHead(nn.Module):
    """Context module: (B, inplanes, H, W) -> (B, interplanes, H, W) (authors: 2048 -> 512).

    conva 3x3 + ABN, DDualGCN, convb 3x3 + ABN, then a 3x3 conv + ABN on the concatenation with the input.
    """

    def __init__(self, inplanes: int, interplanes: int, norm: NormFactory) -> None:
        super().__init__()
        self.conva = nn.Sequential(nn.Conv2d(inplanes, interplanes, 3, padding=1, bias=False), norm(interplanes))
        self.dualgcn = DDualGCN(interplanes, norm)
        self.convb = nn.Sequential(nn.Conv2d(interplanes, interplanes, 3, padding=1, bias=False), norm(interplanes))
        self.bottleneck = nn.Sequential(nn.Conv2d(inplanes + interplanes, interplanes, 3, padding=1, bias=False),
                                        norm(interplanes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.convb(self.dualgcn(self.conva(x)))
        return self.bottleneck(torch.cat([x, out], dim=1))


class ConvContext(nn.Sequential):
    """The ablation baseline's context (paper Sec. 4.2, Table 4): a 3x3 convolution and a norm layer from the last
    backbone features to ``interplanes`` channels (the paper: 256), in place of the DDGCN."""

    def __init__(self, inplanes: int, interplanes: int, norm: NormFactory) -> None:
        super().__init__(nn.Conv2d(inplanes, interplanes, 3, padding=1, bias=False), norm(interplanes))


CONTEXTS = {"ddgcn": DDualGCNHead, "conv": ConvContext}  # model.context
