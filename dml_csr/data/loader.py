"""Every DataLoader of the package comes from :func:`build_loader`: training epochs, validation and evaluation; and
:func:`build_norm_loader`: batch-norm re-estimation over every training image.

Two orders, both functions of their arguments only (so a resumed run sees the batches a straight run would):

* ``train=True``: :class:`EpochSampler`, the epoch's shuffled order from ``(seed, epoch)`` (a dataset with an
  ``epoch_order(seed, epoch)`` method, several roots in one, draws its own), split into equal
  interleaved shares for the ranks, full batches only, optionally starting part-way (resume) or capped; each index
  comes with the seed of its augmentation, a function of (seed, epoch, index) only, so a run resumed in the middle of
  an epoch, with or without loader workers, draws what a straight run draws;
* ``train=False``: :class:`ShardSampler`, every sample once in order, every ``world``-th from ``rank``;
* :func:`build_norm_loader`: :class:`EvenBatchSampler`, the shuffled order of an epoch of its own with every sample
  once, in batches as even as possible (a training epoch drops the remainder; the statistics of "all training data"
  must not).

Batches are collated by :func:`collate_samples` (channels-last uint8 images stay channels-last); loader workers seed
numpy and ``random`` from torch's per-worker seed and ignore SIGINT/SIGTERM (:func:`seed_worker`).
"""
from __future__ import annotations

import logging
import random
import signal
from typing import Any, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .dataset import BadSampleError

__all__ = ["build_loader", "build_norm_loader", "EpochSampler", "EvenBatchSampler", "ShardSampler", "sample_seed",
           "collate_samples", "seed_worker", "SkipCountingLoader"]

logger = logging.getLogger(__name__)


