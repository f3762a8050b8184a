"""Helen (the resized version face-parsing papers use) -> prepared layout (11 classes).

Two raw layouts are recognised:

* the original: ``images/NAME.jpg``, ``labels/NAME/NAME_lbl00.png`` ... ``_lbl10.png`` (one grey map per class; a
  pixel's label is the class whose map is largest there, ties to the lower index), and the lists ``exemplars.txt``
  (train), ``tuning.txt`` (val), ``testing.txt`` (test) with lines ``index , name``;
* the relabelled variant: ``NAME_image.jpg`` next to ``NAME_label.png`` (one class index per pixel, the same 11
  classes), in any folders below the root. The split comes from the three lists when they are in the root, else from
  the folder a pair sits in (``train``; ``val``/``valid``/``tuning``; ``test``/``testing``). Other files (such as
  ``NAME_viz.png``) are ignored.

Images are copied byte for byte.
"""
from __future__ import annotations

import logging
import os
from typing import Optional

import numpy as np

from ..labels import get_spec
from .common import (Job, PrepareError, atomic_copy, atomic_imwrite, check_same_size, guarded, make_parser,
                     read_color, read_grey, read_index_map, run_prepare, setup_cli_logging)

__all__ = ["LISTS", "collect", "convert", "hold_out_val", "prepare", "main"]
logger = logging.getLogger(__name__)
LISTS = {"train": "exemplars.txt", "val": "tuning.txt", "test": "testing.txt"}
NUM_CLASSES = 11


def _read_list(path: str) -> list[str]:
    if not os.path.isfile(path):
        raise PrepareError(f"list '{path}' is missing; Helen ships exemplars.txt, tuning.txt and testing.txt (or, "
                           f"for the relabelled variant, NAME_image.jpg + NAME_label.png pairs: none was found)")
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
    """Jobs of the layout found under ``raw`` (the original when ``labels/`` exists, else the relabelled pairs)."""
    if not os.path.isdir(os.path.join(raw, "labels")):
        pairs = _find_relabelled(raw)
        if pairs:
            return _collect_relabelled(raw, pairs)
    jobs = []
    for split, fn in LISTS.items():
        for name in _read_list(os.path.join(raw, fn)):
            src = {"image": os.path.join(raw, "images", name + ".jpg")}
            src.update({f"lbl{k:02d}": os.path.join(raw, "labels", name, f"{name}_lbl{k:02d}.png")
                        for k in range(NUM_CLASSES)})
            jobs.append(Job(split, name, src))
    return jobs


SPLIT_FOLDERS = {"train": "train", "val": "val", "valid": "val", "tuning": "val", "test": "test", "testing": "test"}


def _find_relabelled(raw: str) -> dict[str, tuple[str, str]]:
    """``{NAME: (folder relative to raw, its NAME_image.jpg path)}`` for every ``*_image.jpg`` or ``*_label.png``
    below ``raw`` (a label without its image is kept, so that the missing image is reported, not skipped)."""
    found: dict[str, tuple[str, str]] = {}
    images: set[str] = set()  # names whose image file exists (its own spelling, e.g. NAME_Image.JPG, is kept)
    for folder, _, files in sorted(os.walk(raw, followlinks=True)):
        for fn in sorted(files):
            low = fn.lower()
            suffix = next((s for s in ("_image.jpg", "_label.png") if low.endswith(s)), None)
            if suffix is None:
                continue
            name = fn[: -len(suffix)]
            if name in found and os.path.dirname(found[name][1]) != folder:
                raise PrepareError(f"'{name}' appears twice: in '{os.path.dirname(found[name][1])}' and '{folder}'")
            if suffix == "_image.jpg":
                if name in images:
                    raise PrepareError(f"'{name}' has two images in '{folder}'")
                images.add(name)
                found[name] = (os.path.relpath(folder, raw), os.path.join(folder, fn))
            elif name not in found:  # a label first (or alone): the image is looked for under its usual name
                found[name] = (os.path.relpath(folder, raw), os.path.join(folder, name + "_image.jpg"))
    return found


