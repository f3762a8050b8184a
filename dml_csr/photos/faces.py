"""Faces: a box, five landmarks and a score; faces given by the user (boxes, dicts, a JSON file) and the JSON record
predict.py writes beside each output, read back by ``--detector DIR``.

Landmarks are in :data:`dml_csr.conventions.KEYPOINTS` order (the subject's left eye first, on the image's right).
The JSON record of one image::

    {"input": "photo.jpg", "height": H, "width": W, "crop": "template" | "whole_image",
     "faces": [{"box": [x, y, w, h], "score": s, "landmarks": {"subject_left_eye": [x, y], ...}, "track": id}, ...]}

(``track`` for video frames only.) :func:`faces_from_json` reads that record, or a bare list of faces.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from ..conventions import KEYPOINTS, KEYPOINTS_MIRRORED
from ..files import write_json

__all__ = ["Face", "Detector", "as_faces", "given_faces", "faces_from_json", "faces_record", "write_faces"]


@dataclass(frozen=True, eq=False)
class Face:
    """One detected face: ``box`` (x, y, w, h) in pixels, ``points`` (5, 2) float32 in KEYPOINTS order or None
    (read-only), ``score`` in [0, 1]."""

    box: tuple[float, float, float, float]
    points: Optional[np.ndarray] = None
    score: float = 1.0

    def __post_init__(self) -> None:
        if self.points is not None:
            pts = np.array(self.points, np.float32).reshape(5, 2)
            pts.setflags(write=False)
            object.__setattr__(self, "points", pts)

    def to_dict(self) -> dict:
        out = {"box": [round(float(v), 2) for v in self.box], "score": round(float(self.score), 4)}
        if self.points is not None:
            out["landmarks"] = {k: [round(float(x), 2), round(float(y), 2)] for k, (x, y) in zip(KEYPOINTS, self.points)}
        return out


Detector = Callable[[np.ndarray], list[Face]]  # (H, W, 3) uint8 BGR -> faces


def _face(box: Sequence[float], points: Optional[Sequence] = None, score: float = 1.0, where: str = "face") -> Face:
    try:
        box = tuple(float(v) for v in box)
        pts = np.asarray(points, np.float32) if points is not None and np.size(points) else None
        score = float(score)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: expected a box of 4 numbers (x, y, width, height), optional landmarks of 5 "
                         f"[x, y] numbers and a numeric score; got box {box!r}, landmarks {points!r}") from None
    if len(box) != 4 or box[2] <= 0 or box[3] <= 0 or not np.isfinite(box).all():
        raise ValueError(f"{where}: box {list(box)} is not (x, y, width, height) with a positive width and height")
    if pts is not None:
        if pts.size != 10 or not np.isfinite(pts).all():
            raise ValueError(f"{where}: landmarks have {pts.size} numbers; expected 5 (x, y) points in the order "
                             f"{', '.join(KEYPOINTS)}")
        pts = pts.reshape(5, 2)
        if _mirrored(pts):
            raise ValueError(f"{where}: landmarks are mirrored (the first eye is on the image's left of the second); "
                             f"expected the order {', '.join(KEYPOINTS)}, the subject's left eye first (on the image's "
                             f"right); YuNet, insightface and dlib list the image-left eye first: reorder them "
                             f"{list(KEYPOINTS_MIRRORED)}")
    return Face(box, pts, score)


def _mirrored(pts: np.ndarray) -> bool:
    """Whether five points are in the mirrored order: in our order the eye-to-eye vector (subject's right to left)
    turns clockwise on screen (y down) into the eyes-to-mouth vector, whatever the face's rotation."""
    eye = pts[0] - pts[1]
    down = (pts[3] + pts[4]) / 2 - (pts[0] + pts[1]) / 2
    return float(eye[0] * down[1] - eye[1] * down[0]) < 0


def as_faces(found: Iterable) -> list[Face]:
    """Faces from what a detector returned: :class:`Face` objects, or (x, y, w, h) boxes (older detectors)."""
    return [f if isinstance(f, Face) else _face(f, where="detector output") for f in found]


def given_faces(faces: Sequence) -> Detector:
    """A detector that returns the faces the user gives: :class:`Face` objects, (x, y, w, h) boxes, or dicts with
    ``box`` and optional ``landmarks`` (5 [x, y] pairs, or a dict by KEYPOINTS name) and ``score``."""
    parsed = [_parse_given(f, f"face {i}") for i, f in enumerate(faces)]
    return lambda image: list(parsed)


def _parse_given(f, where: str) -> Face:
    if isinstance(f, Face):
        return f
    if not isinstance(f, dict):
        return _face(f, where=where)
    if "box" not in f:
        raise ValueError(f"{where}: has no 'box' (x, y, width, height)")
    pts = f.get("landmarks")
    if isinstance(pts, dict):
        missing = [k for k in KEYPOINTS if k not in pts]
        if missing:
            raise ValueError(f"{where}: landmarks lack {', '.join(missing)}")
        pts = [pts[k] for k in KEYPOINTS]
    return _face(f["box"], pts, f.get("score", 1.0), where)


def faces_from_json(path: str) -> Detector:
    """``given_faces`` read from a JSON file: a list of faces, or ``{"faces": [...]}`` as predict.py writes."""
    try:
        with open(path) as fh:
            data = json.load(fh)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"faces file '{path}' cannot be read as JSON: {e}") from None
    faces = data.get("faces") if isinstance(data, dict) else data
    if not isinstance(faces, list):
        raise ValueError(f"faces file '{path}': expected a list of faces or {{\"faces\": [...]}}")
    try:
        given = given_faces(faces)
    except ValueError as e:
        raise ValueError(f"faces file '{path}': {e}") from None
    size = (data.get("height"), data.get("width")) if isinstance(data, dict) else (None, None)

    def detect(image: Optional[np.ndarray]) -> list[Face]:
        if image is not None and None not in size and tuple(image.shape[:2]) != size:
            raise ValueError(f"faces file '{path}' describes a {size[1]}x{size[0]} image; this one is "
                             f"{image.shape[1]}x{image.shape[0]}")
        return given(image)

    return detect


def faces_record(faces: Sequence[Face], image_shape: Sequence[int], source: str, crop_kind: str,
                 tracks: Optional[Sequence[int]] = None) -> dict:
    """The JSON record of one image's faces (see the module docstring); ``tracks``: each face's video track."""
    found = [dict(f.to_dict(), **({"track": t} if tracks is not None else {}))
             for f, t in zip(faces, tracks if tracks is not None else [None] * len(faces))]
    return {"input": source, "height": int(image_shape[0]), "width": int(image_shape[1]), "crop": crop_kind,
            "faces": found}


def write_faces(path: str, faces: Sequence[Face], image_shape: Sequence[int], source: str, crop_kind: str,
                tracks: Optional[Sequence[int]] = None) -> None:
    """Write :func:`faces_record` to ``path``, atomically."""
    write_json(path, faces_record(faces, image_shape, source, crop_kind, tracks), indent=1)
