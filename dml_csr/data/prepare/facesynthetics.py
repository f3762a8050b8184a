"""FaceSynthetics (Wood et al., "Fake It Till You Make It", ICCV 2021) -> prepared layout (19 classes, 5 keypoints).

Raw layout, as the download unpacks (the dataset's README, "Dataset layout"): one folder of
``{frame_id}.png`` (the rendered face, 512x512), ``{frame_id}_seg.png`` (one class index a pixel in the README's order,
0 BACKGROUND ... 18 FACEWEAR, 255 IGNORE) and ``{frame_id}_ldmks.txt`` (70 lines ``x y``: iBUG's 68 points, then the
two pupils). RAW is that folder, or the folder holding it alone (``dataset_100000/``).

Images become JPEG (quality 95), label maps are copied byte for byte after validation, and the 70 landmarks become
the five keypoints of :data:`dml_csr.conventions.KEYPOINTS` (``landmarks/NAME.txt``): the subject's left eye is the
mean of iBUG points 42-47, the right eye of 36-41 (iBUG numbers from the image's left), the nose tip point 30, the
mouth corners points 54 (the subject's left) and 48. The dataset has no official split: the frames sorted by id, the
last ``--test`` are the test split, the ``--val`` before them the validation split, the rest train.
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np

from ...files import write_bytes
from ..labels import get_spec
from .common import (Job, PrepareError, atomic_copy, atomic_imwrite, check_same_size, guarded, make_parser,
                     read_color, read_index_map, run_prepare, setup_cli_logging)

__all__ = ["collect", "convert", "five_points", "prepare", "main", "NUM_LANDMARKS"]
NUM_LANDMARKS = 70
_SUFFIXES = ("_seg", "_ldmks")


def _frames_folder(raw: str) -> str:
    """``raw``, or its only subfolder when ``raw`` holds no frame itself (the zip's top folder)."""
    if not os.path.isdir(raw):
        raise PrepareError(f"'{raw}' does not exist; expected the unpacked FaceSynthetics folder")
    entries = [e for e in os.listdir(raw) if not e.startswith(".")]
    if not any(e.endswith("_seg.png") for e in entries):
        subs = [e for e in entries if os.path.isdir(os.path.join(raw, e))]
        if len(subs) == 1:
            return os.path.join(raw, subs[0])
    return raw


def collect(raw: str, val: int, test: int) -> list[Job]:
    """One job per rendered frame ``{id}.png``, sorted by id; the last ``test`` are test, ``val`` before them val."""
    if val < 0 or test < 0:
        raise PrepareError(f"--val {val} --test {test}: expected frame counts >= 0")
    folder = _frames_folder(raw)
    ids = sorted(f[:-4] for f in os.listdir(folder) if f.endswith(".png") and not f[:-4].endswith(_SUFFIXES))
    if len(ids) <= val + test:
        raise PrepareError(f"'{folder}' holds {len(ids)} frames ({{id}}.png); --val {val} --test {test} leave none to "
                           f"train on")
    split_of = ["train"] * (len(ids) - val - test) + ["val"] * val + ["test"] * test
    return [Job(split, i, {"image": os.path.join(folder, f"{i}.png"), "label": os.path.join(folder, f"{i}_seg.png"),
                           "landmarks": os.path.join(folder, f"{i}_ldmks.txt")}) for i, split in zip(ids, split_of)]


def five_points(path: str) -> np.ndarray:
    """(5, 2) keypoints (:data:`~dml_csr.conventions.KEYPOINTS` order) of a ``{id}_ldmks.txt`` file of 70 ``x y``
    lines; :class:`PrepareError` naming the file otherwise."""
    try:
        with open(path) as f:
            pts = np.array([[float(v) for v in line.split()] for line in f if line.strip()], np.float64)
    except FileNotFoundError:
        raise PrepareError(f"landmark file '{path}' is missing") from None
    except ValueError:
        raise PrepareError(f"landmark file '{path}': expected {NUM_LANDMARKS} lines 'x y'") from None
    if pts.shape != (NUM_LANDMARKS, 2):
        raise PrepareError(f"landmark file '{path}' has shape {pts.shape}; expected {NUM_LANDMARKS} lines 'x y'")
    return np.stack([pts[42:48].mean(0), pts[36:42].mean(0), pts[30], pts[54], pts[48]])


def convert(job: Job, paths: dict) -> np.ndarray:
    image = read_color(job.sources["image"])
    label = read_index_map(job.sources["label"])
    check_same_size(image, job.sources["image"], label, job.sources["label"])
    points = five_points(job.sources["landmarks"])
    write_bytes(paths["landmarks"], ("5\n" + "".join(f"{x:.3f} {y:.3f}\n" for x, y in points)).encode())
    atomic_copy(job.sources["label"], paths["labels"])
    atomic_imwrite(paths["images"], image)
    return label


def prepare(raw: str, out: str, *, val: int = 1000, test: int = 1000, workers: int = 4,
            progress: bool = True) -> dict:
    """Convert FaceSynthetics under ``raw`` into the prepared layout at ``out``; returns info.json's contents."""
    return run_prepare(out, collect(raw, val, test), convert, get_spec("facesynthetics"),
                       kinds=("images", "labels", "landmarks"), workers=workers, progress=progress, source=raw,
                       extra_info={"split": f"frames sorted by id: the last {test} test, the {val} before val"})


def main(argv: Optional[list[str]] = None) -> int:
    p = make_parser("Prepare FaceSynthetics (19 classes, 70 landmarks -> 5 keypoints) in the DML-CSR layout.")
    p.add_argument("--val", type=int, default=1000, help="frames for validation (default 1000)")
    p.add_argument("--test", type=int, default=1000, help="frames for testing, the last by id (default 1000)")
    a = p.parse_args(argv)
    setup_cli_logging()
    return guarded(prepare, a.raw, a.out, val=a.val, test=a.test, workers=a.workers, progress=not a.no_progress)
