"""Binary-edge and category-edge weighted cross-entropies: weight values and the balanced means they produce."""
import pytest
import torch
import torch.nn.functional as F

from dml_csr.losses.edges import (binary_edge_ce, binary_edge_weights, semantic_edge_ce, semantic_edge_weights,
                                  weighted_ce)


def _target():
    # 4x4, 3 edge pixels, 9 non-edge, 4 ignored
    t = torch.zeros(1, 4, 4, dtype=torch.long)
    t[0, 0, :3] = 1
    t[0, 3, :] = 255
    return t


def test_binary_weights_values():
    w = binary_edge_weights(_target())
    assert w.tolist() == pytest.approx([3 / 12, 9 / 12])  # [w_neg, w_pos] = [N_pos / N, N_neg / N]


def test_binary_ce_is_mean_of_class_means():
    torch.manual_seed(0)
    logits = torch.randn(1, 2, 4, 4, requires_grad=True)
    t = _target()
    ce = F.cross_entropy(logits, t, ignore_index=255, reduction="none")
    pos, neg = ce[t == 1].mean(), ce[t == 0].mean()
    got = binary_edge_ce(logits, t)
    assert got.item() == pytest.approx(((pos + neg) / 2).item(), rel=1e-6)
    reference = F.cross_entropy(logits, t, weight=torch.tensor([3 / 12, 9 / 12]), ignore_index=255)
    assert got.item() == pytest.approx(reference.item(), rel=1e-6)
    got.backward()
    assert logits.grad.abs().sum() > 0


def test_binary_ce_without_edges_is_plain_mean_not_nan():
    logits = torch.randn(2, 2, 3, 3, requires_grad=True)
    t = torch.zeros(2, 3, 3, dtype=torch.long)
    got = binary_edge_ce(logits, t)
    assert torch.isfinite(got)
    assert got.item() == pytest.approx(F.cross_entropy(logits, t).item(), rel=1e-6)
    got.backward()
    assert torch.isfinite(logits.grad).all()


def test_binary_ce_upsamples():
    logits = torch.randn(1, 2, 2, 2)
    t = _target()
    up = F.interpolate(logits, size=(4, 4), mode="bilinear", align_corners=True)
    assert binary_edge_ce(logits, t).item() == pytest.approx(binary_edge_ce(up, t).item(), rel=1e-6)
    with pytest.raises(ValueError, match="2 edge logit channels"):
        binary_edge_ce(torch.randn(1, 3, 4, 4), t)


def test_semantic_weights_values():
    t = torch.tensor([[[0, 0, 0, 0, 0, 1], [2, 2, 0, 0, 255, 255]]])  # N = 10: 7 non-edge, 1 of class 1, 2 of class 2
    bal = semantic_edge_weights(t, 4, "balanced")
    assert bal.tolist() == pytest.approx([3 / 10, 7 / 10, 7 / 10, 7 / 10])
    freq = semantic_edge_weights(t, 4, "frequency")
    assert freq.tolist() == pytest.approx([7 / 10, 1 / 10, 2 / 10, 0.0])
    with pytest.raises(ValueError, match="balanced"):
        semantic_edge_weights(t, 4, "inverse")


def test_semantic_ce_matches_torch_weighted_ce():
    torch.manual_seed(2)
    t = torch.tensor([[[0, 0, 0, 0, 0, 1], [2, 2, 0, 0, 255, 255]]])
    logits = torch.randn(1, 4, 2, 6)
    for mode in ("balanced", "frequency"):
        w = semantic_edge_weights(t, 4, mode)
        ref = F.cross_entropy(logits, t, weight=w, ignore_index=255)
        assert semantic_edge_ce(logits, t, mode).item() == pytest.approx(ref.item(), rel=1e-6)


def test_weighted_ce_all_ignored_is_zero():
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    loss = weighted_ce(logits, torch.full((1, 2, 2), 255), torch.ones(3))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(logits.grad).all()
