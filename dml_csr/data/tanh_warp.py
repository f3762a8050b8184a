"""RoI tanh warping (Lin et al., "Face Parsing with RoI Tanh-Warping", CVPR 2019, in the form FaRL's face parsing
uses): the crop keeps its centre as it is and squeezes its rim, so that the network sees the whole image at the
crop's resolution, the face at full detail and the hair and background compressed around it.

Each axis of a point in the (unwarped) crop is normalised to [-1, 1] over the crop (pixel centres at
``c = (q + 0.5) / W * 2 - 1``, ``q`` the pixel index) and mapped with the warp factor ``k`` in [0, 1]:

    u = c                                                for |c| <= 1 - k
    u = sign(c) * (1 - k + k * tanh((|c| - 1 + k) / k))  beyond

``k = 0`` is the plain crop; FaRL's LaPa model uses 0.8 at 448x448 (linear within a fifth of the half-width of the
centre). The curve is continuous with slope 1 at the knee, and every point of the plane lands strictly inside
(-1, 1): a crop with ``k > 0`` holds the whole image. The warped input's pixel ``p`` samples the unwarped crop at
the inverse (``atanh``), and a prediction goes back onto the image through the forward curve.

The maps here are what :func:`cv2.remap` takes: for every pixel of the output, the point of the source it samples.
"""
from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

__all__ = ["warp_coords", "unwarp_coords", "input_maps", "image_maps", "warp_points", "check_warp"]


def check_warp(k: float, where: str = "warp") -> float:
    """``k`` as a float in [0, 1], else a ValueError naming ``where``."""
    try:
        value = float(k)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0.0 <= value <= 1.0:  # NaN fails too
        raise ValueError(f"{where} = {k!r}; expected a tanh warp factor from 0 (none) to 1")
    return value


def _rim(c: np.ndarray, k: float, curve) -> np.ndarray:
    """``c`` within ``1 - k`` of the centre as it is; beyond, ``curve`` of the distance past the knee (in units of
    ``k``), scaled back by ``k``."""
    c = np.asarray(c, np.float64)
    if k == 0:
        return c
    knee = 1.0 - k
    rim = np.abs(c) > knee
    out = c.copy()
    out[rim] = np.sign(c[rim]) * (knee + k * curve((np.abs(c[rim]) - knee) / k))
    return out


def warp_coords(c: np.ndarray, k: float) -> np.ndarray:
    """Normalised crop coordinates (any shape) -> warped ones, each in (-1, 1) for ``k > 0``."""
    return _rim(c, k, np.tanh)


def unwarp_coords(u: np.ndarray, k: float) -> np.ndarray:
    """Warped normalised coordinates -> the unwarped crop's (the inverse of :func:`warp_coords`); points on or
    beyond the edge (|u| >= 1, which no point of the plane reaches) are taken from just inside it."""
    return _rim(u, k, lambda r: np.arctanh(np.minimum(r, 1.0 - 1e-9)))


def _to_norm(q: np.ndarray, n: int) -> np.ndarray:
    return (q + 0.5) / n * 2.0 - 1.0


def _from_norm(c: np.ndarray, n: int) -> np.ndarray:
    return (c + 1.0) / 2.0 * n - 0.5


@functools.lru_cache(maxsize=8)
def _unwarped_grid(h: int, w: int, k: float) -> tuple[np.ndarray, np.ndarray]:
    """The unwarped crop's pixel coordinates (x, y) that each pixel of the warped (h, w) input samples."""
    xs = _from_norm(unwarp_coords(_to_norm(np.arange(w, dtype=np.float64), w), k), w)
    ys = _from_norm(unwarp_coords(_to_norm(np.arange(h, dtype=np.float64), h), k), h)
    xs.setflags(write=False)
    ys.setflags(write=False)
    return xs, ys


def input_maps(inverse: np.ndarray, input_size: Sequence[int], k: float) -> tuple[np.ndarray, np.ndarray]:
    """(map_x, map_y), float32 (h, w): the image point each pixel of the warped input samples. ``inverse``: the 2x3
    affine from the unwarped crop's pixels to the image's."""
    h, w = int(input_size[0]), int(input_size[1])
    xs, ys = _unwarped_grid(h, w, float(k))
    m = np.asarray(inverse, np.float64)
    map_x = m[0, 0] * xs[None, :] + m[0, 1] * ys[:, None] + m[0, 2]
    map_y = m[1, 0] * xs[None, :] + m[1, 1] * ys[:, None] + m[1, 2]
    return map_x.astype(np.float32), map_y.astype(np.float32)


def image_maps(forward: np.ndarray, window: Sequence[int], input_size: Sequence[int],
               k: float) -> tuple[np.ndarray, np.ndarray]:
    """(map_x, map_y), float32 over the image ``window`` (x0, y0, x1, y1), exclusive ends: the point of the warped
    input each image pixel takes its prediction from. ``forward``: the 2x3 affine from the image's pixels to the
    unwarped crop's."""
    h, w = int(input_size[0]), int(input_size[1])
    x0, y0, x1, y1 = (int(v) for v in window)
    xs = np.arange(x0, x1, dtype=np.float64)[None, :]
    ys = np.arange(y0, y1, dtype=np.float64)[:, None]
    m = np.asarray(forward, np.float64)
    qx = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
    qy = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
    map_x = _from_norm(warp_coords(_to_norm(qx, w), k), w)
    map_y = _from_norm(warp_coords(_to_norm(qy, h), k), h)
    return map_x.astype(np.float32), map_y.astype(np.float32)


def warp_points(points: np.ndarray, input_size: Sequence[int], k: float) -> np.ndarray:
    """(K, 2) pixels (x, y) of the unwarped crop -> the warped input's."""
    h, w = int(input_size[0]), int(input_size[1])
    p = np.asarray(points, np.float64)
    x = _from_norm(warp_coords(_to_norm(p[:, 0], w), k), w)
    y = _from_norm(warp_coords(_to_norm(p[:, 1], h), k), h)
    return np.stack([x, y], 1)
