"""predict_probs: resampling only when sizes differ, multi-scale averaging, flip with channel swap, output size."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from dml_csr.inference import predict_probs


class Recorder(torch.nn.Module):
    """Logits = a fixed 1x1 conv of the input at ``stride``; records the input sizes it saw."""

    def __init__(self, stride=1, classes=4):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, classes, 1)
        self.stride = stride
        self.seen = []

    def forward(self, x):
        self.seen.append(tuple(x.shape[-2:]))
        return {"parsing": self.conv(x[..., ::self.stride, ::self.stride])}


def test_full_resolution_output_is_not_resampled():
    m = Recorder(stride=1)
    x = torch.randn(2, 3, 9, 7)
    p = predict_probs(m, x)
    assert torch.allclose(p, torch.softmax(m.conv(x), 1), atol=1e-6)


def test_strided_output_is_upsampled_to_the_requested_size():
    m = Recorder(stride=4)
    x = torch.randn(1, 3, 16, 16)
    p = predict_probs(m, x, size=(20, 12))
    ref = torch.softmax(F.interpolate(m.conv(x[..., ::4, ::4]), size=(20, 12), mode="bilinear", align_corners=True),
                        1)
    assert p.shape == (1, 4, 20, 12) and torch.allclose(p, ref, atol=1e-6)


def test_multi_scale_is_the_mean_of_the_per_scale_probabilities():
    m = Recorder(stride=1)
    x = torch.randn(1, 3, 16, 20)
    p = predict_probs(m, x, scales=(0.5, 1.0, 1.5))
    assert m.seen == [(8, 10), (16, 20), (24, 30)]
    parts = []
    for s in (0.5, 1.0, 1.5):
        xs = x if s == 1.0 else F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=True)
        logits = F.interpolate(m.conv(xs), size=(16, 20), mode="bilinear", align_corners=True) if s != 1.0 \
            else m.conv(xs)
        parts.append(torch.softmax(logits, 1))
    assert torch.allclose(p, sum(parts) / 3, atol=1e-5)
    assert torch.allclose(p.sum(1), torch.ones(1, 16, 20), atol=1e-5)


def test_flip_averages_with_the_mirrored_and_swapped_prediction():
    m = Recorder(stride=1)
    x = torch.randn(1, 3, 6, 8)
    perm = [0, 2, 1, 3]  # classes 1 and 2 are a left/right pair
    p = predict_probs(m, x, flip_perm=perm)
    mirrored = torch.softmax(m.conv(x.flip(3)), 1).flip(3)[:, perm]
    assert torch.allclose(p, (torch.softmax(m.conv(x), 1) + mirrored) / 2, atol=1e-6)
    # equivariance: flip-tested prediction of the mirrored input = mirrored, swapped prediction of the input
    q = predict_probs(m, x.flip(3), flip_perm=perm)
    assert torch.allclose(q, p.flip(3)[:, perm], atol=1e-6)
