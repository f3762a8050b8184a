"""CelebAMask-HQ -> prepared layout.

Raw layout: ``CelebA-HQ-img/{idx}.jpg`` (1024x1024), ``CelebAMask-HQ-mask-anno/{idx // 2000}/{idx:05d}_{part}.png``
(512x512 binary masks, absent when the part is absent), ``CelebA-HQ-to-CelebA-mapping.txt`` (``idx orig_idx
orig_file``). The label map paints the parts in the dataset authors' order (later parts over earlier ones) with the
registry's class indices; images are resized to the mask size (area interpolation, JPEG quality 95). The split is the
official one (24,183 / 2,993 / 2,824): CelebA's ``list_eval_partition.txt`` when given (or found in RAW), otherwise
CelebA's documented boundaries on ``orig_idx`` (train < 162,770 <= val < 182,637 <= test).
"""
from __future__ import annotations

import logging
import os
from typing import Optional

import cv2
import numpy as np

from ..labels import get_spec
from .common import Job, PrepareError, atomic_imwrite, make_parser, read_color, read_grey, run_prepare, \
    setup_cli_logging, guarded

__all__ = ["PARTS", "collect", "convert", "prepare", "main"]

logger = logging.getLogger(__name__)
PARTS = ("skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear", "mouth", "u_lip", "l_lip",
         "hair", "hat", "ear_r", "neck_l", "neck", "cloth")
MASK_SIZE = (512, 512)
SPLIT_BOUNDS = (162_770, 182_637)  # CelebA's partition by original index (0-based): train < a <= val < b <= test
OFFICIAL_COUNTS = {"train": 24_183, "val": 2_993, "test": 2_824}
_PARTITION_NAMES = {0: "train", 1: "val", 2: "test"}


def _read_mapping(path: str) -> list[tuple[int, int, str]]:
    if not os.path.isfile(path):
        raise PrepareError(f"mapping file '{path}' is missing (it ships with CelebAMask-HQ)")
    rows = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if not parts or parts[0] == "idx":
                continue
            if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
                raise PrepareError(f"{path}:{n}: expected 'idx orig_idx orig_file', got {line.strip()!r}")
            rows.append((int(parts[0]), int(parts[1]), parts[2]))
    return rows


def _read_partition(path: str) -> dict[str, int]:
    part = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise PrepareError(f"{path}:{n}: expected 'NNNNNN.jpg 0|1|2', got {line.strip()!r}")
            part[parts[0]] = int(parts[1])
    return part


def collect(raw: str, partition: Optional[str] = None) -> list[Job]:
    """One job per mapped image, ordered by split then idx."""
    rows = _read_mapping(os.path.join(raw, "CelebA-HQ-to-CelebA-mapping.txt"))
    if partition is None and os.path.isfile(os.path.join(raw, "list_eval_partition.txt")):
        partition = os.path.join(raw, "list_eval_partition.txt")
    table = _read_partition(partition) if partition else None
    jobs = []
    for idx, orig_idx, orig_file in rows:
        if table is not None:
            if orig_file not in table:
                raise PrepareError(f"'{orig_file}' (CelebA-HQ {idx}) is not in partition file '{partition}'")
            split = _PARTITION_NAMES[table[orig_file]]
        else:
            split = "train" if orig_idx < SPLIT_BOUNDS[0] else "val" if orig_idx < SPLIT_BOUNDS[1] else "test"
        mask_dir = os.path.join(raw, "CelebAMask-HQ-mask-anno", str(idx // 2000))
        sources = {"image": os.path.join(raw, "CelebA-HQ-img", f"{idx}.jpg")}
        sources.update({p: os.path.join(mask_dir, f"{idx:05d}_{p}.png") for p in PARTS})
        jobs.append(Job(split, str(idx), sources))
    order = {"train": 0, "val": 1, "test": 2}
    return sorted(jobs, key=lambda j: (order[j.split], int(j.name)))


def convert(job: Job, paths: dict) -> np.ndarray:
    """Paint the part masks (later over earlier) and write the resized image and the label map."""
    spec = get_spec("celebamask_hq")
    label = np.zeros(MASK_SIZE, np.uint8)
    for part in PARTS:
        p = job.sources[part]
        if not os.path.exists(p):
            continue  # the part is absent from this face
        m = read_grey(p)
        if m.shape != MASK_SIZE:
            raise PrepareError(f"mask '{p}' is {m.shape[1]}x{m.shape[0]}; expected {MASK_SIZE[1]}x{MASK_SIZE[0]}")
        label[m != 0] = spec.index(part)
    img = read_color(job.sources["image"])
    if img.shape[:2] != MASK_SIZE:
        interp = cv2.INTER_AREA if img.shape[0] > MASK_SIZE[0] else cv2.INTER_LINEAR
        img = cv2.resize(img, MASK_SIZE[::-1], interpolation=interp)
    atomic_imwrite(paths["labels"], label)
    atomic_imwrite(paths["images"], img)
    return label


def prepare(raw: str, out: str, *, partition: Optional[str] = None, workers: int = 4, progress: bool = True) -> dict:
    """Convert CelebAMask-HQ under ``raw`` into the prepared layout at ``out``; returns info.json's contents."""
    spec = get_spec("celebamask_hq")
    if tuple(spec.classes[1:]) != PARTS:
        raise AssertionError("label registry and CelebAMask-HQ part order disagree")
    jobs = collect(raw, partition)
    info = run_prepare(out, jobs, convert, spec, workers=workers, progress=progress, source=raw,
                       extra_info={"split_source": partition or "orig_idx boundaries"})
    if len(jobs) == 30_000 and info["counts"] != OFFICIAL_COUNTS:
        logger.warning("split counts %s differ from the official %s", info["counts"], OFFICIAL_COUNTS)
    return info


def main(argv: Optional[list[str]] = None) -> int:
    p = make_parser("Prepare CelebAMask-HQ (19 classes) in the DML-CSR layout.")
    p.add_argument("--partition", help="CelebA's list_eval_partition.txt (default: RAW/list_eval_partition.txt if "
                                       "present, else CelebA's documented index boundaries)")
    a = p.parse_args(argv)
    setup_cli_logging()
    return guarded(prepare, a.raw, a.out, partition=a.partition, workers=a.workers, progress=not a.no_progress)
