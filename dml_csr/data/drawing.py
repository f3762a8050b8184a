"""Label maps in colour: one palette per model, colourised maps, overlays on photos, photo | truth | prediction strips.

Every picture of a label map (FaceParser's ``colorize`` and ``overlay``, the colour PNGs of ``evaluate.py
--save-predictions``, predict.py's overlays, the web demo, TensorBoard's image grid) is drawn here. Colours are RGB;
the ignore label (255) is white; background pixels of an overlay keep the photo's own colour.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..conventions import IGNORE_INDEX
from .labels import DATASETS, fallback_palette

__all__ = ["palette_for", "colorize", "overlay", "side_by_side", "save_rgb", "ALPHA"]

ALPHA = 0.6  # the overlay's default opacity: skin (teal) shows on light and dark skin alike


def palette_for(dataset: Optional[str], num_classes: int) -> np.ndarray:
    """(C, 3) uint8 RGB: the label registry's palette of ``dataset`` when it has ``num_classes`` classes, else fixed
    random colours (seeded by the class count) with a black background."""
    spec = DATASETS.get(dataset or "")
    if spec is not None and spec.num_classes == num_classes:
        return spec.palette
    return fallback_palette(num_classes)


def colorize(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """(H, W) class indices -> (H, W, 3) uint8 RGB; the ignore label (255) and any index without a colour are
    white."""
    lut = np.full((256, 3), 255, np.uint8)
    lut[: len(palette)] = palette
    lut[IGNORE_INDEX] = 255
    return lut[np.asarray(labels).astype(np.uint8)]


def overlay(image_rgb: np.ndarray, labels: np.ndarray, palette: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """The (H, W, 3) uint8 RGB photo blended with its colourised labels at opacity ``alpha``; background pixels
    (class 0) stay as they are. Raises ValueError when the labels are not at the photo's size."""
    labels = np.asarray(labels)
    if image_rgb.shape[:2] != labels.shape:
        raise ValueError(f"labels have shape {labels.shape} but the image is {image_rgb.shape[:2]}")
    colour = colorize(labels, palette).astype(np.float32)
    a = np.where(labels[..., None] == 0, 0.0, float(alpha))
    return np.clip(image_rgb.astype(np.float32) * (1 - a) + colour * a + 0.5, 0, 255).astype(np.uint8)


def save_rgb(path: str, image_rgb: np.ndarray) -> None:
    """Write an RGB picture (an overlay, a colourised map) to ``path`` (its extension picks the format), atomically:
    OpenCV writes BGR, so the channels are reversed here (``cv2.imwrite`` of an RGB array gives blue faces)."""
    from ..files import write_image

    write_image(path, np.ascontiguousarray(np.asarray(image_rgb)[..., ::-1]))


def side_by_side(photo_bgr: Optional[np.ndarray], truth: Optional[np.ndarray], pred: np.ndarray,
                 palette: np.ndarray, gap: int = 4) -> np.ndarray:
    """(H, W', 3) uint8 BGR: the photo, the colourised ground truth and the colourised prediction side by side with
    white gaps; only the prediction when the photo or the truth is missing or of another size."""
    colour = colorize(pred, palette)[..., ::-1]
    if photo_bgr is None or truth is None or photo_bgr.shape[:2] != pred.shape or truth.shape != pred.shape:
        return np.ascontiguousarray(colour)
    white = np.full((pred.shape[0], gap, 3), 255, np.uint8)
    return np.ascontiguousarray(np.concatenate([photo_bgr, white, colorize(truth, palette)[..., ::-1], white,
                                                colour], 1))
