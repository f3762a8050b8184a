"""Your own photos and label maps -> the prepared layout of a root that declares its own classes
(``data.dataset: custom``, :mod:`dml_csr.data.custom`).

Inputs: a folder of photos and a folder of label maps paired by file stem (``a.jpg`` with ``a.png``); a class-names
file (one name a line, background first); label maps as index PNGs (one class index a pixel, 255 = ignore) or, with a
colours file (one ``r g b`` line a class, in the class-names order), colour PNGs whose every colour is one of those.
The split is drawn once from a seed (``--val F --test F``: fractions of the pairs, the rest trains) or read from a
folder of lists (``train.txt``, ``val.txt``, ``test.txt``: one stem a line; a pair in no list is left out, with a
warning). Written: the prepared layout, ``label_names.txt`` (the names as given), ``info.json`` (counts, class
histograms) and, with colours, ``dataset.yaml`` holding them (an existing ``dataset.yaml`` is kept: add flip pairs,
groups and the mean-F1 classes there). Resumable, idempotent and parallel as every prepare script
(:mod:`dml_csr.data.prepare.common`); an unpaired file, a colour not in the colours file or a label value out of range
is one line naming the file.
"""
from __future__ import annotations

import argparse
import logging
import os
from typing import Optional

import numpy as np

from ...files import write_bytes
from ..custom import DESCRIPTION_FILE, IGNORE_INDEX, custom_problems, describe_colors, read_class_names
from ..labels import CUSTOM, LabelSpec
from ..pairing import IMAGE_EXTS, LABEL_EXTS, check_paired, files_by_stem
from .common import (Job, PrepareError, atomic_copy, atomic_imwrite, check_same_size, guarded, read_color,
                     read_index_map, run_prepare, setup_cli_logging)

__all__ = ["read_colors", "collect", "assign_splits", "convert", "prepare", "main"]

logger = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


def read_colors(path: str, classes: tuple[str, ...]) -> np.ndarray:
    """(C, 3) uint8 RGB, one ``r g b`` line a class; :class:`PrepareError` naming the file and line otherwise."""
    rows = []
    try:
        with open(path) as f:
            lines = [(n, line.split()) for n, line in enumerate(f, 1) if line.strip()]
    except OSError as e:
        raise PrepareError(f"colours file '{path}' cannot be read ({e.strerror or e})") from None
    for n, parts in lines:
        if len(parts) != 3 or not all(p.isdigit() and int(p) <= 255 for p in parts):
            raise PrepareError(f"{path}:{n}: {' '.join(parts)!r}; expected 'r g b', three integers in 0..255")
        rows.append(tuple(int(p) for p in parts))
    if len(rows) != len(classes):
        raise PrepareError(f"colours file '{path}' has {len(rows)} colours for {len(classes)} classes; expected one "
                           f"'r g b' line a class, in the order of the class names")
    if len(set(rows)) != len(rows):
        twice = next(r for r in rows if rows.count(r) > 1)
        raise PrepareError(f"colours file '{path}' gives the colour {twice} to two classes; expected one colour a "
                           f"class")
    return np.array(rows, np.uint8)


def collect(images: str, masks: str) -> dict[str, tuple[str, str]]:
    """``{stem: (photo, label map)}`` of the two folders; a file without its partner is an error naming it."""
    try:
        photos = files_by_stem(images, IMAGE_EXTS, "photos")
        maps = files_by_stem(masks, LABEL_EXTS, "label maps")
        check_paired(photos, maps, "photo(s)", masks)
        check_paired(maps, photos, "label map(s)", images)
    except (FileNotFoundError, ValueError) as e:
        raise PrepareError(str(e)) from None
    return {s: (photos[s], maps[s]) for s in sorted(photos)}


def _from_lists(stems: list[str], folder: str) -> dict[str, str]:
    split_of: dict[str, str] = {}
    for split in SPLITS:
        path = os.path.join(folder, f"{split}.txt")
        if not os.path.isfile(path):
            continue
        with open(path) as f:
            for n, line in enumerate(f, 1):
                stem = line.strip()
                if not stem:
                    continue
                if stem not in stems:
                    raise PrepareError(f"{path}:{n}: '{stem}' has no photo and label map of that stem")
                if stem in split_of:
                    raise PrepareError(f"{path}:{n}: '{stem}' is already in the {split_of[stem]} list")
                split_of[stem] = split
    if "train" not in split_of.values():
        raise PrepareError(f"'{folder}' holds no train.txt naming a pair; expected train.txt, val.txt, test.txt")
    left = len(stems) - len(split_of)
    if left:
        logger.warning("%d pair(s) are in no list of '%s' and are left out", left, folder)
    return split_of


def assign_splits(stems: list[str], val: float, test: float, seed: int,
                  lists: Optional[str] = None) -> dict[str, str]:
    """``{stem: split}``: from the lists in ``lists``, else a draw of ``seed``: a permutation of the sorted stems,
    its first ``round(n * test)`` test, the next ``round(n * val)`` val, the rest train."""
    if lists:
        return _from_lists(stems, lists)
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise PrepareError(f"--val {val} --test {test}: expected fractions in [0, 1) that leave pairs to train on")
    order = np.random.default_rng(seed).permutation(len(stems))
    n_test, n_val = round(len(stems) * test), round(len(stems) * val)
    split_of = {}
    for rank, k in enumerate(order):
        split_of[stems[k]] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return split_of


