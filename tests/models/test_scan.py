"""The four-direction gated scan against a naive per-pixel loop (forward and gradients, float64)."""
from __future__ import annotations

import pytest
import torch

from dml_csr.models.scan import (linear_scan, loop_one_direction, pack_four_directions, spatial_rnn_4dir,
                                 unpack_four_directions)


def naive_rnn(x, g, w, b):
    """Per-pixel reference of eq. 3 with h = 0 before the first pixel; returns (4, B, C, H, W), directions
    left->right, right->left, top->bottom, bottom->top. Pure Python loops over every pixel."""
    bsz, c, hh, ww = x.shape
    outs = []
    for d in range(4):
        out = torch.zeros_like(x)
        for n in range(bsz):
            lines = range(hh) if d < 2 else range(ww)
            for line in lines:
                length = ww if d < 2 else hh
                order = range(length) if d % 2 == 0 else range(length - 1, -1, -1)
                prev = torch.zeros(c, dtype=x.dtype)
                for i in order:
                    yy, xx = (line, i) if d < 2 else (i, line)
                    prev = x[n, :, yy, xx] + g[n, :, yy, xx] * (w[d] @ prev + b[d])
                    out[n, :, yy, xx] = prev
        outs.append(out)
    return torch.stack(outs)


def _inputs(bsz=2, c=3, hh=4, ww=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(bsz, c, hh, ww, generator=gen, dtype=torch.float64)
    g = torch.rand(bsz, c, hh, ww, generator=gen, dtype=torch.float64) * 2 - 1
    w = torch.randn(4, c, c, generator=gen, dtype=torch.float64) * 0.5
    b = torch.randn(4, c, generator=gen, dtype=torch.float64)
    return x, g, w, b


@pytest.mark.parametrize("hh,ww", [(4, 5), (5, 3), (4, 4), (1, 3)])
def test_forward_matches_naive_loop(hh, ww):
    x, g, w, b = _inputs(hh=hh, ww=ww)
    ref = naive_rnn(x, g, w, b)
    got = spatial_rnn_4dir(x, g, w, b, combine=False)
    assert got.shape == (4, 2, 3, hh, ww)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    # the four-direction output is the node-wise max of the four hidden maps
    torch.testing.assert_close(spatial_rnn_4dir(x, g, w, b), ref.amax(dim=0), rtol=1e-12, atol=1e-12)


def test_four_direction_max_selects_per_pixel():
    x, g, w, b = _inputs()
    hidden = spatial_rnn_4dir(x, g, w, b, combine=False)
    combined = spatial_rnn_4dir(x, g, w, b)
    assert torch.all(combined >= hidden - 1e-15)  # at least every direction...
    assert torch.all((hidden == combined.unsqueeze(0)).any(dim=0))  # ...and equal to one of them at each node
    winners = hidden.argmax(dim=0)
    assert len(torch.unique(winners)) == 4  # on random inputs every direction wins somewhere


def test_gradients_match_naive_loop():
    x, g, w, b = _inputs(hh=3, ww=4)
    leaves = [t.clone().requires_grad_() for t in (x, g, w, b)]
    ref_leaves = [t.clone().requires_grad_() for t in (x, g, w, b)]
    weights = torch.randn(4, 2, 3, 3, 4, dtype=torch.float64)
    (spatial_rnn_4dir(*leaves, combine=False) * weights).sum().backward()
    (naive_rnn(*ref_leaves) * weights).sum().backward()
    for got, ref in zip(leaves, ref_leaves):
        torch.testing.assert_close(got.grad, ref.grad, rtol=1e-10, atol=1e-12)


def test_gradcheck_custom_backward():
    x, g, w, b = _inputs(bsz=1, c=2, hh=3, ww=4)
    args = [t.requires_grad_() for t in (x, g, w, b)]
    assert torch.autograd.gradcheck(lambda *a: spatial_rnn_4dir(*a, combine=False), args)
    # the raw scan with its custom backward, non-contiguous channel slices included
    xs = torch.randn(2, 5, 4, 3, dtype=torch.float64)
    xg = torch.randn(2, 5, 2, 3, dtype=torch.float64).tanh().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, gg, ww, bb: linear_scan(a[:, :, :2], gg, ww, bb),
                                    (xs.requires_grad_(), xg, w[:2, :2, :2].detach().requires_grad_(),
                                     b[:2, :2].detach().requires_grad_()))


def test_straightforward_loop_baseline_agrees():
    x, g, w, b = _inputs(hh=5, ww=3)
    torch.testing.assert_close(loop_one_direction(x, g, w, b), spatial_rnn_4dir(x, g, w, b), rtol=1e-12, atol=1e-12)


def test_pack_unpack_roundtrip():
    t = torch.randn(2, 3, 4, 4)
    packed = pack_four_directions(t)
    assert packed.shape == (4, 4, 3, 8)
    torch.testing.assert_close(unpack_four_directions(packed), t.expand(4, -1, -1, -1, -1))


def test_zero_gate_gives_input_and_bad_shapes_raise():
    x, _, w, b = _inputs()
    torch.testing.assert_close(spatial_rnn_4dir(x, torch.zeros_like(x), w, b), x)
    with pytest.raises(ValueError, match="x and g"):
        spatial_rnn_4dir(x, x[:, :2], w, b)
    with pytest.raises(ValueError, match="expected w"):
        spatial_rnn_4dir(x, x, w[:2], b)
