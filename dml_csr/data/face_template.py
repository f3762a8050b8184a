"""The landmark template of a prepared dataset: where its training faces' five points fall in the network input.

``scripts/measure_template.py --root R`` (and the synthetic faces' prepare step) writes ``R/face_template.json``
from the training split: each sample's 5-point landmark file (``<split>/landmarks/NAME.txt``) where it has one,
else the face the detector finds in its image (the largest, for images with several). Training records it in every
checkpoint's ``meta["crop"]``, so that a parser aligns a detected face to the framing the model was trained on
(:mod:`dml_csr.photos.alignment`).
"""
from __future__ import annotations

import json
import logging
import os
from typing import Callable, Optional, Sequence

import cv2
import numpy as np

from ..conventions import INPUT_SIZE
from ..files import write_json
from .dataset import BadSampleError, evenly_spaced, read_keypoints, read_landmark_file, read_split_list
from .imageio import image_size
from .transforms import box_to_center_scale, get_affine_transform

__all__ = ["TEMPLATE_FILE", "WHOLE_IMAGE", "check_crop", "landmarks_in_input", "measure_template", "measure_split",
           "similarity_transform", "template_points", "read_five_points", "LAPA_FIVE",
           "write_template", "read_template", "crop_for_training"]

log = logging.getLogger(__name__)

TEMPLATE_FILE = "face_template.json"
WHOLE_IMAGE = {"kind": "whole_image"}


def check_crop(crop: Optional[dict], where: str = "meta['crop']") -> dict:
    """A crop convention, validated; None means the whole-image convention."""
    if not crop:
        return dict(WHOLE_IMAGE)
    if not isinstance(crop, dict):
        raise ValueError(f"{where}: expected an object with a 'kind', got {type(crop).__name__}")
    kind = crop.get("kind")
    if kind == "whole_image":
        return dict(crop)
    if kind != "template":
        raise ValueError(f"{where}: kind {kind!r} is unknown; expected 'template' or 'whole_image'")
    pts = np.asarray(crop.get("points", []), np.float64)
    if pts.shape != (5, 2) or not np.isfinite(pts).all():
        raise ValueError(f"{where}: 'points' must be 5 [x, y] fractions of the input; got shape {pts.shape}")
    size = crop.get("input_size", [1, 1])
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        raise ValueError(f"{where}: 'input_size' must be [height, width] in pixels; got {size!r}")
    return dict(crop)


def landmarks_in_input(points: np.ndarray, image_size: Sequence[int], input_size: Sequence[int]) -> np.ndarray:
    """(5, 2) image landmarks -> network input pixels by the whole-image crop that training and evaluation use."""
    center, scale = box_to_center_scale(int(image_size[0]), int(image_size[1]), input_size)
    m = get_affine_transform(center, scale, 0.0, input_size)
    return np.asarray(points, np.float64) @ m[:, :2].T + m[:, 2]


def measure_template(points: np.ndarray, input_size: Sequence[int], source: str = "") -> dict:
    """The crop convention from training landmarks already in input pixels, (N, 5, 2): their mean, as fractions of
    the input, with the mean distance of a face's points from it (``spread_px``)."""
    pts = np.asarray(points, np.float64)
    if pts.ndim != 3 or pts.shape[1:] != (5, 2) or len(pts) == 0:
        raise ValueError(f"measure_template needs (N, 5, 2) landmarks with N >= 1; got shape {pts.shape}")
    mean = pts.mean(0)
    spread = float(np.linalg.norm(pts - mean, axis=2).mean())
    frac = mean / [input_size[1], input_size[0]]
    return {"kind": "template", "points": np.round(frac, 6).tolist(), "input_size": [int(v) for v in input_size],
            "faces": int(len(pts)), "spread_px": round(spread, 3), "source": source}




def _five_points(path: str) -> Optional[np.ndarray]:
    """A landmark file's 5 points, or None when there is no file or it holds another scheme (LaPa's 106)."""
    try:
        return read_keypoints(path)
    except BadSampleError:
        return None


def _size(image_path: str) -> Optional[tuple[int, int]]:
    """(height, width) from the image file's header, None when it is unreadable there (then it is decoded)."""
    try:
        with open(image_path, "rb") as f:
            wh = image_size(f.read())
    except OSError:
        return None
    return None if wh is None else (wh[1], wh[0])


