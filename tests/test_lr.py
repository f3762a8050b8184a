"""The learning rate of every step: poly over the first phase, a per-epoch cosine restarting each cycle."""
import math
from types import SimpleNamespace

import pytest

from dml_csr.lr import cosine_lr, learning_rate, poly_lr


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
    base = dict(epochs=3, lr=1e-3, poly_power=0.9, warmup_epochs=0.0, cycles=2, cycle_epochs=4, cycle_lr=0.0,
                cycle_lr_min=0.0)
    return SimpleNamespace(**{**base, **kw})


def test_learning_rate_across_the_phase_boundary_and_a_cycle():
    t, spe = _train(), 4  # first phase: steps 0..11; cycle 1: epochs 3..6 = steps 12..27; cycle 2 from step 28
    assert learning_rate(0, t, spe) == pytest.approx(1e-3)
    assert learning_rate(11, t, spe) == pytest.approx(1e-3 * (1 / 12) ** 0.9)  # the first phase's last step
    assert learning_rate(12, t, spe) == pytest.approx(1e-3)  # a cycle's first step restarts at train.lr
    assert learning_rate(15, t, spe) == pytest.approx(1e-3)  # constant within the epoch
    assert learning_rate(20, t, spe) == pytest.approx(1e-3 * (1 + math.cos(math.pi * 2 / 4)) / 2)  # middle epoch
    assert learning_rate(27, t, spe) == pytest.approx(1e-3 * (1 + math.cos(math.pi * 3 / 4)) / 2)  # last step
    assert learning_rate(28, t, spe) == pytest.approx(1e-3)  # cycle 2 restarts


def test_learning_rate_cycle_start_floor_and_warmup():
    t = _train(cycle_lr=5e-4, cycle_lr_min=0.02, warmup_epochs=0.5)
    assert learning_rate(0, t, 4) == pytest.approx(1e-3 / 2)  # warm-up over 2 steps: (step + 1) / 2
    assert learning_rate(1, t, 4) == pytest.approx(1e-3)
    assert learning_rate(2, t, 4) == pytest.approx(1e-3 * (1 - 0 / 10) ** 0.9)
    top, floor = 5e-4, 5e-4 * 0.02
    assert learning_rate(12, t, 4) == pytest.approx(top)
    assert learning_rate(24, t, 4) == pytest.approx(floor + (top - floor) * (1 + math.cos(math.pi * 3 / 4)) / 2)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        learning_rate(0, t, 0)
