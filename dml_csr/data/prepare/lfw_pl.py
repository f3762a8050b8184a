"""LFW Part Labels -> prepared layout (3 classes: background, skin, hair).

Raw layout: ``lfw_funneled/NAME/NAME_NNNN.jpg`` (250x250), ``parts_lfw_funneled_gt_images/NAME_NNNN.ppm`` (pure
colours: blue background, green skin, red hair), lists ``parts_train.txt`` / ``parts_validation.txt`` /
``parts_test.txt`` with lines ``NAME N``. ``N`` is zero-padded to 4 digits in some lines and not in others: it is
padded here. A pixel's class is its dominant colour channel; a pixel with no single dominant channel is an error.
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np

from ..labels import get_spec
from .common import Job, PrepareError, atomic_copy, atomic_imwrite, check_same_size, make_parser, read_color, \
    run_prepare, setup_cli_logging, guarded

__all__ = ["LISTS", "collect", "convert", "prepare", "main", "colours_to_labels"]
LISTS = {"train": "parts_train.txt", "val": "parts_validation.txt", "test": "parts_test.txt"}


def _read_list(path: str) -> list[str]:
    if not os.path.isfile(path):
        raise PrepareError(f"list '{path}' is missing; LFW-PL ships parts_train/validation/test.txt")
    names = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or not parts[1].isdigit():
                raise PrepareError(f"{path}:{n}: expected 'Name N', got {line.strip()!r}")
            names.append(f"{parts[0]}_{int(parts[1]):04d}")  # the padding quirk: some lines are unpadded
    return names


def collect(raw: str) -> list[Job]:
    jobs = []
    for split, fn in LISTS.items():
        for name in _read_list(os.path.join(raw, fn)):
            person = name[: -5]
            jobs.append(Job(split, name, {
                "image": os.path.join(raw, "lfw_funneled", person, name + ".jpg"),
                "label": os.path.join(raw, "parts_lfw_funneled_gt_images", name + ".ppm")}))
    return jobs


def colours_to_labels(bgr: np.ndarray, path: str = "<array>") -> np.ndarray:
    """(H, W, 3) uint8 BGR colour map -> (H, W) uint8 classes: blue -> background, green -> skin, red -> hair."""
    spec = get_spec("lfw_pl")
    channel_class = np.array([spec.index("background"), spec.index("skin"), spec.index("hair")], np.uint8)  # B, G, R
    top = bgr.argmax(axis=2)
    srt = np.sort(bgr, axis=2)
    ambiguous = srt[..., 2] == srt[..., 1]
    if ambiguous.any():
        ys, xs = np.nonzero(ambiguous)
        raise PrepareError(f"'{path}': {ambiguous.sum()} pixels have no dominant colour (first at x={xs[0]}, "
                           f"y={ys[0]}: BGR {bgr[ys[0], xs[0]].tolist()}); expected pure red/green/blue")
    return channel_class[top]


def convert(job: Job, paths: dict) -> np.ndarray:
    img = read_color(job.sources["image"])
    colours = read_color(job.sources["label"])
    check_same_size(img, job.sources["image"], colours, job.sources["label"])
    label = colours_to_labels(colours, job.sources["label"])
    atomic_imwrite(paths["labels"], label)
    atomic_copy(job.sources["image"], paths["images"])
    return label


def prepare(raw: str, out: str, *, workers: int = 4, progress: bool = True) -> dict:
    """Convert LFW-PL under ``raw`` into the prepared layout at ``out``; returns info.json's contents."""
    return run_prepare(out, collect(raw), convert, get_spec("lfw_pl"), workers=workers, progress=progress, source=raw)


def main(argv: Optional[list[str]] = None) -> int:
    a = make_parser("Prepare LFW Part Labels (3 classes) in the DML-CSR layout.").parse_args(argv)
    setup_cli_logging()
    return guarded(prepare, a.raw, a.out, workers=a.workers, progress=not a.no_progress)
