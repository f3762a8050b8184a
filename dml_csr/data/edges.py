"""Edge targets made on the fly from label maps (after augmentation, never read from files).

Definitions (paper Sec. 3.3 and Fig. 4):

* **binary edge**: a pixel is an edge pixel when a pixel in its neighbourhood carries another label. With
  ``width=1`` the neighbourhood is the 4 direct neighbours (as in the paper); ``width=w`` uses every pixel within
  city-block distance ``w``, which widens the band to ``w`` pixels on each side of a boundary. Ignored pixels
  (``ignore_index``) never make an edge, and the target is ``ignore_index`` where the label itself is ignored.
  Values: 1 edge, 0 not, ``ignore_index`` ignored.
* **semantic (category-aware) edge**: on binary-edge pixels, the pixel's own class; elsewhere 0. Both sides of a
  boundary are edge pixels, so each class gets its own contour. Background edge pixels are class 0 like non-edge
  pixels, which matches the C-channel category-edge head whose channel 0 stands for "background or no edge".
  ``ignore_index`` where the label is ignored.

numpy versions take an (H, W) uint8 map and use OpenCV morphology; torch versions take a (B, H, W) integer tensor on
any device.
"""
from __future__ import annotations

import functools

import cv2
import numpy as np
import torch

__all__ = ["binary_edges", "semantic_edges", "binary_edges_torch", "semantic_edges_torch", "neighbour_offsets"]


@functools.lru_cache(maxsize=8)
def neighbour_offsets(width: int) -> tuple[tuple[int, int], ...]:
    """(dy, dx) offsets within city-block distance ``width`` (excluding (0, 0)); width 1 gives the 4 neighbours."""
    if width < 1:
        raise ValueError(f"edge width must be >= 1, got {width}")
    return tuple((dy, dx) for dy in range(-width, width + 1) for dx in range(-width, width + 1)
                 if 0 < abs(dy) + abs(dx) <= width)


@functools.lru_cache(maxsize=8)
def _kernel(width: int) -> np.ndarray:
    k = np.zeros((2 * width + 1, 2 * width + 1), np.uint8)
    for dy, dx in neighbour_offsets(width):
        k[dy + width, dx + width] = 1
    return k


def _edge_mask(label: np.ndarray, width: int, ignore_index: int) -> tuple[np.ndarray, np.ndarray]:
    """(edge, valid) boolean (H, W) maps. Uses max/min filters that skip ignored pixels."""
    if label.ndim != 2:
        raise ValueError(f"expected an (H, W) label map, got shape {label.shape}")
    lab = label.astype(np.uint8, copy=False)
    valid = lab != ignore_index
    k = _kernel(width)
    # a neighbour with a larger valid label: dilate (label + 1) with ignored pixels at 0
    up = lab + np.uint8(1)
    up[~valid] = 0
    larger = cv2.dilate(up, k, borderType=cv2.BORDER_CONSTANT, borderValue=0) > up
    # a neighbour with a smaller valid label: erode with ignored pixels at 255 (never smaller than a valid label)
    down = lab.copy() if ignore_index == 255 else np.where(valid, lab, np.uint8(255))
    smaller = cv2.erode(down, k, borderType=cv2.BORDER_CONSTANT, borderValue=255) < down
    return (larger | smaller) & valid, valid


def binary_edges(label: np.ndarray, width: int = 1, ignore_index: int = 255) -> np.ndarray:
    """Binary edge target of a label map.

    Args:
        label: (H, W) uint8 class indices (< 255), ``ignore_index`` for ignored pixels.
        width: neighbourhood radius (city-block); 1 = the 4 neighbours.
        ignore_index: label value to ignore (must be 255 or larger than every class index).
    Returns:
        (H, W) uint8: 1 edge, 0 not, ``ignore_index`` where the label is ignored.
    """
    edge, valid = _edge_mask(label, width, ignore_index)
    out = edge.astype(np.uint8)
    out[~valid] = ignore_index
    return out


def semantic_edges(label: np.ndarray, width: int = 1, ignore_index: int = 255) -> np.ndarray:
    """Category-aware edge target: the pixel's class on binary-edge pixels, 0 elsewhere, ``ignore_index`` where
    ignored. (H, W) uint8 in, (H, W) uint8 out."""
    edge, valid = _edge_mask(label, width, ignore_index)
    out = np.where(edge, label, np.uint8(0)).astype(np.uint8)
    out[~valid] = ignore_index
    return out


def _edge_mask_torch(label: torch.Tensor, width: int, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    if label.dim() != 3:
        raise ValueError(f"expected a (B, H, W) label tensor, got shape {tuple(label.shape)}")
    if label.is_floating_point():
        raise ValueError(f"expected an integer label tensor, got {label.dtype}")
    lab = label.long()
    valid = lab != ignore_index
    padded = torch.nn.functional.pad(lab, (width, width, width, width), value=ignore_index)
    h, w = lab.shape[-2:]
    edge = torch.zeros_like(valid)
    for dy, dx in neighbour_offsets(width):
        nb = padded[:, width + dy: width + dy + h, width + dx: width + dx + w]
        edge |= (nb != lab) & (nb != ignore_index)
    return edge & valid, valid


def binary_edges_torch(label: torch.Tensor, width: int = 1, ignore_index: int = 255) -> torch.Tensor:
    """Batch version of :func:`binary_edges`: (B, H, W) integer tensor -> (B, H, W) int64 on the same device."""
    edge, valid = _edge_mask_torch(label, width, ignore_index)
    out = edge.long()
    out[~valid] = ignore_index
    return out


def semantic_edges_torch(label: torch.Tensor, width: int = 1, ignore_index: int = 255) -> torch.Tensor:
    """Batch version of :func:`semantic_edges`: (B, H, W) integer tensor -> (B, H, W) int64 on the same device."""
    edge, valid = _edge_mask_torch(label, width, ignore_index)
    out = torch.where(edge, label.long(), torch.zeros_like(label, dtype=torch.long))
    out[~valid] = ignore_index
    return out
