"""Parsing many inputs into files: images, folders, glob patterns and videos (``scripts/predict.py``).

Writes ``<out>/labels/NAME.png`` (class indices at the image's own resolution, scorable with ``evaluate.py
--predictions``), ``<out>/overlays/NAME.jpg``, with edge maps ``<out>/edges/NAME_{binary,category,category_color}.png``,
with faces ``<out>/faces/NAME.json`` (:mod:`dml_csr.photos.faces`),
and for a video its frames as ``STEM_fNNNNNN`` and ``<out>/videos/STEM.mp4``. Each input stands alone: one that
cannot be read, parsed or written is recorded in :attr:`Summary.failures` with the reason and the others go on.
"""
from __future__ import annotations

import glob
import logging
import os
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import cv2
import numpy as np

from ..data.imageio import imread_checked
from ..files import write_image
from .faces import faces_from_json, write_faces
from .pipeline import Parse
from .video import OverlayVideoWriter, VideoParser, frame_count, read_frames, video_fps

__all__ = ["Options", "Summary", "expand_inputs", "count_units", "check_checkpoint_arg", "run", "IMAGE_EXTS",
           "VIDEO_EXTS"]

log = logging.getLogger(__name__)

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"}
VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}


@dataclass
class Options:
    """What to parse and write: see ``scripts/predict.py --help``. ``faces_dir``: a folder of ``NAME.json`` faces
    files that replace detection (as ``<out>/faces/`` holds); ``edges``: ``image_bgr -> (binary, category)`` edge
    maps to write beside the labels (:class:`dml_csr.photos.figures.EdgeMaps`)."""
    out: str
    detect: bool = False
    faces_dir: Optional[str] = None
    batch_size: int = 8
    every: int = 1
    smooth: float = 0.5
    video: bool = True
    overlay: bool = True
    alpha: float = 0.6
    edges: Optional[Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]] = None


@dataclass
class Summary:
    """What a :func:`run` did: units written, faces found, images without a face, videos, and every failure."""
    done: int = 0
    faces: int = 0
    faceless: list[str] = field(default_factory=list)
    videos: list[str] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)


def check_checkpoint_arg(path: str) -> None:
    """An exported model runs when it carries our metadata (an ONNX or OpenVINO file of ``scripts/export.py``:
    classes, input convention); any other exported file is refused in one line saying what to pass."""
    from ..checkpoint import EXPORTED_KINDS
    from ..models.weights import first_line
    from .runtime import is_exported, read_meta

    kind = EXPORTED_KINDS.get(os.path.splitext(path)[1].lower())
    if not kind:
        return
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--checkpoint '{path}' does not exist")
    weights = os.path.splitext(path)[0] + ".bin"
    if path.lower().endswith(".xml") and not os.path.isfile(weights):
        raise FileNotFoundError(f"--checkpoint '{path}' is an OpenVINO model without its weights: '{weights}' is "
                                f"missing (scripts/export.py writes the .xml and the .bin beside it)")
    reason = "" if is_exported(path) else "without dml_csr metadata"
    if not reason:
        try:
            read_meta(path)
        except ImportError:  # loading it says which package is missing
            pass
        except Exception as e:  # unreadable, truncated, not ours
            reason = f"that cannot be read as one of scripts/export.py's ({first_line(e)})"
    if reason:
        raise ValueError(f"--checkpoint '{path}' is {kind} {reason}; the ONNX and OpenVINO files of scripts/export.py "
                         f"carry the classes and input convention and run as they are; else pass the checkpoint it "
                         f"was exported from (e.g. runs/NAME/best.pt) or a registry name")


def expand_inputs(inputs: list[str], failures: list[tuple[str, str]]) -> list[str]:
    """Files named by ``inputs`` (folders: their image and video files, sorted; patterns: their matches).
    Inputs naming nothing are appended to ``failures``. A folder's entry with an image or video extension that is
    not a folder is kept even when it cannot be read (a broken link, a symbolic link loop): reading it names it."""
    files: list[str] = []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(os.path.join(item, f) for f in os.listdir(item)
                           if os.path.splitext(f)[1].lower() in IMAGE_EXTS | VIDEO_EXTS
                           and not os.path.isdir(os.path.join(item, f)))
            if not found:
                failures.append((item, "folder holds no image or video file"))
            files += _without_label_maps(found)
        elif os.path.lexists(item):
            files.append(item)
        elif glob.has_magic(item):
            found = sorted(f for f in glob.glob(item, recursive=True) if not os.path.isdir(f))
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


