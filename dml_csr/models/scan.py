"""The gated linear recurrence of Liu et al. 2017 (eq. 3), scanned in four directions at once.

Along one scan line, with ``h_{-1} = 0``::

    h_i = x_i + g_i * (W h_{i-1} + b)          (identity activation)

``x`` and ``g`` are per-pixel C-vectors, ``W`` is a C x C matrix and ``b`` a C-vector, one pair per direction.
The four directions (left-to-right, right-to-left, top-to-bottom, bottom-to-top) are combined by a per-pixel maximum.

Speed: all four directions run in *one* loop over the scan axis, vectorised over (direction, batch, other axis) and
channels (a batched C x C matmul per step). Non-square maps are zero-padded to square first; a zero gate resets the
hidden state to exactly zero, so the padding never leaks into the real pixels. The loop is TorchScript (no Python
overhead per step, and it traces/exports to ONNX as a ``Loop`` whose trip count comes from the input shape). Training
uses a custom autograd backward: one reverse scan for the hidden-state gradient, then every parameter gradient in one
vectorised op.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor


def _script(fn):
    """``torch.jit.script`` without its deprecation warning (TorchScript keeps the loop exportable to ONNX)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.script(fn)

__all__ = ["linear_scan", "spatial_rnn_4dir", "pack_four_directions", "unpack_four_directions",
           "combine_four_directions", "loop_one_direction", "DIRECTIONS"]

DIRECTIONS = ("left_to_right", "right_to_left", "top_to_bottom", "bottom_to_top")


