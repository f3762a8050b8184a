"""Shared machinery of the prepare scripts: atomic writes, a resumable worker pool, lists and ``info.json``.

A dataset module provides a list of :class:`Job` (one per sample) and a module-level ``convert(job, out_paths)``
that writes the sample's files and returns its (H, W) uint8 label map. :func:`run_prepare` skips samples whose
outputs all exist (resume), converts the rest in a process pool with a progress bar, collects every failure, and
writes ``<root>/{split}_list.txt``, ``label_names.txt`` and ``info.json`` (counts per split, pixel histogram per
class, over all splits and per split) only when every sample succeeded. Running it twice produces the same files
(idempotent).
"""
from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import shutil
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import cv2
import numpy as np

from ...files import atomic_write, write_bytes, write_image
from ...progress import progress as progress_display
from ..imageio import imread_checked
from ..labels import LabelSpec

__all__ = ["Job", "PrepareError", "atomic_imwrite", "atomic_copy", "read_grey", "read_color",
           "read_index_map", "check_same_size", "run_prepare", "make_parser", "setup_cli_logging", "guarded"]

logger = logging.getLogger(__name__)
OUTPUT_KINDS = {"images": ".jpg", "labels": ".png"}


class PrepareError(RuntimeError):
    """Raw files that cannot be converted; the message lists them."""


@dataclass
class Job:
    """One sample to convert: its split and name in the prepared layout, and its raw source paths."""
    split: str
    name: str
    sources: dict[str, str] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # dataset-specific values (e.g. expected size)


def out_paths(root: str, job: Job, kinds: Sequence[str]) -> dict[str, str]:
    """``{"images": <root>/<split>/images/NAME.jpg, "labels": ..., "landmarks": ....txt}`` for ``kinds``."""
    ext = {**OUTPUT_KINDS, "landmarks": ".txt"}
    return {k: os.path.join(root, job.split, k, job.name + ext[k]) for k in kinds}


def atomic_imwrite(path: str, image: np.ndarray, jpeg_quality: int = 95) -> None:
    """Write an image atomically (:func:`dml_csr.files.write_image`); PNG is lossless, JPEG at ``jpeg_quality``."""
    write_image(path, image, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if path.endswith(".jpg") else [])


def atomic_copy(src: str, dst: str) -> None:
    atomic_write(dst, lambda f: _copy_into(src, f), suffix=os.path.splitext(dst)[1])


def _copy_into(src: str, f) -> None:
    with open(src, "rb") as s:
        shutil.copyfileobj(s, f)


def read_color(path: str) -> np.ndarray:
    """(H, W, 3) uint8 BGR; :class:`PrepareError` naming the file when missing or undecodable."""
    return imread_checked(path, cv2.IMREAD_COLOR, PrepareError, "file")


def read_grey(path: str) -> np.ndarray:
    """(H, W) uint8 single channel (colour files are converted to grey); errors name the file."""
    return imread_checked(path, cv2.IMREAD_GRAYSCALE, PrepareError, "file")


def read_index_map(path: str) -> np.ndarray:
    """(H, W) uint8 class indices, read unchanged: a 16-bit, palette-expanded or colour map is an error naming the
    file (a grey conversion would silently turn it into other values). Three equal channels are accepted."""
    lab = imread_checked(path, cv2.IMREAD_UNCHANGED, PrepareError, "label file")
    if lab.ndim == 3 and lab.shape[2] in (3, 4) and (lab[..., :3] == lab[..., :1]).all():
        lab = np.ascontiguousarray(lab[..., 0])
    if lab.ndim != 2 or lab.dtype != np.uint8:
        kind = f"{lab.shape[2]}-channel" if lab.ndim == 3 else "single-channel"
        raise PrepareError(f"label file '{path}' is a {kind} {lab.dtype} image; expected 8-bit class indices, one "
                           f"channel")
    return lab


