"""Parsing cross-entropy with ignore 255, computed at the label size after upsampling."""
import math

import pytest
import torch
import torch.nn.functional as F

from dml_csr.losses.parsing import parsing_ce, parsing_lovasz, pixel_ce


def test_ce_ignores_255_by_hand():
    # one image, 1x3 pixels, 2 classes; logits [log 3, 0] -> p = (3/4, 1/4)
    logits = torch.tensor([math.log(3.0), 0.0]).view(1, 2, 1, 1).expand(1, 2, 1, 3).contiguous()
    labels = torch.tensor([[[0, 1, 255]]])
    expected = (-math.log(0.75) - math.log(0.25)) / 2  # the ignored pixel counts neither in the sum nor in N
    assert parsing_ce(logits, labels).item() == pytest.approx(expected, rel=1e-6)
    ce_map = pixel_ce(logits, labels)
    assert ce_map.shape == (1, 1, 3) and ce_map[0, 0, 2].item() == 0.0


def test_ce_upsamples_with_align_corners():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 3, 3, requires_grad=True)
    labels = torch.randint(0, 4, (2, 9, 9))
    labels[1, :4] = 255
    up = F.interpolate(logits, size=(9, 9), mode="bilinear", align_corners=True)
    expected = F.cross_entropy(up, labels, ignore_index=255)
    got = parsing_ce(logits, labels)
    assert torch.allclose(got, expected, atol=1e-6)
    got.backward()
    assert logits.grad.abs().sum() > 0


def test_all_ignored_is_zero_not_nan():
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    loss = parsing_ce(logits, torch.full((1, 4, 4), 255))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(logits.grad).all()


def test_lovasz_on_logits_is_softmax_lovasz():
    torch.manual_seed(1)
    logits = torch.randn(1, 3, 4, 4)
    labels = torch.randint(0, 3, (1, 4, 4))
    assert 0.0 < parsing_lovasz(logits, labels).item() <= 1.0
    perfect = 50.0 * F.one_hot(labels, 3).permute(0, 3, 1, 2).float()
    assert parsing_lovasz(perfect, labels).item() < 1e-6
