"""Faces framed as the training images were, and the compositing of their class probabilities.

A checkpoint's ``meta["crop"]`` records how its training images framed a face:

- ``{"kind": "template", "points": [[x, y] * 5], "input_size": [h, w], "faces": N}``: the mean position of the
  five landmarks (:data:`~dml_csr.conventions.KEYPOINTS` order) in the network input, as fractions of its width and
  height, measured over the training split by :func:`dml_csr.data.split_template.measure_split`
  (``scripts/measure_template.py``; the synthetic faces' prepare step writes it). A detected face with landmarks is
  warped onto it by the least-squares similarity (rotation, uniform scale, translation) of its five points.
- ``{"kind": "whole_image"}`` (the authors' checkpoints, and ours without a template): the training images were
  whole, roughly centred faces; a detected face is cropped as a square around its box, grown by a margin.

Paste-back (:func:`dml_csr.photos.pipeline.paste_faces`): each face's probabilities (C, h, w) go back through the
inverse of its warp, bilinear, with the share of each photo pixel the crop covers; :func:`composite` averages
overlapping faces with weights ``coverage * (1 - p_background)`` (a face that claims a pixel outweighs one that sees
background there), uncovered pixels are background, and the labels are the argmax at the photo's own resolution.
"""
from __future__ import annotations

from typing import Optional, Sequence

import cv2
import numpy as np

from ..data.face_template import template_points
from ..data.transforms import similarity_transform

__all__ = ["similarity_transform", "box_affine", "template_points", "face_affine", "crop_region", "composite"]


def box_affine(box: Sequence[float], input_size: Sequence[int], margin: float) -> np.ndarray:
    """Image -> input affine of the square of side ``max(w, h) * (1 + 2 * margin)`` centred on the box, onto the
    input (aspect kept: the square fits the shorter side)."""
    x, y, w, h = (float(v) for v in box)
    side = max(w, h) * (1 + 2 * margin)
    in_h, in_w = input_size
    k = min(in_h, in_w) / side
    return np.array([[k, 0, in_w / 2 - k * (x + w / 2)], [0, k, in_h / 2 - k * (y + h / 2)]])


def face_affine(face, crop: dict, input_size: Sequence[int], margin: float = 0.5) -> np.ndarray:
    """Image -> input affine of one face (a :class:`~dml_csr.photos.detection.Face`): onto the template by its landmarks
    when both exist, else the square around its box."""
    if crop.get("kind") == "template" and face.points is not None:
        return similarity_transform(face.points, template_points(crop, input_size))
    return box_affine(face.box, input_size, margin)


def crop_region(affine: np.ndarray, input_size: Sequence[int], size: Sequence[int]) -> Optional[tuple[int, ...]]:
    """The image pixels (x0, y0, x1, y1), exclusive ends, that a crop taken with ``affine`` reaches, clipped to an
    image of ``size`` (H, W); None when it reaches none."""
    h, w = input_size
    inv = cv2.invertAffineTransform(np.asarray(affine, np.float64))
    # bilinear sampling reaches one crop pixel past each edge (-1 and w, h): a shrunk crop's fading border counts
    corners = np.array([[-1, -1], [w, -1], [-1, h], [w, h]], np.float64) @ inv[:, :2].T + inv[:, 2]
    x0, y0 = np.floor(corners.min(0)).astype(int) - 1
    x1, y1 = np.ceil(corners.max(0)).astype(int) + 2
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(int(size[1]), x1), min(int(size[0]), y1)
    return (int(x0), int(y0), int(x1), int(y1)) if x1 > x0 and y1 > y0 else None


def composite(pasted: Sequence[tuple[np.ndarray, np.ndarray, Sequence[int]]], num_classes: int
              ) -> tuple[np.ndarray, Optional[tuple[int, int, int, int]]]:
    """One probability map from the faces' pasted (probs, coverage, region) triples, over the union of their
    regions: each face weighted by coverage times its foreground probability, background where no face reaches.
    Returns (probs (C, h, w), union region (x0, y0, x1, y1)), or an empty map and None without faces."""
    if not pasted:
        return np.zeros((num_classes, 0, 0), np.float32), None
    rx0, ry0 = min(r[0] for _, _, r in pasted), min(r[1] for _, _, r in pasted)
    rx1, ry1 = max(r[2] for _, _, r in pasted), max(r[3] for _, _, r in pasted)
    acc = np.zeros((num_classes, ry1 - ry0, rx1 - rx0), np.float32)
    weight = np.zeros(acc.shape[1:], np.float32)
    reach = np.zeros(acc.shape[1:], np.float32)
    for probs, cov, (x0, y0, x1, y1) in pasted:
        win = (slice(y0 - ry0, y1 - ry0), slice(x0 - rx0, x1 - rx0))
        w = cov * (1.0 - probs[0] + 1e-3)
        acc[(slice(None),) + win] += probs * w
        weight[win] += w
        reach[win] = np.maximum(reach[win], cov)
    out = acc / np.maximum(weight, 1e-12)
    out *= reach
    out[0] += 1.0 - reach
    return out, (rx0, ry0, rx1, ry1)
