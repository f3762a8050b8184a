"""RNN-G losses: boundary-gate targets, the 1:5 sampling, the gate CE by hand, and the total."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dml_csr.losses.rnn_g import gate_ce, gate_targets, rnn_g_loss, sample_gate_pixels


def test_gate_targets_zero_on_boundary_and_pooled():
    edge = torch.zeros(1, 4, 4, dtype=torch.long)
    edge[0, 0, 1] = 1
    edge[0, 3, 3] = 255
    t, valid = gate_targets(edge, (4, 4))
    assert t[0, 0, 1] == 0 and t.sum() == 15 and not valid[0, 3, 3] and valid.sum() == 15
    t2, valid2 = gate_targets(edge, (2, 2))
    assert t2.tolist() == [[[0.0, 1.0], [1.0, 1.0]]] and valid2.all()  # a cell with one boundary pixel is boundary
    with pytest.raises(ValueError, match="edge"):
        gate_targets(edge[0], (2, 2))


def test_sampling_is_one_to_five_per_image():
    gen = torch.Generator().manual_seed(0)
    target = torch.ones(3, 20, 20)
    target[0, 5, :4] = 0  # 4 boundary pixels -> 20 others
    target[1, :, :] = 0
    target[1, 0, :10] = 1  # 390 boundary pixels, only 10 others: all of them
    valid = torch.ones(3, 20, 20, dtype=torch.bool)  # image 2: no boundary -> nothing sampled
    mask = sample_gate_pixels(target, valid, 5.0, gen)
    pos = (target == 0) & mask
    neg = (target == 1) & mask
    assert pos.flatten(1).sum(1).tolist() == [4, 390, 0]
    assert neg.flatten(1).sum(1).tolist() == [20, 10, 0]
    assert torch.equal(pos, target == 0)  # every boundary pixel is kept
    other = sample_gate_pixels(target, valid, 5.0, torch.Generator().manual_seed(1))
    assert not torch.equal(other, mask)  # the negatives are a random draw


def test_gate_ce_by_hand():
    edge = torch.zeros(1, 2, 7, dtype=torch.long)
    edge[0, 0, 0] = 1  # one boundary pixel -> 5 of the 13 others
    logits = torch.randn(1, 1, 2, 7)
    gen = torch.Generator().manual_seed(3)
    mask = sample_gate_pixels(*gate_targets(edge, (2, 7)), 5.0, torch.Generator().manual_seed(3))
    assert mask.sum() == 6
    target = 1.0 - edge.float()
    manual = sum(F.binary_cross_entropy_with_logits(logits[0, 0][m], target[0][m], reduction="sum")
                 for m in [mask[0]]) / 6
    torch.testing.assert_close(gate_ce(logits, edge, 5.0, gen), manual)
    assert gate_ce(logits, torch.zeros_like(edge)) == 0  # no boundary in the batch: no gate loss


def test_total_and_terms():
    torch.manual_seed(0)
    label = torch.randint(0, 3, (2, 8, 8))
    label[:, 0] = 255
    edge = torch.zeros(2, 8, 8, dtype=torch.long)
    edge[:, 4] = 1
    outputs = {"parsing": torch.randn(2, 3, 8, 8, requires_grad=True), "coarse": torch.randn(2, 3, 4, 4),
               "gate": torch.randn(2, 1, 4, 4)}
    terms = rnn_g_loss(outputs, {"label": label, "edge": edge}, weights={"gate_ce": 2.0})
    assert set(terms) == {"parsing_ce", "coarse_ce", "gate_ce", "total"}
    ce = F.cross_entropy(outputs["parsing"], label, ignore_index=255)
    torch.testing.assert_close(terms["parsing_ce"], ce)
    up = F.interpolate(outputs["coarse"], size=(8, 8), mode="bilinear", align_corners=True)
    torch.testing.assert_close(terms["coarse_ce"], F.cross_entropy(up, label, ignore_index=255))
    torch.testing.assert_close(terms["total"], terms["parsing_ce"] + terms["coarse_ce"] + 2 * terms["gate_ce"])
    assert math.isfinite(terms["total"].item())
    # eval-mode outputs: parsing only, no edge needed
    assert set(rnn_g_loss({"parsing": outputs["parsing"]}, {"label": label})) == {"parsing_ce", "total"}
    with pytest.raises(KeyError, match="edge"):
        rnn_g_loss(outputs, {"label": label})
    with pytest.raises(KeyError, match="unknown loss weight"):
        rnn_g_loss(outputs, {"label": label, "edge": edge}, weights={"gate": 1.0})


def test_two_stage_terms():
    from dml_csr.data.labels import get_spec
    from dml_csr.face_parts import part_table
    from dml_csr.models.rnn_g import RNNG
    from dml_csr.models.two_stage import TwoStageRNNG
    torch.manual_seed(0)
    classes = get_spec("helen").classes
    m = TwoStageRNNG(RNNG(11, width=8), classes, part_width=8).train()
    label = torch.randint(0, 11, (1, 64, 64))
    edge = torch.randint(0, 2, (1, 64, 64))
    outputs = m(torch.randn(1, 3, 64, 64), label=label)
    with pytest.raises(KeyError, match="part table"):
        rnn_g_loss(outputs, {"label": label, "edge": edge})
    terms = rnn_g_loss(outputs, {"label": label, "edge": edge}, parts=part_table(classes))
    assert {"stage1_ce", "part_ce", "parsing_ce", "coarse_ce", "gate_ce"} <= set(terms)
    terms["total"].backward()
    assert all(p.grad is not None for p in m.part_nets.parameters())


def test_background_sampling_keeps_the_foreground_and_five_background_pixels_per_foreground_one():
    """Liu et al.'s Multi-Face loss sampling: per image, every skin/hair pixel and 5 times as many background ones
    drawn at random; ignored pixels stay ignored; an image with too little background keeps all of it."""
    from dml_csr.losses.rnn_g import sample_background

    label = torch.zeros(2, 20, 20, dtype=torch.long)
    label[0, 2:5, 3:7] = 1  # 12 skin pixels
    label[0, 10:12, 10:12] = 2  # 4 hair pixels
    label[0, 19, :] = 255
    label[1, :, :15] = 1  # 300 foreground, 100 background
    out = sample_background(label, 5.0, torch.Generator().manual_seed(0))
    fg = (label == 1) | (label == 2)
    assert torch.equal(out[fg], label[fg]) and (out[label == 255] == 255).all()
    assert int((out[0] == 0).sum()) == 5 * 16
    assert int((out[1] == 0).sum()) == 100
    assert set(torch.unique(out).tolist()) <= {0, 1, 2, 255}