def _colour_label(path: str, colours: np.ndarray, colours_path: str) -> np.ndarray:
    rgb = read_color(path)[..., ::-1].astype(np.int32)
    keys = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    table = {int(r) << 16 | int(g) << 8 | int(b): i for i, (r, g, b) in enumerate(colours.tolist())}
    found, inverse = np.unique(keys, return_inverse=True)
    unknown = [k for k in found.tolist() if k not in table]
    if unknown:
        k = unknown[0]
        ys, xs = np.nonzero(keys == k)
        raise PrepareError(f"label map '{path}' has the colour ({k >> 16}, {k >> 8 & 255}, {k & 255}) at "
                           f"{len(ys)} pixel(s) (first at x={xs[0]}, y={ys[0]}) that '{colours_path}' does not list"
                           f"{f' ({len(unknown)} such colours)' if len(unknown) > 1 else ''}; expected the colours "
                           f"of the classes only")
    return np.array([table[k] for k in found.tolist()], np.uint8)[inverse.reshape(keys.shape)]


def convert(job: Job, paths: dict) -> np.ndarray:
    """Write one pair; returns its label map (class indices)."""
    image = read_color(job.sources["image"])
    colours, n = job.extra["colours"], job.extra["num_classes"]
    if colours is not None:
        label = _colour_label(job.sources["label"], np.asarray(colours, np.uint8), job.extra["colours_path"])
    else:
        label = read_index_map(job.sources["label"])
        bad = sorted(set(np.unique(label).tolist()) - set(range(n)) - {IGNORE_INDEX})
        if bad:
            raise PrepareError(f"label map '{job.sources['label']}' has values {bad} outside [0, {n}) and "
                               f"{IGNORE_INDEX} (ignore); expected class indices of the {n} classes")
    check_same_size(image, job.sources["image"], label, job.sources["label"])
    if job.sources["image"].lower().endswith((".jpg", ".jpeg")):
        atomic_copy(job.sources["image"], paths["images"])
    else:
        atomic_imwrite(paths["images"], image)
    atomic_imwrite(paths["labels"], label)  # PNG: lossless
    return label


def _describe(out: str, classes: tuple[str, ...], colours: Optional[np.ndarray]) -> None:
    """``dataset.yaml`` with the colours, unless the root holds one already (then it is checked)."""
    path = os.path.join(out, DESCRIPTION_FILE)
    if colours is not None and not os.path.isfile(path):
        write_bytes(path, ("# the classes' colours (prepare_custom.py --colors); add pairs, groups, mean_f1 here\n"
                           + describe_colors(classes, colours)).encode())
    problems = custom_problems(out)
    if problems:
        raise PrepareError(problems[0])


def prepare(images: str, masks: str, out: str, classes_path: str, *, colors: Optional[str] = None,
            val: float = 0.1, test: float = 0.1, splits: Optional[str] = None, seed: int = 0, workers: int = 4,
            progress: bool = True) -> dict:
    """Prepare ``images`` and ``masks`` into ``out``; returns ``info.json``'s contents."""
    problems: list[str] = []
    classes = read_class_names(classes_path, problems)
    if problems:
        raise PrepareError(problems[0])
    colours = read_colors(colors, classes) if colors else None
    pairs = collect(images, masks)
    split_of = assign_splits(list(pairs), val, test, seed, splits)
    extra = {"colours": None if colours is None else colours.tolist(), "colours_path": colors,
             "num_classes": len(classes)}
    jobs = [Job(split, stem, {"image": pairs[stem][0], "label": pairs[stem][1]}, extra)
            for split in SPLITS for stem in sorted(s for s in split_of if split_of[s] == split)]
    spec = LabelSpec(CUSTOM, classes)
    info = run_prepare(out, jobs, convert, spec, workers=workers, progress=progress, source=images,
                       label_names=classes, extra_info={"masks": os.path.abspath(masks), "seed": seed,
                                                        "splits_from": os.path.abspath(splits) if splits else None})
    _describe(out, classes, colours)
    return info


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description="Prepare your own photos and label maps (your own classes) in the "
                                            "DML-CSR layout, for data.dataset: custom.")
    p.add_argument("--images", required=True, help="folder of photos (jpg, png, ...)")
    p.add_argument("--masks", required=True, help="folder of label maps, one per photo, of the same file stem")
    p.add_argument("--out", required=True, help="prepared root to write (resumable: rerun to finish)")
    p.add_argument("--classes", required=True, help="class names, one a line, background first")
    p.add_argument("--colors", help="one 'r g b' line a class: the label maps are colour PNGs of these colours "
                                    "(default: index PNGs, one class index a pixel, 255 = ignore)")
    p.add_argument("--val", type=float, default=None, help="fraction of the pairs for validation (default 0.1)")
    p.add_argument("--test", type=float, default=None, help="fraction of the pairs for testing (default 0.1)")
    p.add_argument("--splits", help="instead of --val/--test: a folder with train.txt, val.txt, test.txt (one stem "
                                    "a line)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split's draw (default 0)")
    p.add_argument("--workers", type=int, default=max(1, min(8, os.cpu_count() or 2)), help="processes")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    if a.splits and (a.val is not None or a.test is not None):
        p.error("--splits names the split of every pair; drop --val and --test")
    setup_cli_logging()
    val, test = (0.1 if a.val is None else a.val), (0.1 if a.test is None else a.test)
    return guarded(prepare, a.images, a.masks, a.out, a.classes, colors=a.colors, val=val, test=test,
                   splits=a.splits, seed=a.seed, workers=a.workers, progress=not a.no_progress)
