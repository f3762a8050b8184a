"""Label noise for experiments (``data.label_noise``): corrupted training label maps, to test what the paper claims
for cyclical self-regulation ("to prevent noisy labels from degrading model generalization").

Each part of a training label map -- every class present but the background and the largest other class, the region
the parts sit in (the skin of a face) -- is corrupted with probability ``rate``, by one of ``kinds`` drawn at random:

    shift   the part's boundary moves by 1 .. ``max_shift`` pixels, outwards (it takes pixels from its neighbours)
            or inwards (its rim goes to the class around it)
    swap    the part exchanges its label with its nearest other part not yet corrupted (by centroid; the class
            around it excluded): an eye labelled as the brow above it, the brow as the eye
    drop    the part is relabelled as the class around it (an annotator missed it)

"The class around" a part is the most frequent label in a 2-pixel ring outside it. The draws depend only on the
noise seed and the sample's name, so every epoch (and every resumed run) sees the same corrupted maps; only the
training split is corrupted (:func:`dml_csr.data.dataset.build_dataset`), validation and test labels stay clean.
"""
from __future__ import annotations

import zlib
from typing import Optional, Sequence

import cv2
import numpy as np

from ..conventions import IGNORE_INDEX

__all__ = ["KINDS", "LabelNoise", "corrupt_labels"]

KINDS = ("shift", "swap", "drop")
_KERNEL = np.ones((3, 3), np.uint8)


def _ring(mask: np.ndarray, width: int) -> np.ndarray:
    return cv2.dilate(mask.astype(np.uint8), _KERNEL, iterations=width).astype(bool) & ~mask


def _around(label: np.ndarray, mask: np.ndarray) -> int:
    """The most frequent label in the 2-pixel ring around ``mask`` (ignored pixels left out; 0 if none)."""
    ring = label[_ring(mask, 2)]
    ring = ring[ring != IGNORE_INDEX]
    return int(np.bincount(ring).argmax()) if ring.size else 0


def _shift(out: np.ndarray, c: int, rng: np.random.Generator, max_shift: int) -> None:
    mask = out == c
    k = int(rng.integers(1, max_shift + 1))
    if rng.random() < 0.5:  # outwards: the part takes its neighbours' pixels within k
        grown = cv2.dilate(mask.astype(np.uint8), _KERNEL, iterations=k).astype(bool)
        out[grown & (out != IGNORE_INDEX)] = c
    else:  # inwards: its rim goes to the class around it
        kept = cv2.erode(mask.astype(np.uint8), _KERNEL, iterations=k).astype(bool)
        out[mask & ~kept] = _around(out, mask)


def _swap(out: np.ndarray, c: int, parts: Sequence[int]) -> Optional[int]:
    """Exchange part ``c`` with the nearest of ``parts``; returns that part (None if there is none)."""
    mask = out == c
    if not mask.any():  # an earlier corruption took the whole part: nothing to exchange
        return None
    around = _around(out, mask)
    others = [o for o in parts if o not in (c, around) and (out == o).any()]
    if not others:
        return None
    ys, xs = np.nonzero(mask)
    centre = np.array([ys.mean(), xs.mean()])

    def distance(o: int) -> float:
        oy, ox = np.nonzero(out == o)
        return float(np.hypot(*(np.array([oy.mean(), ox.mean()]) - centre)))
    other = min(others, key=distance)
    other_mask = out == other
    out[mask], out[other_mask] = other, c
    return other


def corrupt_labels(label: np.ndarray, rate: float, rng: np.random.Generator, kinds: Sequence[str] = KINDS,
                   max_shift: int = 3) -> np.ndarray:
    """A corrupted copy of an (H, W) uint8 label map (see the module docstring); ``label`` is not changed."""
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise ValueError(f"label noise kinds {list(kinds)}: expected a non-empty subset of {', '.join(KINDS)}")
    out = label.copy()
    counts = np.bincount(label[label != IGNORE_INDEX].ravel(), minlength=1)
    present = [int(c) for c in np.nonzero(counts)[0] if c != 0]
    canvas = max(present, key=lambda c: counts[c]) if present else None
    parts = [c for c in present if c != canvas]
    done: set[int] = set()  # a part swapped with an earlier one is corrupted already
    for c in parts:
        if rng.random() >= rate or c in done:
            continue
        kind = kinds[int(rng.integers(len(kinds)))]
        if kind == "shift":
            _shift(out, c, rng, max_shift)
        elif kind == "swap":
            done.update({c, _swap(out, c, [p for p in parts if p not in done])})
        else:
            mask = out == c
            out[mask] = _around(out, mask)
    return out


class LabelNoise:
    """``noise(label, name)``: :func:`corrupt_labels` with draws seeded by ``(seed, name)`` alone."""

    def __init__(self, rate: float, kinds: Sequence[str] = KINDS, max_shift: int = 3, seed: int = 0):
        self.rate, self.kinds, self.max_shift, self.seed = float(rate), tuple(kinds), int(max_shift), int(seed)

    def __call__(self, label: np.ndarray, name: str) -> np.ndarray:
        rng = np.random.default_rng([self.seed, zlib.crc32(name.encode())])
        return corrupt_labels(label, self.rate, rng, self.kinds, self.max_shift)
