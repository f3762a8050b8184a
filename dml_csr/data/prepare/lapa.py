"""LaPa -> prepared layout (11 classes, with the 106 landmarks next to each sample).

Raw layout: ``{train,val,test}/images/NAME.jpg``, ``{split}/labels/NAME.png`` (class indices, same size as the
image), ``{split}/landmarks/NAME.txt`` (``106`` then one ``x y`` per line). Images and labels are copied byte for
byte after validation (decodable, same size, labels in [0, 11)); landmarks are validated and copied. "Left" is the
subject's left, as in LaPa's labelmap (index 2 = left eyebrow).
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np

from ..labels import get_spec
from .common import (Job, PrepareError, atomic_copy, atomic_imwrite, check_same_size, guarded, make_parser,
                     read_color, read_index_map, run_prepare, setup_cli_logging)

__all__ = ["collect", "convert", "prepare", "main", "read_landmarks"]
SPLITS = ("train", "val", "test")
NUM_LANDMARKS = 106


def read_landmarks(path: str) -> np.ndarray:
    """(106, 2) float32 (x, y); :class:`PrepareError` naming the file when missing or malformed."""
    if not os.path.isfile(path):
        raise PrepareError(f"landmark file '{path}' is missing")
    with open(path) as f:
        lines = [ln.split() for ln in f if ln.strip()]
    try:
        n = int(lines[0][0])
        pts = np.array([[float(v) for v in ln] for ln in lines[1:]], np.float32)
    except (IndexError, ValueError):
        raise PrepareError(f"landmark file '{path}': expected '{NUM_LANDMARKS}' then one 'x y' per line") from None
    if n != NUM_LANDMARKS or pts.shape != (NUM_LANDMARKS, 2):
        raise PrepareError(f"landmark file '{path}': header {n}, {len(pts)} points of shape {pts.shape[1:]}; "
                           f"expected {NUM_LANDMARKS} points 'x y'")
    return pts


def collect(raw: str) -> list[Job]:
    """One job per image of each split present, sorted by name."""
    jobs = []
    for split in SPLITS:
        img_dir = os.path.join(raw, split, "images")
        if not os.path.isdir(img_dir):
            raise PrepareError(f"'{img_dir}' is missing; expected LaPa's {{train,val,test}}/images folders")
        for fn in sorted(os.listdir(img_dir)):
            name, ext = os.path.splitext(fn)
            if ext.lower() not in (".jpg", ".jpeg", ".png"):
                continue
            jobs.append(Job(split, name, {"image": os.path.join(img_dir, fn),
                                          "label": os.path.join(raw, split, "labels", name + ".png"),
                                          "landmarks": os.path.join(raw, split, "landmarks", name + ".txt")}))
    return jobs


def convert(job: Job, paths: dict) -> np.ndarray:
    img = read_color(job.sources["image"])
    label = read_index_map(job.sources["label"])
    check_same_size(img, job.sources["image"], label, job.sources["label"])
    read_landmarks(job.sources["landmarks"])
    atomic_copy(job.sources["landmarks"], paths["landmarks"])
    atomic_copy(job.sources["label"], paths["labels"])
    if job.sources["image"].lower().endswith((".jpg", ".jpeg")):
        atomic_copy(job.sources["image"], paths["images"])
    else:
        atomic_imwrite(paths["images"], img)
    return label


def prepare(raw: str, out: str, *, workers: int = 4, progress: bool = True) -> dict:
    """Convert LaPa under ``raw`` into the prepared layout at ``out``; returns info.json's contents."""
    return run_prepare(out, collect(raw), convert, get_spec("lapa"), kinds=("images", "labels", "landmarks"),
                       workers=workers, progress=progress, source=raw)


def main(argv: Optional[list[str]] = None) -> int:
    a = make_parser("Prepare LaPa (11 classes, 106 landmarks) in the DML-CSR layout.").parse_args(argv)
    setup_cli_logging()
    return guarded(prepare, a.raw, a.out, workers=a.workers, progress=not a.no_progress)
