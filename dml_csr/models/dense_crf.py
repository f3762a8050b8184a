"""The fully connected CRF of Liu et al. 2017's CNN-CRF baseline (Tables 1-2: the shallow CNN, then a dense CRF on its
probabilities), the model of Krähenbühl and Koltun (NeurIPS 2011), computed exactly.

Energy of a labelling x of the N pixels: E(x) = sum_i psi_u(x_i) + sum_{i<j} mu(x_i, x_j) k(f_i, f_j), with the unary
psi_u = -log P from the network, the Potts compatibility mu(l, l') = [l != l'], and two Gaussian kernels on each
pixel's position p and colour I:

    k(f_i, f_j) = w_a exp(-|p_i - p_j|^2 / 2 theta_a^2 - |I_i - I_j|^2 / 2 theta_b^2)
                + w_s exp(-|p_i - p_j|^2 / 2 theta_g^2)

Mean-field inference (their Algorithm 1) starts from Q = P and repeats
Q_i(l) proportional to exp(-psi_u,i(l) - sum_l' mu(l, l') m_i(l')), m_i the message of the kernels to pixel i. Under
Potts the sum over l' != l is the total over l' less the term at l, and the total is the same for every l, so the
update is Q_i(l) proportional to P_i(l) exp(m_i(l)).

The message, as ``CRFParams.normalization`` says. ``none``, the paper's: m_i = sum_{j != i} k(f_i, f_j) Q_j, which
grows with the number of similar pixels (with the image's size). ``row``, the code released with the paper: each
kernel's sum taken over every j, the pixel itself included, and divided by that kernel's row sum D_i.
``symmetric``, pydensecrf's default (NORMALIZE_SYMMETRIC) and ours: D^-1/2 K D^-1/2 Q, the same row sums. The two
normalised forms keep a message about its kernel's weight at most, whatever the image's size, which is what the
suggested weights are for.

Krähenbühl and Koltun filter with a permutohedral lattice (an approximation, O(N)). Here every sum is exact: the
spatial kernel factorises into x and y, so two 1-D convolutions give it; the bilateral one is an N x N matrix per
image, O(N^2), built once and used for every iteration when it fits ``memory_mib``, else rebuilt in blocks of rows
each iteration. At Liu et al.'s 128x128 that is 16,384 pixels, a 1 GiB matrix, about 2 s an image on two CPU cores;
the input is refused above :data:`MAX_PIXELS`. The kernel settings default to the ones pydensecrf's documentation
suggests (w_a 10, theta_a 80 px, theta_b 13 levels, w_s 3, theta_g 3 px), with 5 iterations.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..conventions import CRF_SETTING_RANGES

__all__ = ["CRFParams", "dense_crf", "MAX_PIXELS", "KERNEL_SETTINGS", "crf_params", "changed_kernels",
           "kernel_text"]

MAX_PIXELS = 256 * 256  # N^2 = 4.3e9 kernel entries an iteration beyond this: minutes an image on a CPU
BLOCK_BYTES = 256 * 2**20  # the temporaries of one block of rows of the kernel matrix


@dataclasses.dataclass(frozen=True)
class CRFParams:
    iterations: int = 5
    bilateral_weight: float = 10.0  # w_a
    bilateral_xy: float = 80.0  # theta_a, pixels
    bilateral_rgb: float = 13.0  # theta_b, colour levels (0-255)
    spatial_weight: float = 3.0  # w_s
    spatial_xy: float = 3.0  # theta_g, pixels
    normalization: str = "symmetric"  # "symmetric" (pydensecrf's default), "row" (the NIPS 2011 code), "none" (paper)

    def __post_init__(self):
        """Each setting in range, else a ValueError naming it."""
        from .._typed import number
        checked = {"iterations": int(number(self.iterations, "dense CRF iterations", 0, 50, integer=True))}
        for name, (lo, hi) in CRF_SETTING_RANGES.items():
            checked[name] = float(number(getattr(self, name), f"dense CRF {name}", lo, hi)) + 0.0  # -0 -> 0
        for name, value in checked.items():  # kept as the types the computation takes (5.0 -> 5)
            object.__setattr__(self, name, value)
        if self.normalization not in ("symmetric", "row", "none"):
            raise ValueError(f"dense CRF normalization = {self.normalization!r}; expected 'symmetric', 'row' or "
                             f"'none'")


KERNEL_SETTINGS = tuple(f.name for f in dataclasses.fields(CRFParams) if f.name != "iterations")


def crf_params(iterations: int, kernels: Optional[Mapping[str, Any]] = None) -> CRFParams:
    """:class:`CRFParams` of ``iterations`` mean-field steps with the ``kernels`` settings (names of
    :data:`KERNEL_SETTINGS`) in place of the defaults; a name not among them is a ValueError listing them."""
    kernels = dict(kernels or {})
    for name in kernels:
        if name not in KERNEL_SETTINGS:
            raise ValueError(f"dense CRF setting {name!r} is unknown; expected one of {', '.join(KERNEL_SETTINGS)}")
    return CRFParams(iterations=iterations, **kernels)


def changed_kernels(params: CRFParams) -> dict[str, Any]:
    """The kernel settings of ``params`` that differ from the defaults, in :data:`KERNEL_SETTINGS` order."""
    default = CRFParams()
    return {k: getattr(params, k) for k in KERNEL_SETTINGS if getattr(params, k) != getattr(default, k)}


def kernel_text(kernels: Mapping[str, Any], assign: str = "=", between: str = " ") -> str:
    """``bilateral_rgb=20 normalization=row`` of {name: value} (a folder's ``bilateral_rgb20-normalizationrow``
    with ``assign=""``, ``between="-"``)."""
    return between.join(f"{k}{assign}{v:.12g}" if isinstance(v, (int, float)) else f"{k}{assign}{v}"
                        for k, v in kernels.items())


def _bilateral_features(image: Tensor, p: CRFParams) -> Tensor:
    """(N, 5) features of a (3, H, W) image: position / theta_a and colour / theta_b, centred (in float32 the squared
    distance of two pixels then errs by about 1e-4 at most)."""
    h, w = image.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64, device=image.device),
                            torch.arange(w, dtype=torch.float64, device=image.device), indexing="ij")
    f = torch.cat([torch.stack([xs.reshape(-1), ys.reshape(-1)], 1) / p.bilateral_xy,
                   image.reshape(3, -1).t().double() / p.bilateral_rgb], 1)
    return (f - f.mean(0)).float()


def _bilateral_rows(f: Tensor, rows: slice) -> Tensor:
    """Rows ``rows`` of the bilateral kernel matrix, its diagonal zero (no pixel messages itself)."""
    a = f[rows]
    k = torch.addmm((a * a).sum(1, keepdim=True) + (f * f).sum(1), a, f.t(), alpha=-2)
    k = k.clamp_min_(0).mul_(-0.5).exp_()
    idx = torch.arange(rows.start, rows.stop, device=k.device)
    k[idx - rows.start, idx] = 0.0
    return k


def _spatial_blur(v: Tensor, p: CRFParams) -> Tensor:
    """sum over every j (i included) of the spatial kernel k(p_i, p_j) v_j, for (C, H, W) ``v``: the kernel factorises
    into x and y, so two 1-D convolutions over the image (zero outside it) give it; taps end where the kernel falls
    below e^-28 (7.5 theta), which leaves it exact to about 1e-12."""
    c, h, w = v.shape
    r = min(math.ceil(7.5 * p.spatial_xy), max(h, w) - 1)
    t = torch.arange(-r, r + 1, dtype=v.dtype, device=v.device)
    g = torch.exp(-t * t / (2 * p.spatial_xy ** 2))
    x = F.conv2d(v[:, None], g.view(1, 1, 1, -1), padding=(0, r))
    return F.conv2d(x, g.view(1, 1, -1, 1), padding=(r, 0))[:, 0]


def _messages(f: Tensor, size: tuple, p: CRFParams, kept: Optional[list], blocks: list):
    """The function (C, N) Q -> (C, N) weighted messages of both kernels, normalised as ``p.normalization`` says."""
    h, w = size

    def bilateral(v: Tensor) -> Tensor:  # K v without the diagonal, (C, N) -> (C, N)
        vt = v.t()
        return torch.cat([(kept[j] if kept is not None else _bilateral_rows(f, r)) @ vt
                          for j, r in enumerate(blocks)]).t()

    def spatial(v: Tensor) -> Tensor:  # the same for the spatial kernel, with the diagonal: exp(0) = 1
        return _spatial_blur(v.reshape(-1, h, w), p).reshape(v.shape[0], -1)

    if p.normalization == "none":  # the paper: sum over j != i
        return lambda q: p.bilateral_weight * bilateral(q) + p.spatial_weight * (spatial(q) - q)
    ones = torch.ones(1, h * w, device=f.device)
    da, ds = bilateral(ones) + 1, spatial(ones)  # D: each kernel's row sums, the pixel itself included
    if p.normalization == "row":  # D^-1 K Q
        return lambda q: p.bilateral_weight * (bilateral(q) + q) / da + p.spatial_weight * spatial(q) / ds
    sa, ss = da.rsqrt(), ds.rsqrt()  # D^-1/2 K D^-1/2 Q
    return lambda q: (p.bilateral_weight * sa * (bilateral(sa * q) + sa * q)
                      + p.spatial_weight * ss * spatial(ss * q))


def dense_crf(probs: Tensor, images: Tensor, params: CRFParams = CRFParams(), memory_mib: int = 2048) -> Tensor:
    """Mean-field inference of the dense CRF on each image of a batch.

    Args:
        probs: (B, C, H, W) class probabilities (the network's softmax).
        images: (B, 3, H, W) the same pixels in RGB, 0-255 (uint8 or float), at the probabilities' size.
        params: the kernels, their normalisation and the iteration count (0: ``probs`` back unchanged).
        memory_mib: the most the bilateral kernel matrix may take to be kept across iterations.
    Returns:
        (B, C, H, W) float32 probabilities after ``params.iterations`` updates.
    """
    if probs.dim() != 4 or images.dim() != 4 or images.shape[1] != 3 or \
            images.shape[0] != probs.shape[0] or images.shape[-2:] != probs.shape[-2:]:
        raise ValueError(f"dense_crf expects probabilities (B, C, H, W) and RGB images (B, 3, H, W) of the same B, H "
                         f"and W; got {tuple(probs.shape)} and {tuple(images.shape)}")
    b, c, h, w = probs.shape
    if h * w == 0 or c == 0:
        raise ValueError(f"dense_crf got an empty input: probabilities {tuple(probs.shape)}")
    if h * w > MAX_PIXELS:
        raise ValueError(f"dense_crf is exact, O(N^2) in the pixels: {h}x{w} = {h * w:,} pixels; expected at most "
                         f"{MAX_PIXELS:,} (e.g. 256x256; Liu et al. run it at 128x128)")
    if not bool(torch.isfinite(probs).all()) or bool((probs < 0).any()):
        raise ValueError("dense_crf expects probabilities (finite, >= 0: the network's softmax); got negative or "
                         "non-finite values")
    if images.is_floating_point() and not bool(torch.isfinite(images).all()):
        raise ValueError("dense_crf expects finite image values (RGB, 0-255)")
    out = probs.float().clone()
    if params.iterations == 0:
        return out
    n = h * w
    step = max(1, BLOCK_BYTES // (12 * n))  # a block's kernel entries and their temporaries: about 12 bytes each
    blocks = [slice(s, min(s + step, n)) for s in range(0, n, step)]
    for i in range(b):
        f = _bilateral_features(images[i], params)
        kept = [_bilateral_rows(f, r) for r in blocks] if n * n * 4 <= memory_mib * 2**20 else None
        messages = _messages(f, (h, w), params, kept, blocks)
        unary = probs[i].float().reshape(c, n).clamp_min(1e-8).log()  # (C, N) log P
        q = torch.softmax(unary, 0)
        for _ in range(params.iterations):
            q = torch.softmax(unary + messages(q), 0)
        out[i] = q.reshape(c, h, w)
        del kept, messages  # one image's matrix at a time
    return out
