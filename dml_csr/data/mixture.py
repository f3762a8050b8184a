"""Several datasets in one run (``data.roots``): every root's training split in the model's classes, drawn in
proportion to its weight.

An epoch draws as many samples as the roots hold together (``train.iters_per_epoch`` still caps it). Root ``r`` gets
``round(N w_r / sum w)`` of them (largest remainders; the counts add up to N), taken from consecutive permutations of
its samples (a small root with a large weight is shown each sample before any repeats), then the whole list is
shuffled. The order is a function of (seed, epoch) only (:meth:`MixedDataset.epoch_order`), which
:class:`~dml_csr.data.loader.EpochSampler` then splits between ranks and skips into on a resume, as for one root, so
a stopped run resumes bit for bit and distributed shards stay disjoint. A draw's index encodes its repeat, so each
repeat of a sample gets an augmentation seed of its own.

Validation stays on one split of one root: ``data.val_split`` of ``data.root`` (through ``data.class_map``).
"""
from __future__ import annotations

import bisect
from typing import Any, Optional

import numpy as np
from torch.utils.data import Dataset

from .class_map import build_class_map, config_class_map, fold_histogram
from .dataset import FaceParsingDataset, build_dataset, build_transform, config_label_noise, split_histogram
from .class_map import label_spec
from .custom import dataset_spec
from .face_template import framing_template
from .labels import LabelSpec

__all__ = ["MixedDataset", "largest_remainder", "build_training_set", "training_histogram"]


def largest_remainder(total: int, weights: list[float]) -> list[int]:
    """``total`` split in proportion to ``weights``: floors, then one more each to the largest remainders (ties to
    the earlier entry)."""
    w = np.asarray(weights, np.float64)
    share = total * w / w.sum()
    counts = np.floor(share).astype(int)
    for i in sorted(range(len(w)), key=lambda k: (-(share[k] - counts[k]), k))[: total - int(counts.sum())]:
        counts[i] += 1
    return counts.tolist()


class MixedDataset(Dataset):
    """Training samples of several roots; index ``repeat * len(self) + offset_r + i`` is sample ``i`` of root ``r``.

    Args:
        parts: one dataset a root (their labels already in the model's classes, one train transform).
        weights: positive, one a root.
    """

    def __init__(self, parts: list[FaceParsingDataset], weights: list[float]):
        if len(parts) != len(weights) or not parts:
            raise ValueError(f"MixedDataset: {len(parts)} roots and {len(weights)} weights; expected one weight a root")
        self.parts, self.weights = list(parts), [float(w) for w in weights]
        self.offsets = np.cumsum([0] + [len(p) for p in parts]).tolist()
        self.split = parts[0].split
        self.root = ", ".join(p.root for p in parts)
        self._skipped: list[str] = []

    def __len__(self) -> int:
        return self.offsets[-1]

    @property
    def names(self) -> list[str]:
        return [n for p in self.parts for n in p.names]

    def draws(self) -> list[int]:
        """Samples of each root in one epoch."""
        return largest_remainder(len(self), self.weights)

    def epoch_order(self, seed: int, epoch: int) -> list[int]:
        """The epoch's draws, shuffled: a function of (seed, epoch) only."""
        rng = np.random.default_rng(np.random.SeedSequence([seed % 2 ** 32, epoch % 2 ** 32, len(self.parts)]))
        order: list[int] = []
        for r, (part, count) in enumerate(zip(self.parts, self.draws())):
            repeat = 0
            while count > 0:
                take = rng.permutation(len(part))[:count]
                order += [repeat * len(self) + self.offsets[r] + int(i) for i in take]
                count -= len(take)
                repeat += 1
        return [order[i] for i in rng.permutation(len(order))]

    def locate(self, index: int) -> tuple[int, int]:
        """(root, sample of that root) of a draw's index."""
        j = index % len(self)
        r = bisect.bisect_right(self.offsets, j) - 1
        return r, j - self.offsets[r]

    def __getitem__(self, i: Any) -> dict:
        index, seed = i if isinstance(i, tuple) else (i, None)
        r, local = self.locate(index)
        sample = self.parts[r][(local, seed)]
        self._skipped.extend(self.parts[r].pop_skipped())
        return sample

    def pop_skipped(self) -> list[str]:
        out, self._skipped = self._skipped, []
        return out


def _part(cfg, i: int, entry, spec: LabelSpec, transform, template) -> FaceParsingDataset:
    key = f"data.roots[{i}]"
    d = cfg.data
    try:
        source = dataset_spec(entry.dataset or d.dataset, entry.root)
        cmap = build_class_map(source, entry.class_map, f"{key}.class_map", spec)
        return FaceParsingDataset(entry.root, d.train_split, spec, transform, skip_bad=d.skip_bad,
                                  max_samples=d.max_samples, keypoints=d.keypoints, class_map=cmap,
                                  label_noise=config_label_noise(cfg), template=template)
    except (FileNotFoundError, ValueError) as e:
        if str(e).startswith(key):
            raise
        raise type(e)(f"{key}: {e}") from None


def build_training_set(cfg, spec: Optional[LabelSpec] = None):
    """The training split of ``cfg``: ``data.root``'s, or with ``data.roots`` a :class:`MixedDataset` of theirs, every
    label in the model's classes (``spec``, default :func:`~dml_csr.data.class_map.label_spec` of ``cfg``)."""
    spec = label_spec(cfg) if spec is None else spec
    if not cfg.data.roots:
        return build_dataset(cfg, cfg.data.train_split, train=True, spec=spec)
    transform, template = build_transform(cfg, True, spec), framing_template(cfg.data)  # data.root's template
    parts = [_part(cfg, i, entry, spec, transform, template) for i, entry in enumerate(cfg.data.roots)]
    return MixedDataset(parts, [entry.weight for entry in cfg.data.roots])


def training_histogram(cfg, spec: LabelSpec, dataset=None) -> np.ndarray:
    """Pixels per model class in the training split (``info.json``'s histograms through the class maps); with
    ``data.roots`` (``dataset`` the :class:`MixedDataset`) each root's weighted by the share of it an epoch draws."""
    if not cfg.data.roots:
        cmap = config_class_map(cfg) if cfg.data.class_map is not None else None
        source = spec if cmap is None else cmap.source
        return fold_histogram(split_histogram(cfg.data.root, cfg.data.train_split, source), cmap, spec.num_classes)
    dataset = build_training_set(cfg, spec) if dataset is None else dataset
    total = np.zeros(spec.num_classes, np.float64)
    for part, draws in zip(dataset.parts, dataset.draws()):
        hist = split_histogram(part.root, part.split, part.source_spec)
        total += fold_histogram(hist, part.class_map, spec.num_classes) * draws / len(part)
    return total
