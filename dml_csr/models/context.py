"""Context modules on the last backbone map (``model.context``): the paper's DDGCN, the ablation baseline's conv, and
the other modules of the paper's Table 5 (PSP, DGCNet, each with and without its pooling).

The DDGCN (paper sec. 3.2, "Context Embedding without Pooling") is built as the authors' code builds it.

Parameter names follow the authors' modules (``conva``, ``dualgcn.*``, ``convb``, ``bottleneck``) so that their
checkpoints map by a prefix only. Where the paper and the code differ, this follows the code:

- spatial branch: three stride-2 depthwise 3x3 convs (+ABN) shrink the map, a channel-affinity graph
  (:class:`SpatialGCN`) runs on it, it is upsampled back (bilinear, align_corners=True) and applied as
  ``x * local + x``;
- feature branch: projection to a 128-node (C/4) graph with 256 (C/2) features, adjacency and state-update 1D convs
  with plain BatchNorm1d, re-projection, ``gamma1 * y + x``;
- the two branches are concatenated and fused by a 1x1 conv + ABN.

Table 5's modules are written from their papers, the equations in their docstrings: :class:`PyramidPooling` (PSPNet)
and :class:`DualGraph` (DGCNet, inside the DDGCN head's wiring), each with the "-pooling" variant as we read it.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..conventions import resize_bilinear
from .norm import NormFactory

__all__ = ["SpatialGCN", "DDualGCN", "DDualGCNHead", "ConvContext", "PyramidPooling", "CoordinateGraph",
           "FeatureGraph", "DualGraph", "CONTEXTS"]


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

    conva 3x3 + ABN, DDualGCN (or the ``graph`` given: DGCNet's head has the same wiring), convb 3x3 + ABN, then a
    3x3 conv + ABN on the concatenation with the input.
    """

    def __init__(self, inplanes: int, interplanes: int, norm: NormFactory, graph: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.conva = nn.Sequential(nn.Conv2d(inplanes, interplanes, 3, padding=1, bias=False), norm(interplanes))
        self.dualgcn = graph if graph is not None else DDualGCN(interplanes, norm)
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


class PyramidPooling(nn.Module):
    """PSPNet's pyramid pooling module (Zhao et al., CVPR 2017, Sec. 3.2) as a context head (Table 5's "+PSP"):
    (B, C, H, W) -> (B, interplanes, H, W).

    For each bin size b of ``bins`` (1, 2, 3, 6: N = 4 levels), with P_b the adaptive average pooling to b x b bins
    (bin i of b along an axis of n pixels spans [floor(i n / b), ceil((i + 1) n / b))), W_b a 1x1 conv to C / N
    channels ("1/N of the original one") and up the bilinear upsampling to H x W::

        F_b = up(norm(W_b * P_b(X)))
        Y = norm(conv3x3([X, F_1, F_2, F_3, F_6]))        (the fusion conv, to ``interplanes`` channels)

    ``pooling=False`` is Table 5's "PSP-pooling" as we read "the pooling operation is removed from the context
    embedding": P_b is removed (and with it the upsampling), each level's 1x1 conv + norm sees the full-resolution X;
    the concatenation and the fusion are unchanged, and so are the parameters.
    """

    def __init__(self, inplanes: int, interplanes: int, norm: NormFactory, bins: tuple[int, ...] = (1, 2, 3, 6),
                 pooling: bool = True) -> None:
        super().__init__()
        width = inplanes // len(bins)
        self.bins = tuple(bins) if pooling else ()
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(b) if pooling else nn.Identity(),
                          nn.Conv2d(inplanes, width, 1, bias=False), norm(width)) for b in bins)
        self.bottleneck = nn.Sequential(
            nn.Conv2d(inplanes + len(bins) * width, interplanes, 3, padding=1, bias=False), norm(interplanes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        return self.bottleneck(torch.cat([x] + [resize_bilinear(stage(x), size) for stage in self.stages], dim=1))


class CoordinateGraph(nn.Module):
    """DGCNet's coordinate-space graph (Zhang et al., BMVC 2019, Sec. 3.2, GCN-S): (B, C, h, w) -> (B, C, h, w).

    The nodes are the n = h w positions of V, with C' = C / 2 features each; theta, phi and nu are 1x1 convs
    C -> C', W_s a C' x C' state update (1D conv + batch norm)::

        A_s = softmax(theta(V)^T phi(V))                  (n x n, each row sums to 1)
        M_s = W_s (nu(V) A_s^T)                          (C' x n)
        out = norm(conv1x1_{C' -> C}(M_s))
    """

    def __init__(self, planes: int, norm: NormFactory) -> None:
        super().__init__()
        inter = planes // 2
        self.theta = nn.Conv2d(planes, inter, 1)
        self.phi = nn.Conv2d(planes, inter, 1)
        self.nu = nn.Conv2d(planes, inter, 1)
        self.conv_ws = nn.Conv1d(inter, inter, 1, bias=False)
        self.bn_ws = nn.BatchNorm1d(inter)
        self.out = nn.Sequential(nn.Conv2d(inter, planes, 1, bias=False), norm(planes))

    def adjacency(self, v: torch.Tensor) -> torch.Tensor:
        """A_s: (B, n, n)."""
        return torch.softmax(torch.bmm(self.theta(v).flatten(2).transpose(1, 2), self.phi(v).flatten(2)), dim=2)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        b, _, h, w = v.shape
        m = torch.bmm(self.nu(v).flatten(2), self.adjacency(v).transpose(1, 2))  # (B, C', n)
        return self.out(self.bn_ws(self.conv_ws(m)).view(b, -1, h, w))


class FeatureGraph(nn.Module):
    """DGCNet's feature-space graph (GCN-F, after GloRe): (B, C, H, W) -> (B, C, H, W).

    theta (1x1 conv + norm, C -> N = C / 4) gives the projection B_F (N x HW), phi (C -> D = C / 2) the features;
    A_F is a learnt N x N adjacency (a 1D conv over the nodes, + batch norm), W_F a D x D state update::

        V_F = phi(X) B_F^T                                (D x N: N nodes of D features)
        Z = W_F (V_F (I - A_F)^T)                         (graph convolution, the Laplacian form)
        out = norm(conv1x1_{D -> C}(Z B_F))               (re-projection to the H x W positions)
    """

    def __init__(self, planes: int, norm: NormFactory) -> None:
        super().__init__()
        nodes, feats = planes // 4, planes // 2
        self.theta = nn.Sequential(nn.Conv2d(planes, nodes, 1, bias=False), norm(nodes, activation="identity"))
        self.phi = nn.Sequential(nn.Conv2d(planes, feats, 1, bias=False), norm(feats, activation="identity"))
        self.conv_adj = nn.Conv1d(nodes, nodes, 1, bias=False)
        self.bn_adj = nn.BatchNorm1d(nodes)
        self.conv_wf = nn.Conv1d(feats, feats, 1, bias=False)
        self.bn_wf = nn.BatchNorm1d(feats)
        self.out = nn.Sequential(nn.Conv2d(feats, planes, 1, bias=False), norm(planes))

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(V_F (B, D, N), B_F (B, N, HW))."""
        projection = self.theta(x).flatten(2)
        return torch.bmm(self.phi(x).flatten(2), projection.transpose(1, 2)), projection

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        v, projection = self.project(x)
        z = v - self.bn_adj(self.conv_adj(v.transpose(1, 2))).transpose(1, 2)  # V_F (I - A_F)^T
        z = self.bn_wf(self.conv_wf(z))
        return self.out(torch.bmm(z, projection).view(b, -1, h, w))


class DualGraph(nn.Module):
    """DGCNet's dual graph convolution (Zhang et al., BMVC 2019): (B, C, H, W) -> (B, C, H, W).

    D downsamples by d = 8 (three stride-2 depthwise 3x3 convs, each with a norm), up is the bilinear upsampling::

        X_S = X + up(GCN_S(D(X)))                         (:class:`CoordinateGraph` on the h x w = H/8 x W/8 map)
        X_F = X + GCN_F(X)                                (:class:`FeatureGraph`)
        Y = norm(conv1x1_{2C -> C}([X_S, X_F]))

    ``downsample=False`` is Table 5's "DGCNet-pooling" as we read "the pooling operation is removed from the context
    embedding": the DML-CSR paper calls DGCNet's reduction of the coordinate space (D here) its pooling, so D and up
    are removed and GCN-S runs on all H x W positions (an HW x HW adjacency); the parameters of D go with them.
    """

    def __init__(self, planes: int, norm: NormFactory, downsample: bool = True) -> None:
        super().__init__()
        self.down = nn.Sequential(*(layer for _ in range(3) for layer in (
            nn.Conv2d(planes, planes, 3, stride=2, padding=1, groups=planes, bias=False), norm(planes)))
        ) if downsample else nn.Identity()
        self.coordinate = CoordinateGraph(planes, norm)
        self.feature = FeatureGraph(planes, norm)
        self.fuse = nn.Sequential(nn.Conv2d(planes * 2, planes, 1, bias=False), norm(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial = x + resize_bilinear(self.coordinate(self.down(x)), x.shape[-2:])
        return self.fuse(torch.cat([spatial, x + self.feature(x)], dim=1))


def _dgcnet(inplanes: int, interplanes: int, norm: NormFactory, downsample: bool = True) -> DDualGCNHead:
    """Table 5's "+DGCNet": the DDGCN head's wiring (conva, graph, convb, fusion with the input) around
    :class:`DualGraph`."""
    return DDualGCNHead(inplanes, interplanes, norm, graph=DualGraph(interplanes, norm, downsample))


# model.context: the paper's DDGCN, the ablation baseline (Table 4) and the other context modules of Table 5
CONTEXTS = {
    "ddgcn": DDualGCNHead,
    "conv": ConvContext,
    "psp": PyramidPooling,
    "psp_nopool": lambda inplanes, interplanes, norm: PyramidPooling(inplanes, interplanes, norm, pooling=False),
    "dgcnet": _dgcnet,
    "dgcnet_nopool": lambda inplanes, interplanes, norm: _dgcnet(inplanes, interplanes, norm, downsample=False),
}
