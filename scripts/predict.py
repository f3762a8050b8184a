#!/usr/bin/env python
"""Parse images, folders, glob patterns and video files with a checkpoint (ours or the authors').

    python scripts/predict.py photos/ extra/*.jpg clip.mp4 --checkpoint runs/helen/best.pt --out preds [--detect]

Writes ``<out>/labels/NAME.png`` (class indices at the image's own resolution, scorable with
``scripts/evaluate.py --predictions``) and ``<out>/overlays/NAME.jpg``; video frames become ``STEM_fNNNNNN``
and ``<out>/videos/STEM.mp4`` (the overlay video; faces tracked across frames, their landmarks and the probabilities
smoothed over time by ``--smooth``).
With ``--detect``, each face found is aligned to the checkpoint's crop convention, parsed and composited back, and
``<out>/faces/NAME.json`` lists the faces (box, five landmarks, score); an image without a face gets a warning and
is counted in the summary. A folder of photos beside their label maps (``0.jpg`` and ``0.png``) parses the photos
only. An input that cannot be read is reported by name and the others are still processed; the exit status is then
1 and a summary lists every failure.
"""
from __future__ import annotations

import argparse
import glob
import logging
import os
import sys
from typing import Iterator

from _common import run_main, setup_logging

from dml_csr.files import write_image, write_json

log = logging.getLogger("predict")

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders, glob patterns, video files")
    p.add_argument("--checkpoint", required=True, help="our checkpoint, an authors' .pth file, or a registry name "
                                                       "(e.g. dml_csr_helen; see README, 'Weights by name')")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--flip", action="store_true", help="flip testing")
    p.add_argument("--scales", default="1", help="comma-separated input scales, e.g. 0.75,1,1.25")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--detect", action="store_true", help="find faces, align each to the checkpoint's crop, parse "
                                                         "it and paste its probabilities back")
    p.add_argument("--detector", default="auto", help="with --detect: auto (yuface, else YuNet, else the Haar "
                                                      "cascade), yuface, yunet, haar, a .json file of one image's "
                                                      "faces, or a folder of NAME.json files (as <out>/faces/)")
    p.add_argument("--threshold", type=float, default=None, help="with --detect: the score a face needs "
                                                                 "(default: the detector's own)")
    p.add_argument("--margin", type=float, default=0.5, help="with --detect, faces without landmarks: box growth "
                                                             "per side, fraction of size")
    p.add_argument("--every", type=int, default=1, help="videos: parse every N-th frame")
    p.add_argument("--smooth", type=float, default=0.5, help="videos: weight of the past in the moving average of "
                                                             "tracked landmarks and probabilities (0: none)")
    p.add_argument("--no-video", action="store_true", help="videos: no overlay video (<out>/videos/STEM.mp4)")
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
            files += _without_label_maps(found)
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


def _without_label_maps(files: list[str]) -> list[str]:
    """A folder's files less the PNG label maps that share a stem with a photo (``0.png`` beside ``0.jpg``)."""
    photos = {os.path.splitext(f)[0] for f in files if os.path.splitext(f)[1].lower() in {".jpg", ".jpeg"}}
    masks = [f for f in files if os.path.splitext(f)[1].lower() == ".png" and os.path.splitext(f)[0] in photos]
    if masks:
        log.info("%s: %d PNG file(s) share a stem with a JPEG photo and are taken for its label map, not parsed",
                 os.path.dirname(masks[0]), len(masks))
    return [f for f in files if f not in set(masks)]


def count_units(files: list[str], every: int) -> int:
    """How many images and selected video frames ``files`` hold (a video's frame count from its header)."""
    import cv2

    total = 0
    for path in files:
        if os.path.splitext(path)[1].lower() in VIDEO_EXTS:
            cap = cv2.VideoCapture(path)
            total += -(-int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) // every)
            cap.release()
        else:
            total += 1
    return total


EXPORTED = {".onnx": "an ONNX model", ".ts": "a TorchScript model", ".pt2": "an exported program"}


def check_checkpoint_arg(path: str) -> None:
    """Exported models hold no metadata (classes, input convention): refuse them in one line saying what to pass."""
    kind = EXPORTED.get(os.path.splitext(path)[1].lower())
    if kind:
        raise ValueError(f"--checkpoint '{path}' is {kind} (scripts/export.py writes those for deployment); pass the "
                         "checkpoint it was exported from (e.g. runs/NAME/best.pt) or a registry name")


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