def check_same_size(image: np.ndarray, image_path: str, other: np.ndarray, other_path: str,
                    other_kind: str = "label") -> None:
    """:class:`PrepareError` naming both files and both sizes (WxH) when ``other`` is not the image's height x width."""
    if image.shape[:2] != other.shape[:2]:
        raise PrepareError(f"size mismatch (WxH): image '{image_path}' is {image.shape[1]}x{image.shape[0]}, "
                           f"{other_kind} '{other_path}' is {other.shape[1]}x{other.shape[0]}")


def _work(args) -> tuple[str, str, Optional[np.ndarray], Optional[str]]:
    """Convert (or, when done already, re-read) one job; returns (split, name, histogram, error)."""
    convert, job, root, kinds, num_classes = args
    paths = out_paths(root, job, kinds)

    def out_of_range(lab: np.ndarray) -> np.ndarray:
        return np.unique(lab[(lab >= num_classes) & (lab != 255)])

    try:
        label = None
        if all(os.path.isfile(p) for p in paths.values()):
            label = cv2.imread(paths["labels"], cv2.IMREAD_UNCHANGED)
        if label is None or label.ndim != 2 or out_of_range(label).size:  # missing, or left by a failed run
            label = convert(job, paths)
        bad = out_of_range(label)
        if bad.size:
            for p in paths.values():  # a rerun after the sources are fixed must convert again, not re-read this
                if os.path.isfile(p):
                    os.remove(p)
            raise PrepareError(f"sample '{job.name}' converts to label values {bad.tolist()} outside "
                               f"[0, {num_classes}) (sources: {', '.join(job.sources.values())})")
        return job.split, job.name, np.bincount(label.ravel(), minlength=256)[:num_classes], None
    except (PrepareError, OSError, ValueError) as e:
        return job.split, job.name, None, str(e)


