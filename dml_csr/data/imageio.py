"""Reading image files with errors that name the file (no torch import: the prepare scripts use it too)."""
from __future__ import annotations

import os

import cv2
import numpy as np

__all__ = ["imread_checked"]


def imread_checked(path: str, flags: int = cv2.IMREAD_COLOR, error: type[Exception] = ValueError,
                   what: str = "image file") -> np.ndarray:
    """``cv2.imread`` that raises ``error`` naming ``path`` when the file is missing or cannot be decoded.

    Args:
        flags: cv2 read flags (IMREAD_COLOR gives (H, W, 3) BGR uint8, IMREAD_GRAYSCALE (H, W), IMREAD_UNCHANGED as is).
        error: the exception class to raise (each caller's own, e.g. BadSampleError, PrepareError).
        what: how the message names the file ("image file", "label file", ...).
    """
    if not os.path.isfile(path):
        raise error(f"{what} '{path}' is missing")
    img = cv2.imread(path, flags)
    if img is None:
        raise error(f"{what} '{path}' cannot be decoded (corrupt or not an image)")
    return img
