"""Multi-Face (Liu et al. 2017, Table 2) -> prepared layout (3 classes: background, skin, hair).

The dataset is not published; this converts a root in its described form, as a collection of one's own would be:
``{train,val,test}/images/NAME.jpg`` (any size, several faces each) and ``{train,val,test}/labels/NAME.png`` (one
class index a pixel: 0 background, 1 skin, 2 hair). As the paper does, each image and its label map are rescaled by
the long side to 512 pixels (area for the image, nearest for the labels) and zero-padded on the right and bottom to
512 x 512; the padding is background in the label map ("each one is zero padded to result in a 512 x 512 image").
"""
from __future__ import annotations

import os
from typing import Optional

import cv2
import numpy as np

from ..labels import get_spec
from .common import (Job, PrepareError, atomic_imwrite, check_same_size, guarded, make_parser, read_color,
                     read_index_map, run_prepare, setup_cli_logging)

__all__ = ["SIZE", "collect", "convert", "pad_to_square", "prepare", "main"]
SIZE = 512
SPLITS = {"train": "train", "val": "val", "valid": "val", "test": "test"}


def collect(raw: str) -> list[Job]:
    jobs = []
    for folder, split in SPLITS.items():
        images = os.path.join(raw, folder, "images")
        if not os.path.isdir(images):
            continue
        for fn in sorted(os.listdir(images)):
            name, ext = os.path.splitext(fn)
            if ext.lower() in (".jpg", ".jpeg", ".png"):
                jobs.append(Job(split, name, {"image": os.path.join(images, fn),
                                              "label": os.path.join(raw, folder, "labels", name + ".png")}))
    if not jobs:
        raise PrepareError(f"'{raw}' holds no {{train,val,test}}/images/NAME.jpg; expected the layout of "
                           f"dml_csr/data/prepare/multiface.py")
    return jobs


def pad_to_square(image: np.ndarray, label: np.ndarray, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Rescale by the long side to ``size`` and zero-pad right and bottom to ``size`` x ``size``."""
    h, w = label.shape
    s = size / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    img = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    lab = cv2.resize(label, (nw, nh), interpolation=cv2.INTER_NEAREST)
    out_img = np.zeros((size, size, 3), np.uint8)
    out_lab = np.zeros((size, size), np.uint8)
    out_img[:nh, :nw], out_lab[:nh, :nw] = img, lab
    return out_img, out_lab


def convert(job: Job, paths: dict) -> np.ndarray:
    img = read_color(job.sources["image"])
    label = read_index_map(job.sources["label"])
    check_same_size(img, job.sources["image"], label, job.sources["label"])
    img, label = pad_to_square(img, label)
    atomic_imwrite(paths["images"], img)
    atomic_imwrite(paths["labels"], label)
    return label


def prepare(raw: str, out: str, *, workers: int = 4, progress: bool = True) -> dict:
    """Convert the Multi-Face-style root ``raw`` into the prepared layout at ``out``; returns info.json's contents."""
    return run_prepare(out, collect(raw), convert, get_spec("multiface"), workers=workers, progress=progress,
                       source=raw)


def main(argv: Optional[list[str]] = None) -> int:
    a = make_parser("Prepare a Multi-Face-style root (3 classes, 512x512 zero-padded) in the DML-CSR layout."
                    ).parse_args(argv)
    setup_cli_logging()
    return guarded(prepare, a.raw, a.out, workers=a.workers, progress=not a.no_progress)
