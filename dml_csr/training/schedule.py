"""The training schedule's epochs: the first phase, then the cyclical self-regulation cycles.

The schedule (epochs 0-based): the first phase is epochs 0 .. E-1 (E = train.epochs); cycle k (1-based, as in the
paper) is epochs E + (k-1) N .. E + k N - 1 (N = train.cycle_epochs), for k = 1 .. K (K = train.cycles). These
functions are the one statement of it: whatever places an epoch in the schedule calls them. ``train`` is a
TrainConfig or anything with its ``epochs``, ``cycles`` and ``cycle_epochs``.
"""
from __future__ import annotations

__all__ = ["total_epochs", "cycle_position", "epoch_position"]


def total_epochs(train) -> int:
    """E + K N: the epochs of the whole run."""
    return train.epochs + train.cycles * train.cycle_epochs


def cycle_position(epoch: int, first_phase_epochs: int, cycle_epochs: int) -> tuple[int, int]:
    """``(k, epoch_in_cycle)`` of a 0-based epoch: ``k = 0`` in the first phase (epoch_in_cycle = epoch), else the
    1-based cycle index. The cycle ends (self-ensemble time) after the epoch with ``epoch_in_cycle == cycle_epochs-1``."""
    if epoch < first_phase_epochs:
        return 0, epoch
    if cycle_epochs < 1:
        raise ValueError(f"cycle_position: cycle_epochs = {cycle_epochs}; expected >= 1")
    k, e = divmod(epoch - first_phase_epochs, cycle_epochs)
    return k + 1, e


def epoch_position(train, epoch: int) -> tuple[int, int]:
    """:func:`cycle_position` of ``epoch`` in the schedule of ``train``."""
    return cycle_position(epoch, train.epochs, train.cycle_epochs)
