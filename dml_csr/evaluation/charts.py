"""Small PNG charts drawn with OpenCV (no plotting library is a dependency): grouped bars (per-class scores of several
runs, :func:`bar_chart`) and lines with their points (a score against a setting, :func:`line_chart`). Both return
(H, W, 3) uint8 RGB images; :func:`dml_csr.data.drawing.save_rgb` writes them."""
from __future__ import annotations

from typing import Optional, Sequence

import cv2
import numpy as np

__all__ = ["bar_chart", "line_chart", "COLOURS"]

COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]  # RGB, one a series
_FONT, _INK, _GRID = cv2.FONT_HERSHEY_SIMPLEX, (0, 0, 0), (220, 220, 220)


def _canvas(width: int, height: int, title: str) -> np.ndarray:
    img = np.full((height, width, 3), 255, np.uint8)
    cv2.putText(img, title, (10, 22), _FONT, 0.55, _INK, 1, cv2.LINE_AA)
    return img


def _y_axis(img: np.ndarray, box: tuple[int, int, int, int], lo: float, hi: float, ticks: int = 5) -> None:
    x0, y0, x1, y1 = box
    for i in range(ticks + 1):
        v = lo + (hi - lo) * i / ticks
        y = int(round(y1 - (y1 - y0) * i / ticks))
        cv2.line(img, (x0, y), (x1, y), _GRID, 1)
        cv2.putText(img, f"{v:.2f}", (4, y + 4), _FONT, 0.4, _INK, 1, cv2.LINE_AA)
    cv2.line(img, (x0, y0), (x0, y1), _INK, 1)
    cv2.line(img, (x0, y1), (x1, y1), _INK, 1)


def _legend(img: np.ndarray, names: Sequence[str], x: int, y: int) -> None:
    for i, name in enumerate(names):
        c = COLOURS[i % len(COLOURS)]
        cv2.rectangle(img, (x, y + 16 * i - 9), (x + 10, y + 16 * i + 1), c, -1)
        cv2.putText(img, name, (x + 16, y + 16 * i), _FONT, 0.4, _INK, 1, cv2.LINE_AA)


def bar_chart(categories: Sequence[str], series: dict[str, Sequence[float]], title: str = "",
              lo: float = 0.0, hi: float = 1.0) -> np.ndarray:
    """Grouped bars: one group a category (e.g. a class), one bar a series (e.g. a run); NaN draws no bar."""
    n, k = len(categories), max(len(series), 1)
    group = max(14 * k + 10, 40)
    width, height = 70 + n * group + 180, 320
    img = _canvas(width, height, title)
    box = (60, 40, 60 + n * group, height - 90)
    _y_axis(img, box, lo, hi)
    for j, (name, values) in enumerate(series.items()):
        for i, v in enumerate(values):
            if v is None or not np.isfinite(v):
                continue
            x = box[0] + i * group + 5 + j * 14
            top = int(round(box[3] - (box[3] - box[1]) * (min(max(v, lo), hi) - lo) / (hi - lo)))
            cv2.rectangle(img, (x, top), (x + 11, box[3]), COLOURS[j % len(COLOURS)], -1)
    for i, c in enumerate(categories):  # category names, written downwards
        label = np.full((14, 86, 3), 255, np.uint8)
        cv2.putText(label, c[:14], (0, 11), _FONT, 0.38, _INK, 1, cv2.LINE_AA)
        rotated = cv2.rotate(label, cv2.ROTATE_90_CLOCKWISE)
        x = box[0] + i * group + group // 2 - 7
        img[box[3] + 2:box[3] + 88, x:x + 14] = np.minimum(img[box[3] + 2:box[3] + 88, x:x + 14], rotated)
    _legend(img, list(series), box[2] + 15, 50)
    return img


def line_chart(xs: Sequence[float], series: dict[str, Sequence[Sequence[float]]], title: str = "",
               x_label: str = "", lo: Optional[float] = None, hi: Optional[float] = None) -> np.ndarray:
    """Lines through the mean of each x's points, and the points themselves (e.g. one a seed); ``series`` maps a
    name to, for each x, its list of values."""
    values = [v for pts in series.values() for p in pts for v in p]
    lo = min(values) - 0.01 if lo is None else lo
    hi = max(values) + 0.01 if hi is None else hi
    width, height = 560, 340
    img = _canvas(width, height, title)
    box = (60, 40, 400, height - 50)
    _y_axis(img, box, lo, hi)
    span = (max(xs) - min(xs)) or 1.0

    def point(x: float, v: float) -> tuple[int, int]:
        px = box[0] + 15 + (box[2] - box[0] - 30) * (x - min(xs)) / span
        py = box[3] - (box[3] - box[1]) * (v - lo) / (hi - lo)
        return int(round(px)), int(round(py))
    for x in xs:
        px, _ = point(x, lo)
        cv2.putText(img, f"{x:g}", (px - 8, box[3] + 16), _FONT, 0.4, _INK, 1, cv2.LINE_AA)
    cv2.putText(img, x_label, (box[0] + 100, box[3] + 36), _FONT, 0.45, _INK, 1, cv2.LINE_AA)
    for j, (name, pts) in enumerate(series.items()):
        c = COLOURS[j % len(COLOURS)]
        means = [point(x, float(np.mean(p))) for x, p in zip(xs, pts)]
        for a, b in zip(means, means[1:]):
            cv2.line(img, a, b, c, 2, cv2.LINE_AA)
        for x, p in zip(xs, pts):
            for v in p:
                cv2.circle(img, point(x, v), 4, c, -1, cv2.LINE_AA)
    _legend(img, list(series), box[2] + 15, 50)
    return img
