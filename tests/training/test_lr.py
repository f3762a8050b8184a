"""The learning rate of every step: poly over the first phase, a per-epoch cosine restarting each cycle."""
import math
from types import SimpleNamespace

import pytest

from dml_csr.training.lr import cosine_lr, learning_rate, poly_lr


def test_cosine_lr_values():
    assert cosine_lr(0, 10, 1e-3, 1e-5) == pytest.approx(1e-3)
    assert cosine_lr(5, 10, 1e-3, 1e-5) == pytest.approx((1e-3 + 1e-5) / 2)
    assert cosine_lr(10, 10, 1e-3, 1e-5) == pytest.approx(1e-5)
    assert cosine_lr(2, 10, 1.0, 0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.2)))
    values = [cosine_lr(e, 10, 1.0, 0.0) for e in range(10)]
    assert all(a > b for a, b in zip(values, values[1:]))
    with pytest.raises(ValueError, match="epoch_in_cycle"):
        cosine_lr(11, 10, 1.0, 0.0)


def test_poly_lr_values():
    assert poly_lr(0, 10, 1.0, power=1.0) == 1.0
    assert poly_lr(5, 10, 1.0, power=1.0) == pytest.approx(0.5)
    assert poly_lr(5, 10, 2.0, power=0.9) == pytest.approx(2.0 * 0.5 ** 0.9)
    assert poly_lr(10, 10, 1.0) == 0.0 and poly_lr(12, 10, 1.0) == 0.0
    # warm-up: linear ramp to base, then the decay over the remaining steps
    assert [poly_lr(s, 12, 1.0, 1.0, warmup_steps=4) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert poly_lr(4, 12, 1.0, 1.0, warmup_steps=4) == 1.0
    assert poly_lr(8, 12, 1.0, 1.0, warmup_steps=4) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="warmup_steps"):
        poly_lr(0, 4, 1.0, warmup_steps=4)


def _train(**kw):
    base = dict(epochs=3, lr=1e-3, poly_power=0.9, poly_over="first_phase", warmup_epochs=0.0, cycles=2,
                cycle_epochs=4, cycle_lr=1e-5, cycle_lr_min=0.0, stage1_epochs=0)
    return SimpleNamespace(**{**base, **kw})


def test_paper_schedule_at_the_phase_boundary_and_in_a_cycle():
    """Poly to 0 over the first phase; each cycle a per-epoch cosine from 1e-5 to 0 (the paper)."""
    t, spe = _train(), 4  # first phase: steps 0..11; cycle 1: epochs 3..6 = steps 12..27; cycle 2 from step 28
    assert learning_rate(0, t, spe) == pytest.approx(1e-3)
    assert learning_rate(11, t, spe) == pytest.approx(1e-3 * (1 / 12) ** 0.9)  # the first phase's last step
    assert learning_rate(12, t, spe) == pytest.approx(1e-5)  # a cycle's first step: cycle_lr, not train.lr
    assert learning_rate(15, t, spe) == pytest.approx(1e-5)  # constant within the epoch
    assert learning_rate(20, t, spe) == pytest.approx(1e-5 * (1 + math.cos(math.pi * 2 / 4)) / 2)  # middle epoch
    assert learning_rate(27, t, spe) == pytest.approx(1e-5 * (1 + math.cos(math.pi * 3 / 4)) / 2)  # last step
    assert learning_rate(28, t, spe) == pytest.approx(1e-5)  # cycle 2 restarts


def test_official_schedule_decays_over_all_epochs_and_anneals_to_its_floor():
    """The authors' code: poly over all 3 + 2 x 4 epochs (so the first phase ends high), then 5e-4 down to 1e-5."""
    t, spe = _train(poly_over="all", cycle_lr=5e-4, cycle_lr_min=1e-5), 4
    assert learning_rate(11, t, spe) == pytest.approx(1e-3 * (1 - 11 / 44) ** 0.9)
    assert learning_rate(12, t, spe) == pytest.approx(5e-4)
    assert learning_rate(20, t, spe) == pytest.approx(1e-5 + (5e-4 - 1e-5) * (1 + math.cos(math.pi / 2)) / 2)
    assert learning_rate(27, t, spe) == pytest.approx(1e-5 + (5e-4 - 1e-5) * (1 + math.cos(math.pi * 3 / 4)) / 2)
    # the paper's 150 + 5 x 10 epochs: about 2.9e-4 left as the cycles start (official_release.md)
    long = _train(epochs=150, cycles=5, cycle_epochs=10, poly_over="all")
    assert learning_rate(150 * 10 - 1, long, 10) == pytest.approx(2.87e-4, rel=0.01)


def test_learning_rate_warmup_and_bad_steps_per_epoch():
    t = _train(warmup_epochs=0.5)
    assert learning_rate(0, t, 4) == pytest.approx(1e-3 / 2)  # warm-up over 2 steps: (step + 1) / 2
    assert learning_rate(1, t, 4) == pytest.approx(1e-3)
    assert learning_rate(2, t, 4) == pytest.approx(1e-3 * (1 - 0 / 10) ** 0.9)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        learning_rate(0, t, 0)


def test_a_staged_rnn_g_restarts_warm_up_and_decay_when_its_components_start():
    """3 + 5 epochs of 4 steps, half an epoch of warm-up: the first stage decays to 0 over its 12 steps, the
    components ramp up again and decay over their 20."""
    t, spe = _train(epochs=8, cycles=0, warmup_epochs=0.5, stage1_epochs=3, lr=0.1), 4
    assert [learning_rate(s, t, spe) for s in (0, 1)] == pytest.approx([0.05, 0.1])
    assert learning_rate(11, t, spe) == pytest.approx(0.1 * (1 - 9 / 10) ** 0.9)  # stage 1's last step
    assert [learning_rate(s, t, spe) for s in (12, 13)] == pytest.approx([0.05, 0.1])  # warm-up again
    assert learning_rate(14, t, spe) == pytest.approx(0.1)
    assert learning_rate(23, t, spe) == pytest.approx(0.1 * (1 - 9 / 18) ** 0.9)
    assert learning_rate(31, t, spe) == pytest.approx(0.1 * (1 - 17 / 18) ** 0.9)  # the run's last step