def units(files: list[str], every: int, failures: list[tuple[str, str]]) -> Iterator[tuple]:
    """(input file, output stem, BGR image, the video's output stem or None) for every image and selected video
    frame; unreadable inputs go to ``failures`` and are skipped."""
    import cv2

    from dml_csr.data.imageio import imread_checked

    names = _Names()
    for path in files:
        stem = os.path.splitext(os.path.basename(path))[0]
        if os.path.splitext(path)[1].lower() in VIDEO_EXTS:
            base = names(stem)
            try:
                for i, frame in frames(path, every):
                    yield path, f"{base}_f{i:06d}", frame, base
            except ValueError as e:
                failures.append((path, str(e)))
            continue
        try:
            img = imread_checked(path, cv2.IMREAD_COLOR, ValueError, "image")
        except ValueError as e:  # missing, truncated, undecodable
            failures.append((path, str(e).replace(f"image '{path}' ", "")))
            continue
        yield path, names(stem), img, None


class _Writer:
    """Parses batches of (input, name, image) units and writes their outputs; one bad input costs only itself."""

    def __init__(self, parser, args, failures: list[tuple[str, str]]):
        self.parser, self.args, self.failures = parser, args, failures
        self.dirs = {k: os.path.join(args.out, k) for k in ("labels", "overlays", "faces")}
        for kind in ("labels",) + (() if args.no_overlay else ("overlays",)) + (("faces",) if args.detect else ()):
            os.makedirs(self.dirs[kind], exist_ok=True)
        self.done, self.faces, self.faceless, self.videos, self.video = 0, 0, [], [], None

    def _parse_one(self, image, name: str):
        if not self.args.detect:
            return self.parser(image, channel_order="BGR"), None
        faces = self._given_faces(image, name)
        if faces is None:
            faces = self.parser.detect_faces(image, "BGR")
        return self.parser.parse_faces(image, faces, channel_order="BGR"), faces

    def _given_faces(self, image, name: str):
        """The faces of ``--detector DIR/NAME.json`` (as this script writes them), or None to detect."""
        if not (self.args.detect and os.path.isdir(self.args.detector)):
            return None
        from dml_csr.photos.detection import faces_from_json

        path = os.path.join(self.args.detector, f"{name}.json")
        if not os.path.isfile(path):
            raise ValueError(f"no faces file '{path}' for it in --detector {self.args.detector}")
        return faces_from_json(path)(image)

    def _parse(self, batch) -> list:
        if not self.args.detect:
            try:
                return list(zip(self.parser([im for _, _, im, _ in batch], channel_order="BGR"), [None] * len(batch)))
            except Exception:
                if len(batch) == 1:
                    raise
        out = []
        for _, name, image, _ in batch:
            try:
                out.append(self._parse_one(image, name))
            except Exception as e:
                out.append(e)
        return out

    def flush(self, batch) -> None:
        try:
            results = self._parse(batch)
        except Exception as e:
            results = [e]
        for (src, name, im, _), res in zip(batch, results):
            if isinstance(res, Exception):
                self.failures.append((src, f"cannot be parsed: {res}"))
            else:
                self._write(src, name, im, *res)

    def frame(self, unit) -> None:
        """One video frame, in order: tracked and smoothed by the video's own VideoParser."""
        from dml_csr.photos.video import OverlayVideoWriter, VideoParser

        src, name, im, video = unit
        if self.video is None or self.video[0] != video:
            self.end_video()
            out = None
            if not self.args.no_video and not self.args.no_overlay:
                os.makedirs(os.path.join(self.args.out, "videos"), exist_ok=True)
                out = OverlayVideoWriter(os.path.join(self.args.out, "videos", f"{video}.mp4"),
                                         video_fps(src) / self.args.every)
            self.video = (video, VideoParser(self.parser, detect=self.args.detect, smooth=self.args.smooth), out)
        try:
            labels, tracked = self.video[1](im, self._given_faces(im, name))
        except Exception as e:
            self.failures.append((src, f"frame {name} cannot be parsed: {e}"))
            return
        faces = [f for _, f in tracked] if self.args.detect else None
        ov = self._write(src, name, im, labels, faces, [t for t, _ in tracked])
        if ov is not None and self.video[2] is not None:
            self.video[2].write(ov)

    def end_video(self) -> None:
        if self.video is not None and self.video[2] is not None:
            try:
                self.video[2].close()
                self.videos.append(self.video[2].path)
            except OSError as e:
                self.failures.append((self.video[2].path, str(e)))
        self.video = None

    def _write(self, src, name, im, labels, faces, tracks=None):
        """Write one unit's outputs; returns its overlay (BGR) or None."""
        import numpy as np

        ov = None
        try:
            write_image(os.path.join(self.dirs["labels"], f"{name}.png"), labels)
            if not self.args.no_overlay:
                ov = np.ascontiguousarray(self.parser.overlay(im, labels, alpha=self.args.alpha,
                                                              channel_order="BGR")[..., ::-1])
                write_image(os.path.join(self.dirs["overlays"], f"{name}.jpg"), ov)
            if faces is not None:
                found = [dict(f.to_dict(), **({"track": t} if tracks else {}))
                         for f, t in zip(faces, tracks or [None] * len(faces))]
                record = {"input": src, "height": im.shape[0], "width": im.shape[1],
                          "crop": self.parser.crop.get("kind"), "faces": found}
                write_json(os.path.join(self.dirs["faces"], f"{name}.json"), record, indent=1)
                self.faces += len(faces)
                if not faces:
                    log.warning("%s: no face found; its labels are all background", src)
                    self.faceless.append(src if name == os.path.splitext(os.path.basename(src))[0] else
                                         f"{src} ({name})")
            self.done += 1
        except (ValueError, OSError) as e:
            self.failures.append((src, str(e)))
        return ov


