"""Lovasz-softmax against a brute-force Lovasz extension computed from the Jaccard set function's definition."""

import pytest
import torch

from dml_csr.losses.lovasz import lovasz_softmax, lovasz_softmax_flat


def jaccard_loss(fg: set, mispredicted: set) -> float:
    """The Jaccard set function of Berman et al.: |M| / |F u M| (0 for the empty set)."""
    union = fg | mispredicted
    return len(mispredicted) / len(union) if union else 0.0


def lovasz_extension(errors: list[float], fg: set) -> float:
    """Choquet-integral form of the Lovasz extension: integral over t in [0, 1] of J({i : m_i >= t}) dt.

    The level set is piecewise constant between consecutive distinct error values, so the integral is exact."""
    levels = sorted(set(errors) | {0.0})
    total = 0.0
    for lo, hi in zip(levels[:-1], levels[1:]):
        level_set = {i for i, m in enumerate(errors) if m >= hi}
        total += (hi - lo) * jaccard_loss(fg, level_set)
    return total


def brute_force(probs: torch.Tensor, labels: torch.Tensor, classes="present") -> float:
    """probs (P, C), labels (P,) -> mean over classes of the Lovasz extension at m = |[y = c] - p_c|."""
    per_class = []
    for c in range(probs.shape[1]):
        fg = {i for i, y in enumerate(labels.tolist()) if y == c}
        if classes == "present" and not fg:
            continue
        errors = [abs((1.0 if i in fg else 0.0) - float(p)) for i, p in enumerate(probs[:, c].tolist())]
        per_class.append(lovasz_extension(errors, fg))
    return sum(per_class) / len(per_class)


def test_flat_matches_brute_force_random():
    g = torch.Generator().manual_seed(0)
    for trial in range(20):
        p, c = 7, 4
        probs = torch.randn(p, c, generator=g, dtype=torch.float64).softmax(1)
        labels = torch.randint(0, c - (trial % 2), (p,), generator=g)  # sometimes a class is absent
        for classes in ("present", "all"):
            got = lovasz_softmax_flat(probs, labels, classes).item()
            assert got == pytest.approx(brute_force(probs, labels, classes), abs=1e-12)


def test_flat_with_ties_matches_brute_force():
    # uniform probabilities: every error of a class is tied, the sort order among ties must not matter
    probs = torch.full((6, 3), 1 / 3, dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 2, 2, 2])
    assert lovasz_softmax_flat(probs, labels).item() == pytest.approx(brute_force(probs, labels), abs=1e-12)


def test_hard_predictions_give_one_minus_iou():
    # at the vertices of the cube the extension equals the set function: loss = mean over present classes of 1 - IoU
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 2, 0])
    pred = torch.tensor([0, 1, 1, 1, 0, 2, 0, 0])
    probs = torch.nn.functional.one_hot(pred, 3).double()
    ious = []
    for c in range(3):
        inter = ((labels == c) & (pred == c)).sum().item()
        union = ((labels == c) | (pred == c)).sum().item()
        ious.append(inter / union)
    expected = sum(1 - i for i in ious) / 3
    assert lovasz_softmax_flat(probs, labels).item() == pytest.approx(expected, abs=1e-12)


def test_batch_variants_and_ignore():
    g = torch.Generator().manual_seed(1)
    b, c, h, w = 2, 3, 2, 3
    probs = torch.randn(b, c, h, w, generator=g, dtype=torch.float64).softmax(1)
    labels = torch.randint(0, c, (b, h, w), generator=g)
    labels[0, 0, :2] = 255
    labels[1, 1, 2] = 255

    def flat(i=None):
        p = probs if i is None else probs[i:i + 1]
        y = labels if i is None else labels[i:i + 1]
        p, y = p.permute(0, 2, 3, 1).reshape(-1, c), y.reshape(-1)
        keep = y != 255
        return brute_force(p[keep], y[keep])

    assert lovasz_softmax(probs, labels).item() == pytest.approx(flat(), abs=1e-12)
    per_image = (flat(0) + flat(1)) / 2
    assert lovasz_softmax(probs, labels, per_image=True).item() == pytest.approx(per_image, abs=1e-12)
    assert abs(per_image - flat()) > 1e-6  # the two variants genuinely differ


def test_perfect_prediction_is_zero_and_all_ignored_is_zero_with_grad():
    labels = torch.tensor([[[0, 1], [2, 1]]])
    probs = torch.nn.functional.one_hot(labels, 3).permute(0, 3, 1, 2).double()
    assert lovasz_softmax(probs, labels).item() == 0.0
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    loss = lovasz_softmax(logits.softmax(1), torch.full((1, 2, 2), 255))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(logits.grad).all()


def test_gradient_flows_and_descends():
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    labels = torch.randint(0, 3, (1, 4, 4))
    loss = lovasz_softmax(logits.softmax(1), labels)
    loss.backward()
    assert logits.grad.abs().sum() > 0
    with torch.no_grad():
        stepped = logits - 0.5 * logits.grad
    assert lovasz_softmax(stepped.softmax(1), labels) < loss


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="expected probs"):
        lovasz_softmax(torch.rand(1, 3, 2, 2), torch.zeros(1, 3, 3, dtype=torch.long))
