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

__all__ = ["Detector", "DETECTORS", "build_detector", "yuface_detector", "yunet_detector", "haar_detector"]

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
