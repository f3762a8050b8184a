"""A real photo for the tests: NASA's public-domain astronaut portrait, and a group photo composed of copies of it
at several scales, rotations and positions, with every copy's landmarks known from the placement."""
from __future__ import annotations

import json
import os

import cv2
import numpy as np

from . import FIXTURES

PHOTO = os.path.join(FIXTURES, "photos", "astronaut.jpg")
# (scale, degrees counter-clockwise, centre x, centre y) of each copy on a 1100x700 grey canvas
PLACEMENTS = [(0.45, 0, 150, 180), (0.6, 20, 450, 300), (0.35, -25, 800, 150), (0.8, -10, 850, 500),
              (0.3, 0, 250, 550)]


def astronaut() -> tuple[np.ndarray, dict]:
    """(512, 512, 3) uint8 BGR and its face: {"box": [x, y, w, h], "landmarks": (5, 2) in KEYPOINTS order}."""
    with open(os.path.join(FIXTURES, "photos", "astronaut.json")) as f:
        face = json.load(f)
    face["landmarks"] = np.asarray(face["landmarks"], np.float64)
    return cv2.imread(PHOTO, cv2.IMREAD_COLOR), face


def group_photo(placements=PLACEMENTS, size=(700, 1100)) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """The composite, each copy's 2x3 placement (portrait -> canvas) and each copy's landmarks on the canvas."""
    img, face = astronaut()
    h, w = img.shape[:2]
    canvas = np.full(size + (3,), 128, np.uint8)
    mats, points = [], []
    for scale, angle, cx, cy in placements:
        m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
        m[:, 2] += [cx - w / 2, cy - h / 2]
        warped = cv2.warpAffine(img, m, (size[1], size[0]), flags=cv2.INTER_LINEAR)
        inside = cv2.warpAffine(np.ones((h, w), np.float32), m, (size[1], size[0])) > 0.5
        canvas[inside] = warped[inside]
        mats.append(m)
        points.append(face["landmarks"] @ m[:, :2].T + m[:, 2])
    return canvas, mats, points
