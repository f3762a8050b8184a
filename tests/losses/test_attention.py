"""Dual edge-attention losses (eq. 3 and 4) on hand-computed examples, with and without edge pixels."""
import math

import pytest
import torch

from dml_csr.losses.attention import binary_edge_attention, official_category_attention, semantic_edge_attention

L_A = -math.log(0.75)  # CE of a pixel labelled 0
L_B = -math.log(0.25)  # CE of a pixel labelled 1


def _example():
    """2 images of 1x4 pixels, 3 classes; per-pixel CE is L_A where the label is 0, L_B where it is 1."""
    # logits (log 3, 0, -1e4) -> p = (3/4, 1/4, 0)
    logits = torch.tensor([math.log(3.0), 0.0, -1e4]).view(1, 3, 1, 1).expand(2, 3, 1, 4).contiguous()
    labels = torch.tensor([[[0, 1, 0, 255]], [[1, 1, 0, 0]]])
    return logits, labels


def test_binary_attention_by_hand():
    logits, labels = _example()
    edge = torch.tensor([[[1, 1, 0, 255]], [[0, 0, 0, 1]]])
    # image 0: edge pixels 0 (L_A) and 1 (L_B) -> mean; image 1: edge pixel 3 (label 0, L_A)
    expected = ((L_A + L_B) / 2 + L_A) / 2
    assert binary_edge_attention(logits, labels, edge).item() == pytest.approx(expected, rel=1e-6)


def test_binary_attention_image_without_edges_counts_as_zero():
    logits, labels = _example()
    edge = torch.tensor([[[1, 1, 0, 255]], [[0, 0, 0, 0]]])
    assert binary_edge_attention(logits, labels, edge).item() == pytest.approx((L_A + L_B) / 2 / 2, rel=1e-6)


def test_no_edge_pixels_is_exactly_zero_with_finite_grad():
    logits, labels = _example()
    logits = logits.clone().requires_grad_(True)
    zero = torch.zeros_like(labels)
    b = binary_edge_attention(logits, labels, zero)
    c = semantic_edge_attention(logits, labels, zero)
    (b + c).backward()
    assert b.item() == 0.0 and c.item() == 0.0
    assert torch.isfinite(logits.grad).all()


def test_semantic_attention_by_hand_with_weights():
    logits, labels = _example()
    sem = torch.tensor([[[1, 2, 0, 255]], [[2, 2, 1, 0]]])
    w = [10.0, 2.0, 3.0]  # w_0 is unused (0 = no edge)
    # image 0: class 1 -> pixel 0 (L_A); class 2 -> pixel 1 (L_B)
    # image 1: class 2 -> pixels 0, 1 (L_B, L_B) mean L_B; class 1 -> pixel 2 (L_A)
    terms = {1: [L_A, L_A], 2: [L_B, L_B]}
    n, c = 2, 3
    expected = sum(w[j] * v for j, vals in terms.items() for v in vals) / (n * c)
    assert semantic_edge_attention(logits, labels, sem, w).item() == pytest.approx(expected, rel=1e-6)


def test_the_authors_category_attention_by_hand():
    """Per image: CE times the class index over the category-edge pixels, divided by their count; batch mean."""
    logits, labels = _example()
    sem = torch.tensor([[[1, 2, 0, 255]], [[2, 2, 1, 0]]])
    image0 = (1 * L_A + 2 * L_B) / 2  # pixel 3 (255) is no edge
    image1 = (2 * L_B + 2 * L_B + 1 * L_A) / 3
    got = official_category_attention(logits, labels, sem)
    assert got.item() == pytest.approx((image0 + image1) / 2, rel=1e-6)
    assert official_category_attention(logits, labels, torch.zeros_like(sem)).item() == 0.0  # no edge: 0, not NaN


def test_the_authors_binary_count_includes_edge_pixels_with_ignored_labels():
    logits, labels = _example()
    edge = torch.tensor([[[1, 1, 0, 1]], [[0, 0, 0, 1]]])  # pixel 3 of image 0 is an edge with label 255 (CE 0)
    ours = ((L_A + L_B) / 2 + L_A) / 2
    theirs = ((L_A + L_B) / 3 + L_A) / 2
    assert binary_edge_attention(logits, labels, edge).item() == pytest.approx(ours, rel=1e-6)
    assert binary_edge_attention(logits, labels, edge, count_ignored=True).item() == pytest.approx(theirs, rel=1e-6)


def test_semantic_attention_ignores_ignored_labels_and_checks_weights():
    logits, labels = _example()
    sem = torch.tensor([[[0, 0, 0, 2]], [[0, 0, 0, 0]]])  # the only edge pixel has label 255
    assert semantic_edge_attention(logits, labels, sem).item() == 0.0
    with pytest.raises(ValueError, match="class_weights"):
        semantic_edge_attention(logits, labels, sem, [1.0, 2.0])


def test_attention_gradients_flow():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    labels = torch.randint(0, 3, (2, 8, 8))
    edge = torch.randint(0, 2, (2, 8, 8))
    sem = edge * labels
    (binary_edge_attention(logits, labels, edge) + semantic_edge_attention(logits, labels, sem)).backward()
    assert logits.grad.abs().sum() > 0