def video_fps(path: str) -> float:
    import cv2

    cap = cv2.VideoCapture(path)
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    cap.release()
    return float(fps)


def main(argv=None) -> int:
    setup_logging()
    args = parse_args(argv)
    from tqdm import tqdm

    from dml_csr.photos.parser import FaceParser
    from dml_csr.photos.detection import build_detector

    if args.batch_size < 1 or args.every < 1:
        raise ValueError("--batch-size and --every must be at least 1")
    if not 0 <= args.smooth < 1:
        raise ValueError(f"--smooth must be in [0, 1), got {args.smooth}")
    check_checkpoint_arg(args.checkpoint)
    scales = [float(s) for s in args.scales.split(",")]
    detector = args.detector
    if args.detect and not os.path.isdir(args.detector):
        try:  # fail now, not once per image, when the detector cannot be built here
            detector = build_detector(args.detector, args.threshold)
        except RuntimeError as e:
            raise ValueError(str(e)) from None
    elif not args.detect and (args.detector != "auto" or args.threshold is not None):
        log.warning("--detector and --threshold take effect with --detect only")
    parser = FaceParser.from_checkpoint(args.checkpoint, device=args.device, flip=args.flip, scales=scales,
                                        precision=args.precision, batch_size=args.batch_size, margin=args.margin,
                                        detector=detector)
    failures: list[tuple[str, str]] = []
    files = expand_inputs(args.inputs, failures)
    total = count_units(files, args.every)
    if args.detect and args.detector.endswith(".json") and total > 1:
        raise ValueError(f"--detector {args.detector}: a faces file describes one image, and {total} are given; pass "
                         "a folder of NAME.json files (as <out>/faces/ holds) to give each image its own")
    writer = _Writer(parser, args, failures)
    bar = tqdm(desc="parsing", unit="img", total=total, disable=args.no_progress,
               file=sys.stderr)
    batch = []
    for unit in units(files, args.every, failures):
        if unit[3] is not None:  # a video frame: in order, after the images before it
            if batch:
                writer.flush(batch)
                bar.update(len(batch))
                batch = []
            writer.frame(unit)
            bar.update(1)
            continue
        writer.end_video()
        batch.append(unit)
        if len(batch) == args.batch_size:
            writer.flush(batch)
            bar.update(len(batch))
            batch = []
    if batch:
        writer.flush(batch)
        bar.update(len(batch))
    writer.end_video()
    bar.close()
    found = f", {writer.faces} face(s) found" if args.detect else ""
    print(f"parsed {writer.done} image(s) and video frame(s) into '{args.out}'{found}")
    for path in writer.videos:
        print(f"overlay video: {path}")
    if writer.faceless:
        print(f"no face found in {len(writer.faceless)} image(s): {', '.join(writer.faceless[:10])}"
              + (" ..." if len(writer.faceless) > 10 else ""))
    if failures:
        print(f"{len(failures)} input(s) failed:", file=sys.stderr)
        for src, why in failures:
            print(f"  {src}: {why}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    run_main(main)