def _collect_relabelled(raw: str, pairs: dict[str, tuple[str, str]]) -> list[Job]:
    def job(split: str, name: str) -> Job:
        image = pairs[name][1] if name in pairs else os.path.join(raw, name + "_image.jpg")  # missing: named later
        return Job(split, name, {"image": image, "label": image[: -len("_image.jpg")] + "_label.png"},
                   {"relabelled": True})

    lists = [fn for fn in LISTS.values() if os.path.isfile(os.path.join(raw, fn))]
    if len(lists) == len(LISTS):
        return [job(split, name) for split, fn in LISTS.items() for name in _read_list(os.path.join(raw, fn))]
    if lists:
        missing = sorted(set(LISTS.values()) - set(lists))
        raise PrepareError(f"'{raw}' has {', '.join(lists)} but not {', '.join(missing)}: give all three lists, or "
                           f"none (the split then comes from the folder names)")
    jobs, unplaced = [], []
    for name, (folder, _) in pairs.items():
        split = next((SPLIT_FOLDERS[p.lower()] for p in reversed(folder.split(os.sep)) if p.lower() in SPLIT_FOLDERS),
                     None)
        if split is None:
            unplaced.append(os.path.join(folder, name + "_image.jpg"))
        else:
            jobs.append(job(split, name))
    if unplaced:
        raise PrepareError(f"cannot tell the split of {len(unplaced)} relabelled Helen image(s) (first: "
                           f"'{unplaced[0]}'): put the pairs under train/, val/ and test/ folders, or put "
                           f"{', '.join(LISTS.values())} in '{raw}'")
    order = {"train": 0, "val": 1, "test": 2}
    return sorted(jobs, key=lambda j: (order[j.split], j.name))


def _convert_relabelled(job: Job, paths: dict) -> np.ndarray:
    img = read_color(job.sources["image"])
    lab = read_index_map(job.sources["label"])
    check_same_size(img, job.sources["image"], lab, job.sources["label"])
    atomic_imwrite(paths["labels"], lab)
    atomic_copy(job.sources["image"], paths["images"])
    return lab


def convert(job: Job, paths: dict) -> np.ndarray:
    if job.extra.get("relabelled"):
        return _convert_relabelled(job, paths)
    img = read_color(job.sources["image"])
    maps = []
    for k in range(NUM_CLASSES):
        p = job.sources[f"lbl{k:02d}"]
        m = read_grey(p)
        check_same_size(img, job.sources["image"], m, p, "class map")
        maps.append(m)
    label = np.argmax(np.stack(maps), axis=0).astype(np.uint8)
    atomic_imwrite(paths["labels"], label)
    atomic_copy(job.sources["image"], paths["images"])
    return label


def hold_out_val(jobs: list[Job], n: int, seed: int = 0) -> list[Job]:
    """Move ``n`` training jobs, drawn with a fixed seed (the same on every rerun), to a new ``val`` split."""
    train = [j for j in jobs if j.split == "train"]
    if any(j.split == "val" for j in jobs):
        raise PrepareError("--val-from-train: this Helen copy already has a validation split")
    if not 0 < n < len(train):
        raise PrepareError(f"--val-from-train {n}: expected 1 <= N < {len(train)} (the training images; 0 = no "
                           f"hold-out)")
    picked = {train[i].name for i in np.random.default_rng(seed).permutation(len(train))[:n]}
    moved = [Job("val", j.name, j.sources, j.extra) for j in train if j.name in picked]
    return [j for j in jobs if j.name not in picked] + moved


def prepare(raw: str, out: str, *, workers: int = 4, progress: bool = True, val_from_train: int = 0) -> dict:
    """Convert Helen under ``raw`` (the SmithCVPR2013_dataset_resized folder, or the relabelled variant's root) into
    ``out``; returns info.json. ``val_from_train`` > 0 holds out that many training images as ``val`` (for a copy
    without a validation split, such as the relabelled variant's train/test folders)."""
    jobs = collect(raw)
    extra = None
    if val_from_train:
        jobs = hold_out_val(jobs, val_from_train)
        extra = {"val_held_out_from_train": val_from_train}
    elif not any(j.split == "val" for j in jobs):
        logger.warning("'%s' has no validation split; pass --val-from-train N (e.g. 230, the size of Helen's tuning "
                       "list) to hold out N training images (validating on the test split would select models on it)",
                       raw)
    return run_prepare(out, jobs, convert, get_spec("helen"), workers=workers, progress=progress, source=raw,
                       extra_info=extra)


def main(argv: Optional[list[str]] = None) -> int:
    p = make_parser("Prepare Helen (11 classes; exemplars/tuning/testing; original per-class maps or the relabelled "
                    "NAME_image.jpg/NAME_label.png variant) in the DML-CSR layout.")
    p.add_argument("--val-from-train", type=int, default=0, metavar="N",
                   help="hold out N training images (fixed seed) as the val split, for a copy without one")
    a = p.parse_args(argv)
    setup_cli_logging()
    return guarded(prepare, a.raw, a.out, workers=a.workers, progress=not a.no_progress,
                   val_from_train=a.val_from_train)
