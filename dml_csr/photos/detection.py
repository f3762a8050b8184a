"""Face detectors behind one small interface: an image in, faces out (box, five landmarks, score).

Usage::

    from dml_csr.photos.detection import build_detector
    detect = build_detector("auto")            # yuface, else YuNet (OpenCV), else the Haar cascade
    faces = detect(image_bgr)                  # [Face(box=(x, y, w, h), points=(5, 2) or None, score), ...]

Detectors, best first:

- ``yuface``: libfacedetection's YuNet compiled into the ``yuface`` wheel (weights inside; CPython 3.10/3.11,
  ``pip install yuface``). Boxes, 5 landmarks, scores.
- ``yunet``: the same network through OpenCV's ``cv2.FaceDetectorYN`` and the ONNX file of the weights registry
  (``yunet_2023mar``, fetched once into the cache).
- ``haar``: OpenCV's frontal-face Haar cascade. Boxes only, no landmarks: faces are then framed from the box.
- ``given_faces(...)`` / ``faces_from_json(path)``: boxes or landmarks the user already has.

Landmarks are in :data:`dml_csr.conventions.KEYPOINTS` order (the subject's left eye first, on the image's right);
both YuNet flavours list the image-left eye first, so their points are reordered.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Sequence

import cv2
import numpy as np

from ..conventions import KEYPOINTS, KEYPOINTS_MIRRORED

__all__ = ["Face", "Detector", "DETECTORS", "build_detector", "yuface_detector", "yunet_detector", "haar_detector",
           "given_faces", "faces_from_json", "as_faces"]

log = logging.getLogger(__name__)

Detector = Callable[[np.ndarray], list["Face"]]  # (H, W, 3) uint8 BGR -> faces
_YUNET_ORDER = list(KEYPOINTS_MIRRORED)  # YuNet: image-left eye, image-right eye, nose, image-left mouth, ...
_YUFACE_MAX_SIDE = 960  # yuface warns that detection degrades past this; larger images are detected downscaled


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


def yuface_detector(threshold: float = 0.5) -> Detector:
    """libfacedetection's YuNet from the ``yuface`` wheel; raises RuntimeError when it is not installed."""
    try:
        import yuface
    except ImportError:
        raise RuntimeError("detector 'yuface' needs 'pip install yuface' (CPython 3.10/3.11 wheels); or use "
                           "--detector yunet or haar") from None

    def detect(image: np.ndarray) -> list[Face]:
        h, w = image.shape[:2]
        k = min(1.0, _YUFACE_MAX_SIDE / max(h, w))
        small = image if k == 1.0 else cv2.resize(image, (max(1, round(w * k)), max(1, round(h * k))),
                                                  interpolation=cv2.INTER_AREA)
        confs, boxes, points = yuface.detect(np.ascontiguousarray(small), conf=threshold)
        return [Face(tuple(float(v) / k for v in b), p.astype(np.float32).reshape(5, 2)[_YUNET_ORDER] / k,
                     float(c) / 100.0) for c, b, p in zip(confs, boxes, points)]

    return detect


def yunet_detector(threshold: float = 0.6, model_path: Optional[str] = None, nms: float = 0.3) -> Detector:
    """YuNet through ``cv2.FaceDetectorYN``; ``model_path`` defaults to the registry's ``yunet_2023mar`` file."""
    if not hasattr(cv2, "FaceDetectorYN"):
        raise RuntimeError(f"OpenCV {cv2.__version__} has no cv2.FaceDetectorYN (needs OpenCV >= 4.8); use "
                           "--detector yuface or haar")
    if model_path is None:
        from ..hub import fetch

        model_path = fetch("yunet_2023mar")
    net = cv2.FaceDetectorYN.create(model_path, "", (320, 320), float(threshold), float(nms), 5000)

    def detect(image: np.ndarray) -> list[Face]:
        h, w = image.shape[:2]
        net.setInputSize((w, h))
        _, found = net.detect(np.ascontiguousarray(image))
        if found is None:
            return []
        return [Face(tuple(float(v) for v in r[:4]), r[4:14].astype(np.float32).reshape(5, 2)[_YUNET_ORDER],
                     float(r[14])) for r in found]

    return detect


def haar_detector(scale_factor: float = 1.1, min_neighbors: int = 5, min_size: int = 24) -> Detector:
    """OpenCV's frontal-face Haar cascade (``cv2.data.haarcascades`` in OpenCV 4.x wheels): boxes, no landmarks."""
    path = os.path.join(getattr(getattr(cv2, "data", None), "haarcascades", ""),
                        "haarcascade_frontalface_default.xml")
    if not hasattr(cv2, "CascadeClassifier") or not os.path.isfile(path):
        raise RuntimeError(f"OpenCV {cv2.__version__} ships no Haar face cascade (OpenCV 5 dropped them from the "
                           "wheels); install 'opencv-python-headless>=4.7,<5', 'pip install yuface', or pass "
                           "detector=fn(image_bgr) -> faces")
    cascade = cv2.CascadeClassifier(path)

    def detect(image: np.ndarray) -> list[Face]:
        grey = cv2.equalizeHist(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
        found = cascade.detectMultiScale(grey, scaleFactor=scale_factor, minNeighbors=min_neighbors,
                                         minSize=(min_size, min_size))
        return [Face(tuple(float(v) for v in b)) for b in found]

    return detect


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


DETECTORS = {"yuface": yuface_detector, "yunet": yunet_detector, "haar": haar_detector}


def build_detector(name: str = "auto", threshold: Optional[float] = None) -> Detector:
    """A detector by name: ``auto`` (the first of yuface, yunet, haar that can be built here), one of
    :data:`DETECTORS`, or a JSON file of given faces. ``threshold`` is the score a face needs (not for haar)."""
    if name not in DETECTORS and name != "auto":
        if name.endswith(".json"):
            if not os.path.isfile(name):
                raise ValueError(f"faces file '{name}' does not exist")
            return faces_from_json(name)
        raise ValueError(f"detector '{name}' is unknown; expected auto, {', '.join(DETECTORS)} or a .json file of faces")
    kwargs = {} if threshold is None else {"threshold": float(threshold)}
    if name == "haar":
        return haar_detector()
    if name != "auto":
        return DETECTORS[name](**kwargs)
    reasons = []
    for candidate in ("yuface", "yunet"):
        try:
            det = DETECTORS[candidate](**kwargs)
            log.info("face detector: %s", candidate)
            return det
        except Exception as e:  # not installed, no OpenCV support, weights not cached and offline
            reasons.append(f"{candidate}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
    log.warning("no landmark detector available (%s); using the Haar cascade, which finds boxes only",
                "; ".join(reasons))
    return haar_detector()
