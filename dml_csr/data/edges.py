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

from ..conventions import IGNORE_INDEX

__all__ = ["edge_targets", "binary_edges", "semantic_edges", "binary_edges_torch", "semantic_edges_torch", "neighbour_offsets"]


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


def edge_targets(label: np.ndarray, width: int = 1, ignore_index: int = IGNORE_INDEX) -> tuple[np.ndarray, np.ndarray]:
    """Both targets at once (one neighbourhood pass): ``(binary, semantic)``, each (H, W) uint8.

    A max filter of ``label + 1`` (ignored pixels wrap to 0, below every class) finds a larger valid neighbour, a min
    filter of ``label`` (ignored = 255, above every class) a smaller one; both are OpenCV morphology on uint8.
    """
    if label.ndim != 2:
        raise ValueError(f"expected an (H, W) label map, got shape {label.shape}")
    lab = label if label.dtype == np.uint8 else label.astype(np.uint8)
    if ignore_index != 255:
        if (lab == 255).any():
            raise ValueError(f"label value 255 is a class while ignore_index is {ignore_index}; not supported")
        lab = np.where(lab == ignore_index, np.uint8(255), lab)
    k = _kernel(width)
    up = lab + np.uint8(1)  # 255 (ignored) wraps to 0
    larger = cv2.compare(cv2.dilate(up, k, borderType=cv2.BORDER_CONSTANT, borderValue=0), up, cv2.CMP_GT)
    smaller = cv2.compare(cv2.erode(lab, k, borderType=cv2.BORDER_CONSTANT, borderValue=255), lab, cv2.CMP_LT)
    edge = cv2.bitwise_or(larger, smaller)  # 255 on edges (ignored pixels may be set: the masks below win)
    ignored = cv2.compare(lab, 255, cv2.CMP_EQ)  # 255 where ignored
    binary = cv2.bitwise_or(cv2.bitwise_and(edge, 1), ignored)
    semantic = cv2.bitwise_or(cv2.bitwise_and(lab, edge), ignored)
    if ignore_index != 255:
        binary[binary == 255] = ignore_index
        semantic[semantic == 255] = ignore_index
    return binary, semantic


def binary_edges(label: np.ndarray, width: int = 1, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Binary edge target of a label map.

    Args:
        label: (H, W) uint8 class indices, ``ignore_index`` for ignored pixels.
        width: neighbourhood radius (city-block); 1 = the 4 neighbours.
        ignore_index: label value to ignore.
    Returns:
        (H, W) uint8: 1 edge, 0 not, ``ignore_index`` where the label is ignored.
    """
    return edge_targets(label, width, ignore_index)[0]


def semantic_edges(label: np.ndarray, width: int = 1, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Category-aware edge target: the pixel's class on binary-edge pixels, 0 elsewhere, ``ignore_index`` where
    ignored. (H, W) uint8 in, (H, W) uint8 out."""
    return edge_targets(label, width, ignore_index)[1]


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


def binary_edges_torch(label: torch.Tensor, width: int = 1, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Batch version of :func:`binary_edges`: (B, H, W) integer tensor -> (B, H, W) int64 on the same device."""
    edge, valid = _edge_mask_torch(label, width, ignore_index)
    out = edge.long()
    out[~valid] = ignore_index
    return out


def semantic_edges_torch(label: torch.Tensor, width: int = 1, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Batch version of :func:`semantic_edges`: (B, H, W) integer tensor -> (B, H, W) int64 on the same device."""
    edge, valid = _edge_mask_torch(label, width, ignore_index)
    out = torch.where(edge, label.long(), torch.zeros_like(label, dtype=torch.long))
    out[~valid] = ignore_index
    return out