def run_prepare(out_root: str, jobs: Sequence[Job], convert: Callable[[Job, dict], np.ndarray], spec: LabelSpec,
                *, kinds: Sequence[str] = ("images", "labels"), workers: int = 4, progress: bool = True,
                source: str = "", extra_info: Optional[dict] = None,
                label_names: Optional[Sequence[str]] = None) -> dict:
    """Convert every job into ``out_root`` and write the lists, ``label_names.txt`` and ``info.json``.

    Args:
        out_root: prepared root to write.
        jobs: samples in list order (the split lists keep this order).
        convert: module-level function ``convert(job, paths) -> (H, W) uint8 label``; it writes ``paths[kind]``.
        spec: label registry entry; its class count validates the labels and names the histogram.
        kinds: output files per sample; a sample is complete (and skipped on a rerun) when all exist.
        workers: processes (0 or 1: in this process).
        progress: show progress (a bar on a terminal, lines in a log).
        source: raw root, recorded in info.json.
        extra_info: more info.json entries.
        label_names: the lines of ``label_names.txt`` (default: ``bg``, then the spec's other class names).
    Returns:
        the info.json contents. Raises :class:`PrepareError` listing every failed sample (nothing but the converted
        samples is written then, so a rerun after fixing the files resumes).
    """
    if not jobs:
        raise PrepareError(f"no samples found under '{source}'; is it the dataset's download folder?")
    spaced = [j.name for j in jobs if any(ch.isspace() for ch in j.name)]
    if spaced:  # the lists separate their two paths by whitespace: such a name could not be read back
        raise PrepareError(f"{len(spaced)} sample name(s) contain whitespace, which the prepared lists cannot hold "
                           f"(e.g. {spaced[0]!r}); rename those files in '{source}' and rerun")
    if source and os.path.realpath(out_root) == os.path.realpath(source):
        raise PrepareError(f"the output folder '{out_root}' is the raw folder itself; write the prepared layout "
                           f"elsewhere (a rerun removes prepared files that no list names)")
    os.makedirs(out_root, exist_ok=True)
    args = [(convert, j, out_root, tuple(kinds), spec.num_classes) for j in jobs]
    bar = None
    if progress:
        bar = progress_display(len(args), f"{spec.name} -> {out_root}", "img")
    results = {}
    if workers > 1:
        with mp.get_context("spawn" if os.name == "nt" else "fork").Pool(workers) as pool:
            for r in pool.imap_unordered(_work, args, chunksize=max(1, min(64, len(args) // (workers * 8) or 1))):
                results[(r[0], r[1])] = r
                if bar:
                    bar.update()
    else:
        for a in args:
            r = _work(a)
            results[(r[0], r[1])] = r
            if bar:
                bar.update()
    if bar:
        bar.close()
    errors = [r[3] for r in results.values() if r[3]]
    if errors:
        for e in errors:
            logger.error("%s", e)
        raise PrepareError(f"{len(errors)} of {len(jobs)} samples failed (first: {errors[0]}); fix or remove them "
                           f"and rerun: converted samples are kept")
    hists: dict[str, np.ndarray] = {}
    lists: dict[str, list[str]] = {}
    for j in jobs:
        hists.setdefault(j.split, np.zeros(spec.num_classes, np.int64))
        hists[j.split] += results[(j.split, j.name)][2]
        lists.setdefault(j.split, []).append(f"images/{j.name}.jpg labels/{j.name}.png")
    hist = sum(hists.values())
    for split, lines in lists.items():
        write_bytes(os.path.join(out_root, f"{split}_list.txt"), ("\n".join(lines) + "\n").encode())
    _remove_stale(out_root, {(j.split, j.name) for j in jobs})
    names = ("bg",) + spec.classes[1:] if label_names is None else tuple(label_names)
    write_bytes(os.path.join(out_root, "label_names.txt"), ("\n".join(names) + "\n").encode())
    info = {"dataset": spec.name, "source": os.path.abspath(source) if source else "",
            "counts": {s: len(v) for s, v in lists.items()}, "class_names": list(spec.classes),
            "pixel_histogram": {c: int(n) for c, n in zip(spec.classes, hist)},
            "pixel_histogram_by_split": {s: {c: int(n) for c, n in zip(spec.classes, h)} for s, h in hists.items()},
            **(extra_info or {})}
    write_bytes(os.path.join(out_root, "info.json"), (json.dumps(info, indent=2) + "\n").encode())
    logger.info("prepared %s: %s", out_root, ", ".join(f"{s} {n}" for s, n in info["counts"].items()))
    return info


def _remove_stale(out_root: str, listed: set) -> None:
    """Delete what an earlier run left that this run does not list: the list of a split it has no samples in, and the
    prepared files of samples it does not name (moved to another split, or dropped), so the layout holds exactly
    what the lists name. Only the files this module writes are touched."""
    splits = {split for split, _ in listed}
    removed = 0
    for split in splits | {"train", "val", "valid", "test"}:
        stale = os.path.join(out_root, f"{split}_list.txt")
        if split not in splits and os.path.isfile(stale):
            logger.warning("removing '%s': this run has no split '%s'", stale, split)
            os.remove(stale)
        for kind, ext in {**OUTPUT_KINDS, "landmarks": ".txt"}.items():
            folder = os.path.join(out_root, split, kind)
            if not os.path.isdir(folder):
                continue
            for fn in os.listdir(folder):
                name, e = os.path.splitext(fn)
                if e == ext and (split, name) not in listed:
                    os.remove(os.path.join(folder, fn))
                    removed += 1
    if removed:
        logger.info("removed %d prepared files of samples no longer listed", removed)


def make_parser(description: str) -> argparse.ArgumentParser:
    """The arguments every prepare CLI shares: RAW, OUT, --workers, --no-progress."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("raw", help="the dataset's folder as downloaded (see data/README.md)")
    p.add_argument("out", help="prepared root to write (resumable: rerun to finish an interrupted run)")
    p.add_argument("--workers", type=int, default=max(1, min(8, (os.cpu_count() or 2))), help="processes")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def setup_cli_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")


def guarded(fn: Callable, *args, **kwargs) -> int:
    """Run ``fn`` for a CLI: 0 on success; a :class:`PrepareError` is logged as one line and gives 1."""
    try:
        fn(*args, **kwargs)
    except PrepareError as e:
        logger.error("%s", e)
        return 1
    return 0
