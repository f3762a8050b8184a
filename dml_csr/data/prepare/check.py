"""Validation of a prepared root: every problem at once.

Checks: the root and ``label_names.txt`` exist and agree with the dataset's class count (a root declaring its own
classes, ``custom``: its names and ``dataset.yaml``, see :mod:`dml_csr.data.custom`); each split (train, val or
valid, test; or only the ones asked for, e.g. ``test`` for an evaluation-only root) has a non-empty list; every list
line is well formed and unique; every listed image and label exists and decodes; the label is single-channel 8-bit
with values in [0, C) or 255; image and label sizes match.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
from typing import Optional, Sequence

import cv2
import numpy as np

from ...progress import progress as progress_display
from ..imageio import imread_checked
from ..custom import DESCRIPTION_FILE, NAMES_FILE, custom_problems, read_class_names
from ..labels import CUSTOM, get_spec

__all__ = ["check_root", "check_sample", "split_aliases", "SPLITS"]
SPLITS = (("train",), ("val", "valid"), ("test",))


def split_aliases(names: Sequence[str]) -> list[tuple[str, ...]]:
    """The list names each split of ``names`` may go by (``val`` = ``valid``; any other name as it is)."""
    out = []
    for name in names:
        aliases = next((a for a in SPLITS if name in a), (name,))
        if aliases not in out:
            out.append(aliases)
    return out


def check_sample(args: tuple[str, str, int]) -> list[str]:
    """Problems of one (image path, label path, num_classes) triple."""
    ip, lp, c = args
    problems = []
    img = lab = None
    for path, kind in ((ip, "image"), (lp, "label")):
        try:  # missing, truncated or undecodable: one line naming the file
            x = imread_checked(path, cv2.IMREAD_COLOR if kind == "image" else cv2.IMREAD_UNCHANGED, ValueError, kind)
        except ValueError as e:
            problems.append(str(e))
            continue
        if kind == "image":
            img = x
        else:
            if x.ndim == 3 and not all(np.array_equal(x[..., 0], x[..., k]) for k in range(1, x.shape[2])):
                problems.append(f"label '{path}' has {x.shape[2]} different colour channels; expected class indices")
            elif x.dtype != np.uint8:
                problems.append(f"label '{path}' is {x.dtype}; expected 8-bit class indices")
            else:
                lab = x if x.ndim == 2 else x[..., 0]
    if lab is not None:
        counts = np.bincount(lab.ravel(), minlength=256)
        bad = [v for v in np.nonzero(counts)[0].tolist() if v >= c and v != 255]
        if bad:
            problems.append(f"label '{lp}' has values {bad} outside [0, {c}) and 255")
    if img is not None and lab is not None and img.shape[:2] != lab.shape:
        problems.append(f"size mismatch: image '{ip}' is {img.shape[1]}x{img.shape[0]}, label '{lp}' is "
                        f"{lab.shape[1]}x{lab.shape[0]} (WxH)")
    return problems


def _custom_class_count(root: str, problems: list[str]) -> Optional[int]:
    """A root declaring its own classes: its names and ``dataset.yaml`` checked (:mod:`dml_csr.data.custom`)."""
    problems.extend(custom_problems(root))
    names = read_class_names(os.path.join(root, NAMES_FILE), [])
    return len(names) if names else None


def _declares_its_classes(root: str) -> bool:
    """A root with a ``dataset.yaml``, or prepared by ``prepare_custom.py`` (``info.json``: ``"dataset": "custom"``)."""
    if os.path.isfile(os.path.join(root, DESCRIPTION_FILE)):
        return True
    try:
        with open(os.path.join(root, "info.json")) as f:
            return json.load(f).get("dataset") == CUSTOM
    except (OSError, ValueError, AttributeError):
        return False


def _class_count(root: str, dataset: Optional[str], problems: list[str]) -> Optional[int]:
    if dataset == CUSTOM or (dataset is None and _declares_its_classes(root)):
        return _custom_class_count(root, problems)
    names_path = os.path.join(root, "label_names.txt")
    names = None
    if os.path.isfile(names_path):
        with open(names_path) as f:
            names = [ln.strip() for ln in f if ln.strip()]
        if not names or names[0] != "bg":
            problems.append(f"'{names_path}': first line should be 'bg', got {names[:1]}")
    else:
        problems.append(f"'{names_path}' is missing (one class name a line, first 'bg')")
    if dataset:
        spec = get_spec(dataset)
        if names is not None and len(names) != spec.num_classes:
            problems.append(f"'{names_path}' lists {len(names)} classes; dataset '{dataset}' has {spec.num_classes}")
        return spec.num_classes
    return len(names) if names else None


def check_root(root: str, dataset: Optional[str] = None, workers: int = 1, progress: bool = False,
               splits: Optional[Sequence[str]] = None) -> list[str]:
    """Every problem of the prepared ``root`` as one-line messages (empty list = valid).

    Args:
        root: prepared root.
        dataset: registry key; gives the class count (otherwise ``label_names.txt`` does).
        workers: processes that decode the files.
        progress: show progress (a bar on a terminal, lines in a log).
        splits: the splits that must be there and are checked (default: train, val, test); others are not read.
    """
    if not os.path.isdir(root):
        return [f"dataset root '{root}' does not exist"]
    problems: list[str] = []
    c = _class_count(root, dataset, problems)
    if c is None:
        return problems + ["cannot tell the class count: pass --dataset NAME"]
    triples = []
    for aliases in split_aliases(splits) if splits else SPLITS:
        found = [a for a in aliases if os.path.isfile(os.path.join(root, f"{a}_list.txt"))]
        if not found:
            problems.append(f"split '{aliases[0]}' is missing: no {' or '.join(a + '_list.txt' for a in aliases)}")
            continue
        split = found[0]
        list_path = os.path.join(root, f"{split}_list.txt")
        seen: set[str] = set()
        n = 0
        with open(list_path) as f:
            for k, line in enumerate(f, 1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 2:
                    problems.append(f"{list_path}:{k}: expected 'images/NAME.jpg labels/NAME.png', got "
                                    f"{line.strip()!r}")
                    continue
                name = os.path.splitext(os.path.basename(parts[0]))[0]
                if name in seen:  # predictions and scores are keyed by the name
                    problems.append(f"{list_path}:{k}: sample name '{name}' ({parts[0]}) is listed twice")
                seen.add(name)
                n += 1
                triples.append((os.path.join(root, split, parts[0]), os.path.join(root, split, parts[1]), c))
        if n == 0:
            problems.append(f"split '{split}' is empty: '{list_path}' lists no samples")
    bar = None
    if progress:
        bar = progress_display(len(triples), f"checking {root}", "img")
    if workers > 1 and len(triples) > 1:
        with mp.get_context("fork" if os.name != "nt" else "spawn").Pool(workers) as pool:
            results = pool.imap(check_sample, triples, chunksize=max(1, min(64, len(triples) // (workers * 8) or 1)))
            for r in results:
                problems.extend(r)
                if bar:
                    bar.update()
    else:
        for t in triples:
            problems.extend(check_sample(t))
            if bar:
                bar.update()
    if bar:
        bar.close()
    return problems
