"""The learning rate of every optimiser step, as a pure function of (step, config).

Steps are 0-based and counted over the whole run. The first phase (``train.epochs`` epochs) decays ``train.lr`` with
poly (power ``train.poly_power``) after an optional linear warm-up: to 0 at the end of the first phase (the paper,
``train.poly_over: first_phase``) or at the end of the run (the authors' code, ``all``, so about 0.29 ``train.lr``
is left when the cycles start). A staged RNN-G (``train.stage1_epochs`` > 0) restarts the warm-up and the poly
decay when its component networks start training: each stage decays over its own epochs, as if trained alone (the
paper trains them one after the other); the first stage always decays to 0 at its end, and ``poly_over: all``
stretches the second's decay over the cycles too. Each of the ``train.cycles`` self-regulation cycles then restarts a
per-epoch cosine at ``train.cycle_lr`` (the paper's 1e-5), annealed towards ``train.cycle_lr_min`` (the authors
restart theirs every ``cycle_epochs`` *iterations*, which we do not copy).

    preset     phase 1                                   cycles
    paper      SGD 1e-3, poly 0.9 over the first phase   cosine per epoch from 1e-5 to 0
    official   SGD 1e-3, poly 0.9 over all epochs        cosine per epoch from 5e-4 to 1e-5
"""
from __future__ import annotations

import math

from .schedule import epoch_position, total_epochs

__all__ = ["learning_rate", "poly_lr", "cosine_lr"]


def learning_rate(step: int, train, steps_per_epoch: int) -> float:
    """The learning rate of optimiser step ``step``.

    Args:
        step: 0-based optimiser step of the whole run.
        train: a :class:`dml_csr.config.TrainConfig` (``epochs``, ``lr``, ``poly_power``, ``poly_over``,
            ``warmup_epochs``, ``cycles``, ``cycle_epochs``, ``cycle_lr``, ``cycle_lr_min``).
        steps_per_epoch: optimiser steps in one epoch (batches per process // ``grad_accum``).

    The step's epoch is placed in the schedule by :func:`dml_csr.training.schedule.epoch_position`.
    """
    if steps_per_epoch < 1:
        raise ValueError(f"learning_rate: steps_per_epoch = {steps_per_epoch}; expected >= 1")
    cycle, epoch_in_cycle = epoch_position(train, step // steps_per_epoch)
    if cycle == 0:
        epochs = train.epochs if train.poly_over == "first_phase" else total_epochs(train)
        start = 0
        if train.stage1_epochs:  # a staged RNN-G: each stage is trained as a run of its own, warm-up and decay
            start = train.stage1_epochs if step // steps_per_epoch >= train.stage1_epochs else 0
            epochs = train.stage1_epochs if start == 0 else epochs - start
        return poly_lr(step - start * steps_per_epoch, epochs * steps_per_epoch, train.lr, train.poly_power,
                       int(train.warmup_epochs * steps_per_epoch))
    return cosine_lr(epoch_in_cycle, train.cycle_epochs, train.cycle_lr, train.cycle_lr_min)


def poly_lr(step: int, total: int, base: float, power: float = 0.9, warmup_steps: int = 0) -> float:
    """Polynomial decay with an optional linear warm-up, as a function of the 0-based optimiser step.

    ``step < warmup_steps``: ``base * (step + 1) / warmup_steps``; then
    ``base * (1 - (step - warmup_steps) / (total - warmup_steps)) ** power``, and 0 from ``step >= total`` on.
    """
    if total < 1 or warmup_steps < 0 or (warmup_steps > 0 and warmup_steps >= total):
        raise ValueError(f"poly_lr: total = {total}, warmup_steps = {warmup_steps}; expected total >= 1 and "
                         f"0 <= warmup_steps < total")
    if step < warmup_steps:
        return base * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / (total - warmup_steps)
    return base * max(0.0, 1.0 - progress) ** power


def cosine_lr(epoch_in_cycle: int, cycle_epochs: int, lr_max: float, lr_min: float) -> float:
    """Per-epoch cosine annealing within a cycle: ``lr_min + (lr_max - lr_min) (1 + cos(pi e / L)) / 2``.

    Epoch ``e = 0`` (a cycle's first) gets ``lr_max``, and the rate decreases towards ``lr_min`` at ``e = L``
    (the first epoch of the next cycle, which restarts at ``lr_max``).
    """
    if cycle_epochs < 1 or not 0 <= epoch_in_cycle <= cycle_epochs:
        raise ValueError(f"cosine_lr: epoch_in_cycle = {epoch_in_cycle}, cycle_epochs = {cycle_epochs}; expected "
                         f"0 <= epoch_in_cycle <= cycle_epochs and cycle_epochs >= 1")
    return lr_min + (lr_max - lr_min) * 0.5 * (1.0 + math.cos(math.pi * epoch_in_cycle / cycle_epochs))