def _is_video(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in VIDEO_EXTS


def count_units(files: list[str], every: int) -> int:
    """How many images and selected video frames ``files`` hold (a video's frame count from its header; one for a
    video that cannot be read, which then fails by itself)."""
    return sum(frame_count(p, every) if _is_video(p) and os.path.isfile(p) else 1 for p in files)


def _units(files: list[str], every: int, failures: list[tuple[str, str]]) -> Iterator[tuple]:
    """(input file, output stem, BGR image, the video's output stem or None) for every image and selected video
    frame; unreadable inputs go to ``failures`` and are skipped. Stems are unique: a second ``face.jpg`` from
    another folder becomes ``face_1``."""
    used: set[str] = set()

    def unique(stem: str) -> str:
        name, k = stem, 1
        while name in used:
            name, k = f"{stem}_{k}", k + 1
        used.add(name)
        return name

    for path in files:
        stem = os.path.splitext(os.path.basename(path))[0]
        if _is_video(path):
            base = unique(stem)
            try:
                for i, frame in read_frames(path, every):
                    yield path, f"{base}_f{i:06d}", frame, base
            except ValueError as e:
                failures.append((path, str(e)))
            continue
        try:
            img = imread_checked(path, cv2.IMREAD_COLOR, ValueError, "image")
        except ValueError as e:  # missing, empty, a link loop, over a limit, truncated, undecodable
            failures.append((path, str(e).replace(f"image '{path}' ", "")))
            continue
        yield path, unique(stem), img, None


def run(parser, files: list[str], opts: Options, progress: Callable[[int], object] = lambda n: None,
        failures: Optional[list[tuple[str, str]]] = None) -> Summary:
    """Parse every file (:func:`expand_inputs`) with ``parser`` (a :class:`~dml_csr.photos.parser.FaceParser`) and
    write its outputs under ``opts.out``; ``progress(n)`` is called after each ``n`` units. Images go
    ``opts.batch_size`` at a time, video frames one by one, in order, through a
    :class:`~dml_csr.photos.video.VideoParser` per video. ``failures`` (e.g. of :func:`expand_inputs`) start the
    summary's list."""
    summary = Summary(failures=list(failures or []))
    job = _Job(parser, opts, summary)
    batch: list[tuple] = []
    for unit in _units(files, opts.every, summary.failures):
        if unit[3] is None:
            job.end_video()
            batch.append(unit)
        if batch and (unit[3] is not None or len(batch) == opts.batch_size):
            job.images(batch)  # a video frame comes after the images before it
            progress(len(batch))
            batch = []
        if unit[3] is not None:
            job.frame(unit)
            progress(1)
    if batch:
        job.images(batch)
        progress(len(batch))
    job.end_video()
    return summary


class _Job:
    """Parses units (:meth:`images` in batches, :meth:`frame` one by one) and hands each result to its
    :class:`_Outputs`."""

    def __init__(self, parser, opts: Options, summary: Summary):
        self.parser, self.opts, self.summary = parser, opts, summary
        self.outputs = _Outputs(parser, opts, summary)
        self.video: Optional[tuple[str, VideoParser]] = None

    def _given_faces(self, image: np.ndarray, name: str) -> Optional[list]:
        """With detection, the faces of ``faces_dir/NAME.json`` (as :mod:`dml_csr.photos.faces` writes them), or
        None to detect."""
        if not self.opts.detect or self.opts.faces_dir is None:
            return None
        path = os.path.join(self.opts.faces_dir, f"{name}.json")
        if not os.path.isfile(path):
            raise ValueError(f"no faces file '{path}' for it in --detector {self.opts.faces_dir}")
        return faces_from_json(path)(image)

    def _parse_each(self, batch: list[tuple]) -> list:
        """Each unit's :class:`Parse`, or the exception that stopped it."""
        if not self.opts.detect:
            try:
                return [Parse(labels) for labels in self.parser([im for _, _, im, _ in batch], channel_order="BGR")]
            except Exception:
                if len(batch) == 1:
                    raise  # else one at a time, so that one bad input costs only itself
        out = []
        for _, name, image, _ in batch:
            try:
                out.append(self.parser.parse(image, channel_order="BGR", detect=self.opts.detect,
                                             faces=self._given_faces(image, name)))
            except Exception as e:
                out.append(e)
        return out

    def images(self, batch: list[tuple]) -> None:
        try:
            results = self._parse_each(batch)
        except Exception as e:
            results = [e]
        for (src, name, image, _), res in zip(batch, results):
            if isinstance(res, Exception):
                self.summary.failures.append((src, f"cannot be parsed: {res}"))
            else:
                self.outputs.write(src, name, image, res.labels, res.faces)

    def frame(self, unit: tuple) -> None:
        """One video frame, in order: tracked and smoothed by the video's own VideoParser."""
        src, name, image, video = unit
        if self.video is None or self.video[0] != video:
            self.end_video()
            self.video = (video, VideoParser(self.parser, detect=self.opts.detect, smooth=self.opts.smooth))
            self.outputs.start_video(src, video)
        try:
            labels, tracked = self.video[1](image, self._given_faces(image, name))
        except Exception as e:
            self.summary.failures.append((src, f"frame {name} cannot be parsed: {e}"))
            return
        faces = [f for _, f in tracked] if self.opts.detect else None
        self.outputs.write(src, name, image, labels, faces, [t for t, _ in tracked])

    def end_video(self) -> None:
        if self.video is not None:
            self.outputs.end_video()
        self.video = None


class _Outputs:
    """Writes each unit's files (label PNG, overlay JPEG, faces JSON) and a video's overlay video; a file that
    cannot be written is a failure of its unit."""

    def __init__(self, parser, opts: Options, summary: Summary):
        self.parser, self.opts, self.summary = parser, opts, summary
        self.video: Optional[OverlayVideoWriter] = None
        kinds = ("labels",) + (("overlays",) if opts.overlay else ()) + (("faces",) if opts.detect else ())
        for kind in kinds + (("edges",) if opts.edges is not None else ()):
            os.makedirs(os.path.join(opts.out, kind), exist_ok=True)

    def start_video(self, src: str, stem: str) -> None:
        if self.opts.video and self.opts.overlay:
            self.video = OverlayVideoWriter(os.path.join(self.opts.out, "videos", f"{stem}.mp4"),
                                            video_fps(src) / self.opts.every)

    def end_video(self) -> None:
        if self.video is not None:
            try:
                self.video.close()
                self.summary.videos.append(self.video.path)
            except OSError as e:
                self.summary.failures.append((self.video.path, str(e)))
        self.video = None

    def write(self, src: str, name: str, image: np.ndarray, labels: np.ndarray, faces: Optional[list],
              tracks: Optional[list] = None) -> None:
        out, ov, s = self.opts.out, None, self.summary
        try:
            write_image(os.path.join(out, "labels", f"{name}.png"), labels)
            if self.opts.edges is not None:
                self._edges(name, image)
            if self.opts.overlay:
                ov = np.ascontiguousarray(self.parser.overlay(image, labels, alpha=self.opts.alpha,
                                                              channel_order="BGR")[..., ::-1])
                write_image(os.path.join(out, "overlays", f"{name}.jpg"), ov)
            if faces is not None:
                write_faces(os.path.join(out, "faces", f"{name}.json"), faces, image.shape, src,
                            self.parser.crop.get("kind"), tracks or None)
                s.faces += len(faces)
                if not faces:
                    log.warning("%s: no face found; its labels are all background", src)
                    own = name == os.path.splitext(os.path.basename(src))[0]
                    s.faceless.append(src if own else f"{src} ({name})")
            s.done += 1
        except (ValueError, OSError) as e:
            s.failures.append((src, str(e)))
        if ov is not None and self.video is not None:  # the video keeps the frame whose own files failed
            self.video.write(ov)

    def _edges(self, name: str, image: np.ndarray) -> None:
        binary, category = self.opts.edges(image)
        folder = os.path.join(self.opts.out, "edges")
        write_image(os.path.join(folder, f"{name}_binary.png"), binary)
        write_image(os.path.join(folder, f"{name}_category.png"), category)
        write_image(os.path.join(folder, f"{name}_category_color.png"),
                    np.ascontiguousarray(self.parser.colorize(category)[..., ::-1]))