def measure_split(root: str, split: str = "train", input_size: Sequence[int] = INPUT_SIZE,
                  detector: Optional[Callable] = None, limit: int = 2000) -> dict:
    """The crop convention of ``split``: the mean of up to ``limit`` faces' landmarks (evenly spaced samples) in
    the input of ``input_size`` after the whole-image crop. Samples without a 5-point file need ``detector``
    (``image_bgr -> faces``); samples where neither gives landmarks are skipped."""
    items = read_split_list(root, split)
    found, from_files, from_detector = [], 0, 0
    for name, image_path, _ in (items[i] for i in evenly_spaced(len(items), limit)):
        pts = _five_points(os.path.join(os.path.dirname(os.path.dirname(image_path)), "landmarks", f"{name}.txt"))
        from_file = pts is not None
        size = _size(image_path) if from_file else None  # landmarks from a file need no decoded pixels
        if size is None:
            image = cv2.imread(image_path, cv2.IMREAD_COLOR)
            if image is None:
                continue
            size = image.shape[:2]
            if not from_file and detector is not None:
                faces = [f for f in detector(image) if getattr(f, "points", None) is not None]
                if faces:
                    pts = max(faces, key=lambda f: f.box[2] * f.box[3]).points
                    from_detector += 1
        if pts is not None:
            from_files += from_file
            found.append(landmarks_in_input(pts, size, input_size))
    if not found:
        raise ValueError(f"no landmarks in split '{split}' of '{root}': no 5-point landmarks/NAME.txt files and "
                         + ("the detector found no face with landmarks" if detector else "no detector given"))
    source = f"{split} split of {os.path.basename(os.path.normpath(root))}: {from_files} landmark files, " \
             f"{from_detector} detected"
    return measure_template(np.stack(found), input_size, source)


def write_template(root: str, crop: dict) -> str:
    """Write ``crop`` as ``root/face_template.json`` (atomically); returns the path."""
    path = os.path.join(root, TEMPLATE_FILE)
    write_json(path, crop)
    return path


def read_template(root: str) -> Optional[dict]:
    """``root/face_template.json`` validated, or None when there is none."""
    path = os.path.join(root, TEMPLATE_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            return check_crop(json.load(f), path)
    except json.JSONDecodeError as e:
        raise ValueError(f"'{path}' is not valid JSON ({e}); rerun scripts/measure_template.py --root {root}") from None


def crop_for_training(root: str, input_size: Sequence[int]) -> dict:
    """The crop convention a run on ``root`` records in its checkpoints: the dataset's template when it has one
    measured at the same input aspect, else the whole-image convention."""
    crop = read_template(root)
    if crop is None or crop.get("kind") != "template":
        log.info("no %s in '%s': checkpoints record the whole-image crop (scripts/measure_template.py measures "
                 "a landmark template for aligned parsing of photos)", TEMPLATE_FILE, root)
        return dict(WHOLE_IMAGE)
    h, w = crop.get("input_size", (1, 1))
    if abs(h / w - input_size[0] / input_size[1]) > 1e-6:
        log.warning("%s was measured at input %dx%d, whose aspect differs from data.input_size %s; checkpoints "
                    "record the whole-image crop", TEMPLATE_FILE, h, w, list(input_size))
        return dict(WHOLE_IMAGE)
    return crop


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 similarity (no reflection) mapping ``src`` (N, 2) closest to ``dst`` (N, 2) in least squares."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    ms, md = src.mean(0), dst.mean(0)
    s, d = src - ms, dst - md
    var = (s ** 2).sum() / len(src)
    if var <= 1e-12:
        raise ValueError("landmarks coincide; a similarity transform needs at least two distinct points")
    u, sig, vt = np.linalg.svd(d.T @ s / len(src))
    sign = np.array([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rot = u @ np.diag(sign) @ vt
    scale = (sig * sign).sum() / var
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = md - m[:, :2] @ ms
    return m


def template_points(crop: dict, input_size: Sequence[int]) -> np.ndarray:
    """The template's five points in pixels of an input of ``input_size`` (h, w)."""
    return np.asarray(crop["points"], np.float64) * [input_size[1], input_size[0]]


# LaPa's 106 landmarks -> the five keypoints, the points FaRL aligns LaPa faces by (104, 105, 54, 84, 90: the
# image-left eye first), in the subject's-left-first order of dml_csr.conventions.KEYPOINTS
LAPA_FIVE = (105, 104, 54, 90, 84)


def read_five_points(path: str) -> np.ndarray:
    """(5, 2) float64 keypoints of a sample from its landmark file: a 5-point file as it is, LaPa's 106 points through
    :data:`LAPA_FIVE`; any other count is a :class:`~dml_csr.data.dataset.BadSampleError` naming the file."""
    count, points = read_landmark_file(path, "--align landmarks frames each face by its own landmarks")
    if count != len(points) or len(points) not in (5, 106):
        raise BadSampleError(f"landmark file '{path}' has {len(points)} points (count line {count}); expected 5 "
                             f"keypoints or LaPa's 106")
    return points if len(points) == 5 else points[list(LAPA_FIVE)]