@_script
def _scan_fwd(x: Tensor, g: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """Forward scan. x, g: (D, L, C, M) (may be channel slices); w: (D, C, C); b: (D, C, 1). -> h: (D, L, C, M)."""
    h = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    prev = torch.zeros_like(h[:, 0])
    for i in range(x.shape[1]):
        prev = torch.addcmul(x[:, i], g[:, i], torch.baddbmm(b, w, prev))  # x_i + g_i * (W h_{i-1} + b)
        h[:, i] = prev
    return h


@_script
def _scan_bwd(grad_h: Tensor, g: Tensor, wt: Tensor) -> Tensor:
    """Reverse scan for delta_i = dL/dh_i (total): delta_i = xi_i + W^T (g_{i+1} * delta_{i+1}). wt = W^T."""
    delta = torch.empty_like(grad_h)
    n = grad_h.shape[1]
    acc = grad_h[:, n - 1]
    delta[:, n - 1] = acc
    for j in range(n - 1):
        i = n - 2 - j
        acc = torch.baddbmm(grad_h[:, i], wt, g[:, i + 1] * acc)
        delta[:, i] = acc
    return delta


class _LinearScan(torch.autograd.Function):
    """Autograd wrapper: TorchScript forward scan, reverse-scan backward with vectorised parameter gradients."""

    @staticmethod
    def forward(ctx, x: Tensor, g: Tensor, w: Tensor, b: Tensor) -> Tensor:  # type: ignore[override]
        h = _scan_fwd(x, g, w, b.unsqueeze(2))
        ctx.save_for_backward(g, w, b, h)
        return h

    @staticmethod
    def backward(ctx, grad_h: Tensor):  # type: ignore[override]
        g, w, b, h = ctx.saved_tensors
        delta = _scan_bwd(grad_h.contiguous(), g, w.transpose(1, 2))  # = dL/dx
        h_prev = F.pad(h[:, :-1], (0, 0, 0, 0, 1, 0))  # h_{i-1}, zero at i = 0: (D, L, C, M)
        u = g * delta  # dL/d(W h_{i-1} + b)
        grad_g = grad_w = grad_b = None
        if ctx.needs_input_grad[1]:
            grad_g = delta * (torch.matmul(w.unsqueeze(1), h_prev) + b[:, None, :, None])
        if ctx.needs_input_grad[2]:
            grad_w = torch.einsum("dlcm,dlkm->dck", u, h_prev)
        if ctx.needs_input_grad[3]:
            grad_b = u.sum(dim=(1, 3))
        return delta, grad_g, grad_w, grad_b


def linear_scan(x: Tensor, g: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """Run ``D`` independent gated linear recurrences along axis 1, channels on axis 2.

    Args:
        x: (D, L, C, M) inputs; L is the scan axis, C the channels, M lines scanned in parallel.
        g: (D, L, C, M) gates (same shape as x).
        w: (D, C, C) transition matrix per direction.
        b: (D, C) bias per direction.
    Returns:
        h: (D, L, C, M), ``h[:, i] = x[:, i] + g[:, i] * (w @ h[:, i-1] + b)``, starting from a zero state.
    """
    if x.shape != g.shape or x.dim() != 4:
        raise ValueError(f"linear_scan: x and g must both be (D, L, C, M); got {tuple(x.shape)} and {tuple(g.shape)}")
    tracing = torch.jit.is_tracing() or torch.jit.is_scripting()
    if tracing or not torch.is_grad_enabled() or not any(t.requires_grad for t in (x, g, w, b)):
        return _scan_fwd(x, g, w, b.unsqueeze(2))
    # under autocast the maps arrive in bf16/fp16 beside fp32 parameters: the custom backward needs one dtype
    dtype = torch.promote_types(torch.promote_types(x.dtype, g.dtype), w.dtype)
    return _LinearScan.apply(x.to(dtype), g.to(dtype), w.to(dtype), b.to(dtype))


@_script
def pack_four_directions(t: Tensor) -> Tensor:
    """(B, C, S, S) square map -> (4, S, C, B*S): the four scan orders of :data:`DIRECTIONS`, scan axis second."""
    bsz, c, s = t.shape[0], t.shape[1], t.shape[2]
    out = torch.empty((4, s, c, bsz, s), dtype=t.dtype, device=t.device)
    tt = torch.empty_like(t)
    tt.copy_(t.transpose(2, 3))  # a plain 2-D transpose copy is much faster than a 4-D permute copy
    out[0].copy_(tt.permute(2, 1, 0, 3))  # (W, C, B, H): scan along W, lines are rows
    out[2].copy_(t.permute(2, 1, 0, 3))  # (H, C, B, W): scan along H, lines are columns
    out[1].copy_(out[0].flip(0))
    out[3].copy_(out[2].flip(0))
    return out.reshape(4, s, c, bsz * s)


@_script
def combine_four_directions(h: Tensor) -> Tensor:
    """Node-wise maximum of the four packed hidden maps: (4, S, C, B*S) -> (B, C, S, S) in image layout."""
    s, c = h.shape[1], h.shape[2]
    batch = h.shape[3] // s
    h = h.reshape(4, s, c, batch, s)
    rows = torch.maximum(h[0], h[1].flip(0))  # (W, C, B, H)
    cols = torch.maximum(h[2], h[3].flip(0))  # (H, C, B, W)
    out = torch.empty((batch, c, s, s), dtype=h.dtype, device=h.device)
    out.copy_(rows.permute(2, 1, 3, 0))
    return torch.maximum(out, cols.permute(2, 1, 0, 3))


@_script
def unpack_four_directions(h: Tensor) -> Tensor:
    """Inverse of :func:`pack_four_directions`: (4, S, C, B*S) -> (4, B, C, S, S) in image layout."""
    s, c = h.shape[1], h.shape[2]
    batch = h.shape[3] // s
    h = h.reshape(4, s, c, batch, s)
    return torch.stack([h[0].permute(2, 1, 3, 0), h[1].flip(0).permute(2, 1, 3, 0),
                        h[2].permute(2, 1, 0, 3), h[3].flip(0).permute(2, 1, 0, 3)])


@_script
def _pad_square(t: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, C, S, S), S = max(H, W), zeros appended at the bottom / right (scripted: shape-dynamic)."""
    s = max(t.shape[2], t.shape[3])
    return F.pad(t, [0, s - t.shape[3], 0, s - t.shape[2]])  # always a new tensor (the tracer needs that)


@_script
def _crop_like(t: Tensor, ref: Tensor) -> Tensor:
    """Crop the last two dims of ``t`` to those of ``ref``."""
    return t[..., : ref.shape[2], : ref.shape[3]]


def spatial_rnn_4dir(x: Tensor, g: Tensor, w: Tensor, b: Tensor, *, combine: bool = True) -> Tensor:
    """Four-direction gated spatial RNN on a feature map, combined by a per-pixel maximum over directions.

    Args:
        x: (B, C, H, W) label representation X.
        g: (B, C, H, W) gates G (callers keep them in [-1, 1] for stability).
        w: (4, C, C) transition matrices, in the order of :data:`DIRECTIONS`.
        b: (4, C) biases.
        combine: if False return all four hidden maps (4, B, C, H, W) instead of their maximum.
    Returns:
        (B, C, H, W) node-wise maximum of the four hidden maps (or (4, B, C, H, W) if ``combine`` is False).
    """
    if x.dim() != 4 or x.shape != g.shape:
        raise ValueError(f"spatial_rnn_4dir: x and g must both be (B, C, H, W); got {tuple(x.shape)}, {tuple(g.shape)}")
    if w.shape != (4, x.shape[1], x.shape[1]) or b.shape != (4, x.shape[1]):
        raise ValueError(f"spatial_rnn_4dir: expected w (4, {x.shape[1]}, {x.shape[1]}) and b (4, {x.shape[1]}); "
                         f"got {tuple(w.shape)} and {tuple(b.shape)}")
    if torch.jit.is_tracing() or torch.jit.is_scripting():  # export: shape-dynamic, ONNX-friendly ops only
        hs = _scan_fwd_export(_pack_export(_pad_square(x)), _pack_export(_pad_square(g)), w, b.unsqueeze(2))
        return _crop_like(_combine_export(hs) if combine else _unpack_export(hs), x)
    if x.shape[-1] != x.shape[-2]:  # zero x and zero g reset the state: padding never reaches real pixels
        hs = linear_scan(pack_four_directions(_pad_square(x)), pack_four_directions(_pad_square(g)), w, b)
    else:
        hs = linear_scan(pack_four_directions(x), pack_four_directions(g), w, b)
    return _crop_like(combine_four_directions(hs) if combine else unpack_four_directions(hs), x)


# ------------------------------------------------------------------------------------ export versions (no in-place)
@_script
def _scan_fwd_export(x: Tensor, g: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """:func:`_scan_fwd` without in-place writes (exports to an ONNX Loop with a shape-derived trip count)."""
    prev = torch.zeros_like(x[:, 0])
    hs: list[Tensor] = []
    for i in range(x.shape[1]):
        prev = x[:, i] + g[:, i] * (torch.bmm(w, prev) + b)
        hs.append(prev)
    return torch.stack(hs, 1)


@_script
def _pack_export(t: Tensor) -> Tensor:
    """:func:`pack_four_directions` without in-place copies."""
    bsz, c, s = t.shape[0], t.shape[1], t.shape[2]
    rows = t.permute(3, 1, 0, 2)
    cols = t.permute(2, 1, 0, 3)
    return torch.stack([rows, rows.flip(0), cols, cols.flip(0)]).reshape(4, s, c, bsz * s)


@_script
def _unpack_export(h: Tensor) -> Tensor:
    """:func:`unpack_four_directions` for export."""
    s, c = h.shape[1], h.shape[2]
    h = h.reshape(4, s, c, h.shape[3] // s, s)
    return torch.stack([h[0].permute(2, 1, 3, 0), h[1].flip(0).permute(2, 1, 3, 0),
                        h[2].permute(2, 1, 0, 3), h[3].flip(0).permute(2, 1, 0, 3)])


@_script
def _combine_export(h: Tensor) -> Tensor:
    """:func:`combine_four_directions` without in-place copies."""
    s, c = h.shape[1], h.shape[2]
    h = h.reshape(4, s, c, h.shape[3] // s, s)
    rows = torch.maximum(h[0], h[1].flip(0)).permute(2, 1, 3, 0)
    cols = torch.maximum(h[2], h[3].flip(0)).permute(2, 1, 0, 3)
    return torch.maximum(rows, cols)


def loop_one_direction(x: Tensor, g: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """The straightforward baseline: each direction on its own, one step per Python iteration, plain autograd.

    Same arguments and result as :func:`spatial_rnn_4dir`; used by the benchmark as the speed baseline.
    """
    outs = []
    for d in range(4):
        horizontal = d < 2
        n = x.shape[-1] if horizontal else x.shape[-2]
        order = range(n) if d % 2 == 0 else range(n - 1, -1, -1)
        prev = torch.zeros_like(x[..., 0] if horizontal else x[..., 0, :])  # (B, C, other)
        steps = {}
        for i in order:
            xi = x[..., i] if horizontal else x[..., i, :]
            gi = g[..., i] if horizontal else g[..., i, :]
            prev = xi + gi * (torch.einsum("ck,bkn->bcn", w[d], prev) + b[d][:, None])
            steps[i] = prev
        outs.append(torch.stack([steps[i] for i in range(n)], dim=-1 if horizontal else -2))
    return torch.stack(outs).amax(dim=0)
