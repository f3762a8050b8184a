"""Reading image files with errors that name the file, and any image a user hands over (a path, a PIL image, an
array) as BGR (no torch import: the prepare scripts use it too)."""
from __future__ import annotations

import os
import struct
from typing import Optional

import cv2
import numpy as np

__all__ = ["imread_checked", "truncation", "image_size", "to_bgr"]

_JPEG, _PNG = b"\xff\xd8", b"\x89PNG\r\n\x1a\n"


def truncation(data: bytes) -> Optional[str]:
    """Why an encoded JPEG or PNG is cut short, or None. OpenCV decodes a truncated JPEG without an error (libjpeg
    only warns on stderr and fills the rest grey), so the end markers are checked: a JPEG's end-of-image marker in
    its last 4 KiB (past any trailing bytes some cameras append), a PNG's IEND chunk at its end."""
    head, tail = bytes(data[:8]), bytes(data[-4096:])
    if head[:2] == _JPEG and b"\xff\xd9" not in tail:
        return "is truncated (no JPEG end-of-image marker)"
    if head == _PNG and b"IEND" not in tail[-16:]:
        return "is truncated (no PNG IEND chunk)"
    return None


def image_size(data: bytes) -> Optional[tuple[int, int]]:
    """(width, height) read from a PNG or JPEG header without decoding the pixels; None for other formats or a
    header it cannot read (the decoder then decides)."""
    if data[:8] == _PNG and len(data) >= 24 and data[12:16] == b"IHDR":
        return struct.unpack(">II", data[16:24])
    if data[:2] != _JPEG:
        return None
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2: i + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a start-of-frame: the image size
            if i + 9 > len(data):
                return None
            height, width = struct.unpack(">HH", data[i + 5: i + 9])
            return width, height
        i += 2 + length
    return None


def imread_checked(path: str, flags: int = cv2.IMREAD_COLOR, error: type[Exception] = ValueError,
                   what: str = "image file") -> np.ndarray:
    """``cv2.imread`` that raises ``error`` naming ``path`` when the file is missing, a directory, truncated or
    cannot be decoded.

    Args:
        flags: cv2 read flags (IMREAD_COLOR gives (H, W, 3) BGR uint8, IMREAD_GRAYSCALE (H, W), IMREAD_UNCHANGED as is).
        error: the exception class to raise (each caller's own, e.g. BadSampleError, PrepareError).
        what: how the message names the file ("image file", "label file", ...).
    """
    if os.path.isdir(path):
        raise error(f"{what} '{path}' is a directory")
    if not os.path.isfile(path):
        raise error(f"{what} '{path}' is missing")
    data = np.fromfile(path, np.uint8)
    cut = truncation(data)
    if cut:
        raise error(f"{what} '{path}' {cut}")
    img = cv2.imdecode(data, flags)
    if img is None or img.size == 0:
        raise error(f"{what} '{path}' cannot be decoded (corrupt or not an image)")
    return img


def to_bgr(image, channel_order: str = "RGB") -> np.ndarray:
    """Any supported image as (H, W, 3) uint8 BGR.

    Args:
        image: a file path (read with OpenCV; an error names a missing, truncated or undecodable file); a PIL image
            (any mode; turned by its EXIF orientation, as OpenCV turns a file); or a numpy array (H, W) grey, (H, W, 3) or (H, W, 4) uint8 whose colour order is
            ``channel_order`` (alpha is dropped).
        channel_order: order of a numpy array's channels: "RGB" (PIL, matplotlib, imageio) or "BGR" (cv2.imread).
    """
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"image '{path}' does not exist")
        return imread_checked(path, cv2.IMREAD_COLOR, ValueError, "image")
    if type(image).__module__.startswith("PIL."):  # turned as its EXIF orientation says, as OpenCV reads a file
        from PIL import ImageOps

        return np.ascontiguousarray(np.asarray(ImageOps.exif_transpose(image).convert("RGB"))[..., ::-1])
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected a path, a numpy array or a PIL image, got {type(image).__name__}")
    if channel_order not in ("RGB", "BGR"):
        raise ValueError(f"channel_order must be 'RGB' or 'BGR', got {channel_order!r}")
    if image.dtype != np.uint8:
        raise ValueError(f"image array is {image.dtype}; expected uint8 (0..255)")
    if image.size == 0:
        raise ValueError(f"image array has shape {image.shape}; expected a non-empty image")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"image array has shape {image.shape}; expected (H, W), (H, W, 3) or (H, W, 4)")
    img = image[..., :3]
    return np.ascontiguousarray(img[..., ::-1] if channel_order == "RGB" else img)
