"""Video: faces tracked across frames, their landmarks and the class probabilities smoothed over time.

Usage::

    from dml_csr import FaceParser
    from dml_csr.photos.video import VideoParser
    video = VideoParser(FaceParser.from_checkpoint("runs/demo/best.pt"), detect=True, smooth=0.5)
    for frame in frames:                       # (H, W, 3) uint8 BGR, in order
        labels, tracks = video(frame)          # labels (H, W); tracks: [(track id, Face), ...]

Each frame's faces are matched to the previous frame's tracks by box overlap (greedy, highest IoU first); a track
keeps its id while it is matched, stays at its last place through frames where the detector misses it, and ends
after ``max_missing`` frames without a match (``max_missing=0``: no bridging). A matched face's landmarks
and box are an exponential moving average, ``smooth * previous + (1 - smooth) * new``, and so are its class
probabilities, in its aligned crop (which moves with the face), before they are pasted back. ``smooth=0`` parses
every frame on its own. Without detection every frame is parsed on its own: an average over the frame's pixels
suits a fixed camera only, and on a shaking one it blurs boundaries (on the jittered still of
``scripts/benchmark_video.py``, 1.25x the flicker at 0.5).
``scripts/benchmark_video.py`` measures the flicker this removes on a jittered still.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Iterator, Optional

import cv2
import numpy as np

from . import pipeline
from .faces import Face

__all__ = ["VideoParser", "OverlayVideoWriter", "box_iou", "read_frames", "frame_count", "video_fps"]


def box_iou(a: tuple, b: tuple) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw, ih = max(0.0, min(ax1, bx1) - max(a[0], b[0])), max(0.0, min(ay1, by1) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


@dataclass
class _Track:
    id: int
    face: Face
    missing: int = 0


class VideoParser:
    """Parses the frames of one video in order, with tracking and temporal smoothing.

    Args:
        parser: a :class:`~dml_csr.photos.parser.FaceParser`.
        detect: find faces in every frame (the parser's detector), track, align and composite them; else whole
            frames, each on its own.
        smooth: the weight of the past in the moving averages of landmarks, boxes and probabilities, in [0, 1).
        iou: the box overlap a face needs to continue a track.
        max_missing: frames a track survives without a match.
    """

    def __init__(self, parser, *, detect: bool = True, smooth: float = 0.5, iou: float = 0.3, max_missing: int = 5):
        if not 0.0 <= smooth < 1.0:
            raise ValueError(f"smooth must be in [0, 1), got {smooth}")
        self.parser, self.detect, self.smooth = parser, detect, float(smooth)
        self.iou, self.max_missing = float(iou), int(max_missing)
        self.reset()

    def reset(self) -> None:
        """Forget the tracks and the running probabilities (a new video)."""
        self.tracks: list[_Track] = []
        self._next_id = 0
        self._crops: dict[int, np.ndarray] = {}  # faces: the running probabilities of each track's aligned crop

    def _ema(self, old: np.ndarray, new: np.ndarray) -> np.ndarray:
        return self.smooth * old + (1.0 - self.smooth) * new

    def _smoothed(self, old: Face, new: Face) -> Face:
        box = tuple(float(v) for v in self._ema(np.asarray(old.box), np.asarray(new.box)))
        points = new.points
        if old.points is not None and new.points is not None:
            points = self._ema(old.points, new.points).astype(np.float32)
        return replace(new, box=box, points=points)

    def update_tracks(self, faces: list[Face]) -> list[tuple[int, Face]]:
        """Match ``faces`` to the tracks; returns (track id, smoothed face) for each face, in the given order, then
        the tracks missed in this frame but not yet ended, at their last place (a detector's dropout is bridged)."""
        pairs = sorted(((box_iou(t.face.box, f.box), ti, fi) for ti, t in enumerate(self.tracks)
                        for fi, f in enumerate(faces)), reverse=True)
        used_t, used_f, out = set(), set(), [None] * len(faces)
        for overlap, ti, fi in pairs:
            if overlap < self.iou or ti in used_t or fi in used_f:
                continue
            used_t.add(ti)
            used_f.add(fi)
            track = self.tracks[ti]
            track.face, track.missing = self._smoothed(track.face, faces[fi]), 0
            out[fi] = (track.id, track.face)
        for ti, track in enumerate(self.tracks):
            if ti not in used_t:
                track.missing += 1
        self.tracks = [t for t in self.tracks if t.missing <= self.max_missing]
        coasting = [(t.id, t.face) for t in self.tracks if t.missing > 0]
        for fi, face in enumerate(faces):
            if fi not in used_f:
                self.tracks.append(_Track(self._next_id, face))
                out[fi] = (self._next_id, face)
                self._next_id += 1
        return out + coasting

    def __call__(self, frame: np.ndarray, faces: Optional[list] = None) -> tuple[np.ndarray, list[tuple[int, Face]]]:
        """Labels (H, W) uint8 of one BGR frame and its tracked faces; ``faces`` (given for this frame) replace the
        detector's."""
        p = self.parser
        if not self.detect:
            return pipeline.parse_whole(p.predictor, [frame], p.paste)[0].labels, []
        found = p.detect_faces(frame, "BGR") if faces is None else list(faces)
        tracked = self.update_tracks(found)
        input_size = p.transform.input_size
        affines = pipeline.face_affines([f for _, f in tracked], p.crop, input_size, p.margin)
        crops = [probs.cpu().numpy() for probs, _ in p.predictor.predict([frame] * len(affines), affines)]
        # each face's probabilities are averaged in its own aligned crop, which follows the face: the average
        # does not smear a moving face or a shaking camera, as an average over the frame's pixels would
        live = {t.id for t in self.tracks}
        self._crops = {tid: c for tid, c in self._crops.items() if tid in live}
        for i, ((tid, _), c) in enumerate(zip(tracked, crops)):
            if tid in self._crops and self.smooth > 0:
                crops[i] = self._ema(self._crops[tid], c).astype(np.float32)
            self._crops[tid] = crops[i]
        return pipeline.paste_faces(frame.shape[:2], affines, crops, p.num_classes, input_size,
                                    tanh_warp=p.transform.tanh_warp)[0], tracked


class OverlayVideoWriter:
    """Frames into ``path`` (an .mp4, OpenCV's mp4v codec), written to a temporary file beside it and moved into
    place by :meth:`close`: a stopped run leaves no half video under the final name."""

    def __init__(self, path: str, fps: float):
        self.path, self.fps = path, float(fps) if fps and fps > 0 else 25.0
        base, ext = os.path.splitext(path)
        self.tmp = f"{base}.partial{ext}"
        self._writer, self.frames = None, 0

    def write(self, frame_bgr: np.ndarray) -> None:
        if self._writer is None:
            h, w = frame_bgr.shape[:2]
            os.makedirs(os.path.dirname(os.path.abspath(self.tmp)), exist_ok=True)
            self._writer = cv2.VideoWriter(self.tmp, cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
            if not self._writer.isOpened():
                raise OSError(f"cannot write video '{self.tmp}' (no mp4v encoder in this OpenCV build?)")
            self.size = (h, w)
        if frame_bgr.shape[:2] != self.size:
            frame_bgr = cv2.resize(frame_bgr, self.size[::-1])
        self._writer.write(np.ascontiguousarray(frame_bgr))
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
            os.replace(self.tmp, self.path)


def read_frames(path: str, every: int = 1) -> Iterator[tuple[int, np.ndarray]]:
    """(frame index, BGR frame) of every ``every``-th frame of a video; raises ValueError when OpenCV cannot open it,
    or, after the frames it could read, when the video ends before the frame count its header states (a truncated
    file)."""
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


def frame_count(path: str, every: int = 1) -> int:
    """How many of a video's frames :func:`read_frames` selects, by the frame count its header states."""
    cap = cv2.VideoCapture(path)
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    cap.release()
    return -(-n // every)


def video_fps(path: str) -> float:
    """The frame rate a video's header states (25 when it states none)."""
    cap = cv2.VideoCapture(path)
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    cap.release()
    return float(fps)
