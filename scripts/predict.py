#!/usr/bin/env python
"""Parse images, folders, glob patterns and video files with a checkpoint (ours or the authors').

    python scripts/predict.py photos/ extra/*.jpg clip.mp4 --checkpoint runs/helen/best.pt --out preds [--detect]

Writes ``<out>/labels/NAME.png`` (class indices at the image's own resolution, scorable with
``scripts/evaluate.py --predictions``) and ``<out>/overlays/NAME.jpg``; video frames become ``STEM_fNNNNNN``.
An input that cannot be read is reported by name and the others are still processed; the exit status is then 1 and
a summary lists every failure.
"""
from __future__ import annotations

import argparse
import glob
import logging
import os
import sys
from typing import Iterator

from _common import run_main, setup_logging, write_image

log = logging.getLogger("predict")

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders, glob patterns, video files")
    p.add_argument("--checkpoint", required=True, help="our checkpoint or an authors' .pth file")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--flip", action="store_true", help="flip testing")
    p.add_argument("--scales", default="1", help="comma-separated input scales, e.g. 0.75,1,1.25")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--detect", action="store_true", help="find faces (OpenCV Haar cascade), parse a crop around "
                                                         "each and paste the labels back")
    p.add_argument("--margin", type=float, default=0.5, help="with --detect: box growth per side, fraction of size")
    p.add_argument("--every", type=int, default=1, help="videos: parse every N-th frame")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity")
    p.add_argument("--no-overlay", action="store_true", help="write label PNGs only")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def expand_inputs(inputs: list[str], failures: list[tuple[str, str]]) -> list[str]:
    """Files named by ``inputs`` (folders: their image and video files, sorted; patterns: their matches).
    Inputs naming nothing are appended to ``failures``."""
    files: list[str] = []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(os.path.join(item, f) for f in os.listdir(item)
                           if os.path.splitext(f)[1].lower() in IMAGE_EXTS | VIDEO_EXTS
                           and os.path.isfile(os.path.join(item, f)))
            if not found:
                failures.append((item, "folder holds no image or video file"))
            files += found
        elif os.path.exists(item):
            files.append(item)
        elif glob.has_magic(item):
            found = sorted(f for f in glob.glob(item, recursive=True) if os.path.isfile(f))
            if not found:
                failures.append((item, "pattern matches no file"))
            files += found
        else:
            failures.append((item, "no such file or folder"))
    return files


class _Names:
    """Unique output stems: a second ``face.jpg`` from another folder becomes ``face_1``."""

    def __init__(self):
        self.used: set[str] = set()

    def __call__(self, stem: str) -> str:
        name, k = stem, 1
        while name in self.used:
            name, k = f"{stem}_{k}", k + 1
        self.used.add(name)
        return name


def frames(path: str, every: int) -> Iterator:
    """(frame index, BGR frame) of a video; raises ValueError when OpenCV cannot open it, or after the frames it could
    read when the video ends before the frame count its header states (a truncated file)."""
    import cv2

    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise ValueError("cannot be opened as a video")
    try:
        stated = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        i, n = 0, 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if i % every == 0:
                n += 1
                yield i, frame
            i += 1
        if n == 0:
            raise ValueError("video has no readable frame")
        if 0 < i < stated:
            raise ValueError(f"video ends after {i} of the {stated} frames its header states (truncated?); the "
                             f"frames read were parsed")
    finally:
        cap.release()


def units(files: list[str], every: int, failures: list[tuple[str, str]]) -> Iterator[tuple[str, str, object]]:
    """(input file, output stem, BGR image) for every image and selected video frame; unreadable inputs go to
    ``failures`` and are skipped."""
    import cv2

    from dml_csr.data.imageio import imread_checked

    names = _Names()
    for path in files:
        stem = os.path.splitext(os.path.basename(path))[0]
        if os.path.splitext(path)[1].lower() in VIDEO_EXTS:
            base = names(stem)
            try:
                for i, frame in frames(path, every):
                    yield path, f"{base}_f{i:06d}", frame
            except ValueError as e:
                failures.append((path, str(e)))
            continue
        try:
            img = imread_checked(path, cv2.IMREAD_COLOR, ValueError, "image")
        except ValueError as e:  # missing, truncated, undecodable
            failures.append((path, str(e).replace(f"image '{path}' ", "")))
            continue
        yield path, names(stem), img


def main(argv=None) -> int:
    setup_logging()
    args = parse_args(argv)
    import numpy as np
    from tqdm import tqdm

    from dml_csr.api import FaceParser
    from dml_csr.checkpoint import CheckpointError

    if args.batch_size < 1 or args.every < 1:
        raise ValueError("--batch-size and --every must be at least 1")
    scales = [float(s) for s in args.scales.split(",")]
    parser = FaceParser.from_checkpoint(args.checkpoint, device=args.device, flip=args.flip, scales=scales,
                                        precision=args.precision, batch_size=args.batch_size, margin=args.margin)
    if args.detect:
        try:  # fail now, not once per image, when this OpenCV has no detector
            parser.detect_faces(np.zeros((8, 8, 3), np.uint8), "BGR")
        except RuntimeError as e:
            raise ValueError(str(e)) from None
    failures: list[tuple[str, str]] = []
    files = expand_inputs(args.inputs, failures)
    label_dir, overlay_dir = os.path.join(args.out, "labels"), os.path.join(args.out, "overlays")
    os.makedirs(label_dir, exist_ok=True)
    if not args.no_overlay:
        os.makedirs(overlay_dir, exist_ok=True)
    done = 0
    bar = tqdm(desc="parsing", unit="img", disable=args.no_progress, file=sys.stderr)

    def parse(batch):
        """Labels per unit of the batch, or the reason it failed: one bad input does not cost the others."""
        try:
            return parser([im for _, _, im in batch], channel_order="BGR", detect=args.detect)
        except Exception:
            if len(batch) == 1:
                raise
        out = []
        for unit in batch:
            try:
                out.append(parse([unit])[0])
            except Exception as e:
                out.append(e)
        return out

    def flush(batch):
        nonlocal done
        try:
            labels = parse(batch)
        except Exception as e:
            labels = [e]
        for (src, name, im), lab in zip(batch, labels):
            if isinstance(lab, Exception):
                failures.append((src, f"cannot be parsed: {lab}"))
                continue
            try:
                write_image(os.path.join(label_dir, f"{name}.png"), lab)
                if not args.no_overlay:
                    ov = parser.overlay(im, lab, alpha=args.alpha, channel_order="BGR")
                    write_image(os.path.join(overlay_dir, f"{name}.jpg"), np.ascontiguousarray(ov[..., ::-1]))
                done += 1
            except (CheckpointError, ValueError) as e:
                failures.append((src, str(e)))
        bar.update(len(batch))

    batch = []
    for unit in units(files, args.every, failures):
        batch.append(unit)
        if len(batch) == args.batch_size:
            flush(batch)
            batch = []
    if batch:
        flush(batch)
    bar.close()
    print(f"parsed {done} image(s) into '{args.out}'")
    if failures:
        print(f"{len(failures)} input(s) failed:", file=sys.stderr)
        for src, why in failures:
            print(f"  {src}: {why}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    run_main(main)
