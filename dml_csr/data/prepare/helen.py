"""Helen (the resized version face-parsing papers use) -> prepared layout (11 classes).

Raw layout: ``images/NAME.jpg``, ``labels/NAME/NAME_lbl00.png`` ... ``_lbl10.png`` (one grey map per class; a pixel's
label is the class whose map is largest there, ties to the lower index), and the lists ``exemplars.txt`` (train),
``tuning.txt`` (val), ``testing.txt`` (test) with lines ``index , name``. Images are copied byte for byte.
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np

from ..labels import get_spec
from .common import Job, PrepareError, atomic_copy, atomic_imwrite, make_parser, read_color, read_grey, run_prepare, \
    setup_cli_logging, guarded

__all__ = ["LISTS", "collect", "convert", "prepare", "main"]
LISTS = {"train": "exemplars.txt", "val": "tuning.txt", "test": "testing.txt"}
NUM_CLASSES = 11


def _read_list(path: str) -> list[str]:
    if not os.path.isfile(path):
        raise PrepareError(f"list '{path}' is missing; Helen ships exemplars.txt, tuning.txt and testing.txt")
    names = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = [p.strip() for p in line.split(",")]
            if len(parts) != 2 or not parts[1]:
                raise PrepareError(f"{path}:{n}: expected 'index , name', got {line.strip()!r}")
            names.append(parts[1])
    return names


def collect(raw: str) -> list[Job]:
    jobs = []
    for split, fn in LISTS.items():
        for name in _read_list(os.path.join(raw, fn)):
            src = {"image": os.path.join(raw, "images", name + ".jpg")}
            src.update({f"lbl{k:02d}": os.path.join(raw, "labels", name, f"{name}_lbl{k:02d}.png")
                        for k in range(NUM_CLASSES)})
            jobs.append(Job(split, name, src))
    return jobs


def convert(job: Job, paths: dict) -> np.ndarray:
    img = read_color(job.sources["image"])
    maps = []
    for k in range(NUM_CLASSES):
        p = job.sources[f"lbl{k:02d}"]
        m = read_grey(p)
        if m.shape != img.shape[:2]:
            raise PrepareError(f"size mismatch: image '{job.sources['image']}' is {img.shape[1]}x{img.shape[0]}, "
                               f"'{p}' is {m.shape[1]}x{m.shape[0]}")
        maps.append(m)
    label = np.argmax(np.stack(maps), axis=0).astype(np.uint8)
    atomic_imwrite(paths["labels"], label)
    atomic_copy(job.sources["image"], paths["images"])
    return label


def prepare(raw: str, out: str, *, workers: int = 4, progress: bool = True) -> dict:
    """Convert Helen under ``raw`` (the SmithCVPR2013_dataset_resized folder) into ``out``; returns info.json."""
    return run_prepare(out, collect(raw), convert, get_spec("helen"), workers=workers, progress=progress, source=raw)


def main(argv: Optional[list[str]] = None) -> int:
    a = make_parser("Prepare Helen (11 classes; exemplars/tuning/testing) in the DML-CSR layout.").parse_args(argv)
    setup_cli_logging()
    return guarded(prepare, a.raw, a.out, workers=a.workers, progress=not a.no_progress)
