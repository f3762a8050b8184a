"""The landmark template of a prepared dataset: where its training faces' five points fall in the network input.

``scripts/measure_template.py --root R`` (and the synthetic faces' prepare step) writes ``R/face_template.json``
from the training split (:func:`dml_csr.data.split_template.measure_split`): each sample's landmark file
(``<split>/landmarks/NAME.txt``: 5 points, or LaPa's 106 through the five FaRL uses) where it has one, else the face
the detector finds in its image (the largest, for images with several). Training records it in every checkpoint's
``meta["crop"]``, so that a parser aligns a detected face to the framing the model was trained on
(:mod:`dml_csr.photos.alignment`). With ``data.align: landmarks`` training frames every face onto a template itself
(the root's, or FaRL's five points with ``data.template: farl``: :func:`training_crop`), FaRL's framing of LaPa.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Optional, Sequence

import numpy as np

from ..files import write_json
from .transforms import box_to_center_scale, get_affine_transform

__all__ = ["TEMPLATE_FILE", "WHOLE_IMAGE", "FARL_TEMPLATE", "check_crop", "landmarks_in_input", "measure_template",
           "template_points", "write_template", "read_template", "crop_for_training", "training_crop",
           "framed_by_landmarks", "framing_template"]

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
    if crop.get("align", "landmarks") != "landmarks":
        raise ValueError(f"{where}: 'align' {crop['align']!r} is unknown; a template crop records 'landmarks' "
                         f"(faces framed by their landmarks in training) or nothing")
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


# FaRL's five points (facer's standard face, target_face_scale 1.0: x = (v / 256) * (S - 1) / 2 on an S x S grid) at
# the 512 x 512 FaRL frames LaPa faces on, as fractions of it; the subject's left first, as
# dml_csr.conventions.KEYPOINTS (FaRL lists the image-left eye first)
_FARL_POINTS = ((316.0, 226.0), (196.0, 226.0), (256.0, 286.0), (292.0, 360.4), (220.0, 360.4))
FARL_TEMPLATE = {"kind": "template", "input_size": [512, 512],
                 "points": [[round(v / 256 * 511 / 2 / 512, 6) for v in p] for p in _FARL_POINTS],
                 "source": "FaRL's five points (facer's standard face, target face scale 1.0) on its 512x512 grid"}


def training_crop(data) -> dict:
    """The crop convention a run with ``data`` (the config's) records in its checkpoints (``meta["crop"]``).

    ``data.align: whole``: :func:`crop_for_training`. ``data.align: landmarks``: the template its faces are framed
    onto, marked ``"align": "landmarks"`` (the evaluator frames test faces the same way by default): the root's
    ``face_template.json`` (``data.template: root``), which must exist at the input's aspect, or
    :data:`FARL_TEMPLATE` (``data.template: farl``)."""
    if data.align != "landmarks":
        return crop_for_training(data.root, data.input_size)
    if data.template == "farl":
        if data.input_size[0] != data.input_size[1]:
            raise ValueError(f"data.template=farl is FaRL's square framing (its five points on a 512x512 grid); "
                             f"data.input_size {list(data.input_size)} is not square")
        return {**FARL_TEMPLATE, "align": "landmarks"}
    crop = read_template(data.root)
    path = os.path.join(data.root, TEMPLATE_FILE)
    if crop is None or crop.get("kind") != "template":
        raise ValueError(f"data.align=landmarks frames each face onto the root's landmark template, but '{path}' "
                         f"does not hold one; run scripts/measure_template.py --root {data.root}, or set "
                         f"data.template=farl (FaRL's five points)")
    h, w = crop["input_size"]
    if abs(h / w - data.input_size[0] / data.input_size[1]) > 1e-6:
        raise ValueError(f"'{path}' was measured at input {h}x{w}, whose aspect differs from data.input_size "
                         f"{list(data.input_size)}; measure it again at that size (scripts/measure_template.py)")
    return {**crop, "align": "landmarks"}


def framed_by_landmarks(crop: Optional[dict]) -> bool:
    """Whether a checkpoint's crop convention (``meta["crop"]``) says its faces were framed by their landmarks in
    training (``data.align: landmarks``, :func:`training_crop`), not only measured on whole-image crops."""
    return bool(crop) and crop.get("kind") == "template" and crop.get("align") == "landmarks"


def framing_template(data) -> Optional[np.ndarray]:
    """The (5, 2) input pixels ``data.align: landmarks`` frames each face's landmarks onto
    (:func:`training_crop`'s template at ``data.input_size``); None for ``data.align: whole``."""
    return None if data.align != "landmarks" else template_points(training_crop(data), data.input_size)


def template_points(crop: dict, input_size: Sequence[int]) -> np.ndarray:
    """The template's five points in pixels of an input of ``input_size`` (h, w)."""
    return np.asarray(crop["points"], np.float64) * [input_size[1], input_size[0]]
