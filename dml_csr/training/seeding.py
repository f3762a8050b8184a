"""Where a training run's random draws come from: every epoch and every step reseeds from its position, so a run
stopped anywhere and resumed draws what a straight run draws."""
from __future__ import annotations

import random

import numpy as np
import torch

__all__ = ["seed_epoch", "seed_batch", "rng_state"]


def seed_epoch(seed: int, epoch: int, rank: int) -> None:
    """Every random draw of an epoch follows from (seed, epoch, rank): resuming at an epoch boundary is exact."""
    s = (seed * 1_000_003 + epoch * 7919 + rank) % 2 ** 31
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


def seed_batch(seed: int, epoch: int, rank: int, batch: int) -> None:
    """Every random draw of a training step follows from (seed, epoch, rank, batch): resuming in the middle of an
    epoch is exact (the samples' augmentation has seeds of its own, see :class:`~dml_csr.data.loader.EpochSampler`)."""
    s = int(np.random.SeedSequence([seed % 2 ** 32, epoch % 2 ** 32, rank, batch]).generate_state(1)[0]) % 2 ** 31
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


def rng_state() -> dict:
    """The RNG states, for the record (nothing restores them: every epoch and step reseeds from its position);
    tensors only, so ``weights_only`` loads work."""
    state = {"torch": torch.get_rng_state(), "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64))}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state