def _epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of dataset index ``index`` in ``epoch``: a function of the three only."""
    state = np.random.SeedSequence([seed % 2 ** 32, epoch % 2 ** 32, index]).generate_state(2)
    return int(state[0]) << 31 | int(state[1]) >> 1


class EpochSampler(torch.utils.data.Sampler):
    """Shuffled indices that depend only on (seed, epoch); split across ranks; can start part-way (resume).

    Interleaved equal shares: global batch i of W processes is exactly batch i of one process with W times the batch
    size (what DDP equivalence needs); the remainder of the epoch is dropped. ``order``: the epoch's indices drawn
    elsewhere (a function of (seed, epoch) as well: :meth:`dml_csr.data.mixture.MixedDataset.epoch_order`) instead of
    a permutation of ``range(n)``."""

    def __init__(self, n: int, batch_size: int, seed: int, epoch: int, rank: int = 0, world: int = 1,
                 skip_batches: int = 0, limit_batches: int = 0, order: Optional[list[int]] = None):
        if order is None:
            perm = _epoch_order(n, seed, epoch)
        else:
            perm, n = list(order), len(order)
        per_rank = n // world
        mine = perm[rank:per_rank * world:world]
        usable = (len(mine) // batch_size) * batch_size
        if limit_batches > 0:
            usable = min(usable, limit_batches * batch_size)
        self.indices = mine[skip_batches * batch_size:usable]
        self.seed, self.epoch = seed, epoch

    def sample_seed(self, index: int) -> int:
        """The augmentation seed of dataset index ``index`` in this epoch."""
        return sample_seed(self.seed, self.epoch, index)

    def __iter__(self):
        return iter([(i, self.sample_seed(i)) for i in self.indices])

    def __len__(self) -> int:
        return len(self.indices)


class EvenBatchSampler(torch.utils.data.Sampler):
    """Batches of ``(index, augmentation seed)`` that hold every sample exactly once: the epoch order of ``(seed,
    epoch)``, this rank's interleaved share, split into ``ceil(ceil(n / world) / batch_size)`` batches whose sizes
    differ by at most one, so every rank forwards the same number of batches (a forward through synchronised norm
    layers is a collective) and no batch is a lone remainder. When ``n`` is a multiple of ``world * batch_size``
    these are exactly :class:`EpochSampler`'s batches."""

    def __init__(self, n: int, batch_size: int, seed: int, epoch: int, rank: int = 0, world: int = 1):
        mine = _epoch_order(n, seed, epoch)[rank::world]
        longest = -(-n // world)  # the largest share
        count = min(len(mine), -(-longest // batch_size))  # a share shorter than the batch count: fewer batches
        base, extra = divmod(len(mine), max(count, 1))
        self.batches, start = [], 0
        for b in range(count):
            size = base + (b < extra)
            self.batches.append([(i, sample_seed(seed, epoch, i)) for i in mine[start:start + size]])
            start += size

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class ShardSampler(torch.utils.data.Sampler):
    """Every ``world``-th index from ``rank``: disjoint shards that cover the set (no padding duplicates)."""

    def __init__(self, n: int, rank: int = 0, world: int = 1):
        self.indices = list(range(rank, n, world))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def build_loader(dataset: Dataset, *, batch_size: int, workers: int, seed: int, train: bool, epoch: int = 0,
                 rank: int = 0, world: int = 1, skip_batches: int = 0, limit_batches: int = 0) -> "SkipCountingLoader":
    """A loader over ``dataset`` in one of the two orders of the module docstring.

    Args:
        train: the epoch order (full batches) or the evaluation order (every sample once).
        epoch: with ``train``, the epoch whose order to draw (batch-norm re-estimation uses an epoch of its own).
        rank, world: this process's share.
        skip_batches, limit_batches: with ``train``, batches of the epoch already done (resume) and a cap (0: none).
        seed: the run's seed; it also seeds the loader's generator, hence each worker's augmentation draws.
    """
    if train:
        order = dataset.epoch_order(seed, epoch) if hasattr(dataset, "epoch_order") else None
        sampler = EpochSampler(len(dataset), batch_size, seed, epoch, rank, world, skip_batches, limit_batches, order)
        generator_seed = seed * 7919 + epoch
    else:
        sampler = ShardSampler(len(dataset), rank, world)
        generator_seed = seed
    return SkipCountingLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                              collate_fn=collate_samples, drop_last=train,
                              generator=torch.Generator().manual_seed(generator_seed),
                              pin_memory=torch.cuda.is_available(), worker_init_fn=seed_worker)


def build_norm_loader(dataset: Dataset, *, batch_size: int, workers: int, seed: int, epoch: int, rank: int = 0,
                      world: int = 1) -> "SkipCountingLoader":
    """The loader of batch-norm re-estimation: every sample of ``dataset`` once (:class:`EvenBatchSampler`), each
    augmented by its seed of ``epoch`` (an epoch number of its own, e.g. negative, so that it is no training epoch's
    order)."""
    sampler = EvenBatchSampler(len(dataset), batch_size, seed, epoch, rank, world)
    return SkipCountingLoader(dataset, batch_sampler=sampler, num_workers=workers, collate_fn=collate_samples,
                              generator=torch.Generator().manual_seed(seed * 7919 + epoch),
                              pin_memory=torch.cuda.is_available(), worker_init_fn=seed_worker)


def _stack(vals: list[torch.Tensor]) -> torch.Tensor:
    """``torch.stack``, keeping channels-last (3, H, W) uint8 views (the transforms' images) channels-last: stacking
    them as they are would transpose every image into the batch (6x slower than this copy)."""
    v = vals[0]
    if v.dtype == torch.uint8 and v.dim() == 3 and v.shape[0] == 3 and v.stride(0) == 1:
        return torch.stack([t.permute(1, 2, 0) for t in vals]).permute(0, 3, 1, 2)
    return torch.stack(vals)


def collate_samples(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors; ``name`` and ``meta`` stay lists; ``skipped`` names are concatenated."""
    batch: dict[str, Any] = {}
    for key in samples[0]:
        if key == "skipped":
            continue
        vals = [s[key] for s in samples]
        batch[key] = _stack(vals) if isinstance(vals[0], torch.Tensor) else vals
    skipped = [n for s in samples for n in s.get("skipped", ())]
    if skipped:
        batch["skipped"] = skipped
    return batch


class SkipCountingLoader(DataLoader):
    """A DataLoader that moves ``batch["skipped"]`` into ``dataset.pop_skipped()`` and logs a summary per pass."""

    def __iter__(self):
        with _stop_signals_blocked():  # the workers start now: see seed_worker
            batches = super().__iter__()
        count = 0
        try:
            for batch in _one_line_errors(batches):
                names = batch.pop("skipped", None) if isinstance(batch, dict) else None
                if names:
                    self.dataset._skipped.extend(names)
                    count += len(names)
                yield batch
        except Exception:
            # the workers ignore SIGTERM (seed_worker): an iterator kept alive by the error's traceback would leave
            # them waiting, and the interpreter's exit, which terminates and joins them, waiting for ever
            stop = getattr(batches, "_shutdown_workers", None)
            if stop is not None:
                stop()
            raise
        pending = len(getattr(self.dataset, "_skipped", ()))
        if count or pending:
            logger.warning("data pass over '%s' finished with %d unusable sample(s) skipped (data.skip_bad); "
                           "run scripts/check_dataset.py on the root to list them", self.dataset.split, pending)


def _one_line_errors(batches):
    """The batches; a bad sample raised in a worker process comes back as the worker's one-line message, not
    wrapped in "Caught ... in DataLoader worker process N" and the worker's traceback."""
    try:
        yield from batches
    except BadSampleError as e:
        text = str(e)
        if "\nOriginal Traceback" not in text:
            raise
        last = text.strip().splitlines()[-1]
        raise type(e)(last.split(": ", 1)[1] if ": " in last else last) from None


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _stop_signals_blocked:
    """Hold SIGINT/SIGTERM back from the calling thread while the loader forks its workers, which start with that
    mask; the parent gets a signal that came meanwhile when the block ends (a no-op where signals can't be masked)."""

    def __enter__(self):
        self._old = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS) if _CAN_MASK else None

    def __exit__(self, *exc):
        if self._old is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, self._old)


_CAN_MASK = hasattr(signal, "pthread_sigmask")


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: numpy and ``random`` follow the seed torch gives the worker, and the worker
    ignores SIGINT/SIGTERM. Those reach a whole process group (Ctrl-C, torchrun passing a SIGTERM on), and a worker
    killed by one makes the main process fail ("DataLoader worker exited unexpectedly") before it can write its
    stop checkpoint; workers still end when the main process shuts the loader down (or dies).

    Torch's worker installs a SIGTERM handler that ends the worker before this function runs; the worker starts with
    both signals blocked (:class:`SkipCountingLoader`), so one that arrives in between waits, and ignoring it here
    discards it."""
    seed = torch.initial_seed() % 2 ** 32  # set by the DataLoader from its generator: base seed + worker id
    np.random.seed(seed)
    random.seed(seed)
    for s in _STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)
    if _CAN_MASK:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
