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
- a JSON file of faces (:func:`dml_csr.photos.faces.faces_from_json`): boxes or landmarks the user already has.

Landmarks are in :data:`dml_csr.conventions.KEYPOINTS` order (the subject's left eye first, on the image's right);
both YuNet flavours list the image-left eye first, so their points are reordered.
"""
from __future__ import annotations

import logging
import os
from typing import Optional

import cv2
import numpy as np

from ..conventions import KEYPOINTS_MIRRORED
from .faces import Detector, Face, faces_from_json

__all__ = ["Detector", "DETECTORS", "build_detector", "yuface_detector", "yunet_detector", "haar_detector",
           "any_rotation", "plausible", "CONFIDENT"]

log = logging.getLogger(__name__)

_YUNET_ORDER = list(KEYPOINTS_MIRRORED)  # YuNet: image-left eye, image-right eye, nose, image-left mouth, ...
_YUFACE_MAX_SIDE = 960  # yuface warns that detection degrades past this; larger images are detected downscaled


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


DETECTORS = {"yuface": yuface_detector, "yunet": yunet_detector, "haar": haar_detector}


def build_detector(name: str = "auto", threshold: Optional[float] = None, rotations: bool = True) -> Detector:
    """A detector by name: ``auto`` (the first of yuface, yunet, haar that can be built here), one of
    :data:`DETECTORS`, or a JSON file of given faces. ``threshold`` is the score a face needs (not for haar).
    ``rotations``: a named detector also looks at the photo turned by 90, 180 and 270 degrees when it finds no
    confident face upright (:func:`any_rotation`); given faces are used as they are."""
    if name not in DETECTORS and name != "auto":
        if name.endswith(".json"):
            if not os.path.isfile(name):
                raise ValueError(f"faces file '{name}' does not exist")
            return faces_from_json(name)
        raise ValueError(f"detector '{name}' is unknown; expected auto, {', '.join(DETECTORS)} or a .json file of faces")
    det = _named_detector(name, {} if threshold is None else {"threshold": float(threshold)})
    return any_rotation(det) if rotations else det


def _named_detector(name: str, kwargs: dict) -> Detector:
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


CONFIDENT = 0.9  # a face that scores this upright is taken as it is: no turned photo is tried


def any_rotation(detect: Detector, confident: float = CONFIDENT) -> Detector:
    """``detect`` made to find faces at any multiple of 90 degrees: when the photo as it is yields no plausible face
    scoring ``confident`` or more, the photo turned by 90, 180 and 270 degrees is searched too, and the turn whose
    best plausible face scores highest wins (the detectors are trained on upright faces: a turned face scores
    lower than the same face upright, and its landmarks are often placed as if it were upright, on the hair or the
    forehead). Faces and landmarks are mapped back onto the photo. Faces whose landmarks cannot be a face
    (:func:`plausible`) are dropped. Costs up to four detections on photos without a confident upright face."""
    def run(image: np.ndarray) -> list[Face]:
        best: tuple[float, list[Face]] = (-1.0, [])
        for k in range(4):
            if k and best[0] >= confident:
                break
            turned = image if k == 0 else np.ascontiguousarray(np.rot90(image, k))
            found = [f for f in (_turn_back(f, k, image.shape) for f in detect(turned)) if plausible(f)]
            top = max((f.score for f in found), default=-1.0)
            if top > best[0]:
                best = (top, found)
        return best[1]

    return run


def _turn_back(face: Face, k: int, shape: tuple) -> Face:
    """A face found in ``np.rot90(image, k)`` in the coordinates of ``image`` (of ``shape``)."""
    if k == 0:
        return face
    h, w = shape[:2]
    # np.rot90 by k quarter turns counter-clockwise sends image pixel (x, y) to (y, w-1-x), (w-1-x, h-1-y) and
    # (h-1-y, x) for k = 1, 2, 3; these are the way back
    back = {1: lambda x, y: (w - 1 - y, x), 2: lambda x, y: (w - 1 - x, h - 1 - y), 3: lambda x, y: (y, h - 1 - x)}[k]
    x, y, bw, bh = face.box
    corners = np.array([back(x, y), back(x + bw - 1, y + bh - 1)])
    x0, y0 = corners.min(0)
    x1, y1 = corners.max(0) + 1
    points = None if face.points is None else np.array([back(px, py) for px, py in face.points], np.float32)
    return Face((float(x0), float(y0), float(x1 - x0), float(y1 - y0)), points, face.score)


def plausible(face: Face) -> bool:
    """Whether five landmarks can be a face: in the frame of the eyes (subject's right eye -> left eye), the mouth
    lies below them at 0.4 to 2.5 eye distances, the nose between the eyes' line and the mouth's, and the mouth is
    0.3 to 2.5 eye distances wide; a box without landmarks is kept."""
    if face.points is None:
        return True
    right_eye_to_left = face.points[0] - face.points[1]
    eyes = float(np.hypot(*right_eye_to_left))
    if eyes < 2.0:
        return False
    down = np.array([-right_eye_to_left[1], right_eye_to_left[0]]) / eyes  # the eye axis turned clockwise on screen
    centre = (face.points[0] + face.points[1]) / 2
    mouth = float(((face.points[3] + face.points[4]) / 2 - centre) @ down)
    nose = float((face.points[2] - centre) @ down)
    width = float(np.hypot(*(face.points[3] - face.points[4])))
    return 0.4 * eyes <= mouth <= 2.5 * eyes and 0.0 < nose < mouth * 1.2 and 0.3 * eyes <= width <= 2.5 * eyes
