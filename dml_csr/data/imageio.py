"""The one image reader: files and uploaded bytes to pixels, with limits checked before anything is decoded, and
errors that name the file (no torch import: the prepare scripts use it too).

Every path that reads an image goes through :func:`imread_checked` (files) or :func:`decode_image` (bytes): the
datasets, evaluation, ``FaceParser``, ``predict.py`` and the web demo. In that order it refuses

- a path that is missing, a directory, a broken symbolic link or a loop, or not a regular file (a pipe, a device);
- an empty file, and a file over the byte limit (its size comes from the file system: such a file is never read);
- bytes that are not a JPEG, PNG, WebP, TIFF, GIF, BMP or PPM/PGM image, or whose header cannot be read;
- an image whose width x height (read from the header, before decoding) is over the pixel limit;
- a JPEG or PNG cut short (OpenCV decodes those silently), and what OpenCV cannot decode.

The limits (:class:`ImageLimits`) default to :data:`MAX_BYTES` and :data:`MAX_PIXELS`, sized for real photos
(a 100-megapixel medium-format camera fits), and are read from ``DML_CSR_MAX_IMAGE_MB`` and
``DML_CSR_MAX_MEGAPIXELS`` when set (``predict.py`` and ``evaluate.py`` set them from their flags, so loader workers
see them too); the web demo passes its own.
"""
from __future__ import annotations

import errno
import io
import math
import os
import stat
import struct
import warnings
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

__all__ = ["imread_checked", "read_file", "decode_image", "header_size", "image_size", "truncation", "to_bgr",
           "ImageLimits", "ImageError", "MAX_BYTES", "MAX_PIXELS", "ENV_BYTES", "ENV_PIXELS", "FORMATS"]

MAX_BYTES = 256 * 2**20  # 256 MiB: an uncompressed 80-megapixel TIFF
MAX_PIXELS = 100_000_000  # 100 megapixels
ENV_BYTES, ENV_PIXELS = "DML_CSR_MAX_IMAGE_MB", "DML_CSR_MAX_MEGAPIXELS"
FORMATS = "a JPEG, PNG, WebP, TIFF, GIF, BMP or PPM/PGM file"
_PIL_FORMATS = ("JPEG", "PNG", "TIFF", "GIF", "BMP", "PPM")  # WebP: read here (Pillow's opener allocates a canvas)
_JPEG, _PNG = b"\xff\xd8", b"\x89PNG\r\n\x1a\n"


class ImageError(ValueError):
    """Bytes or a file the reader refuses. ``reason`` completes a sentence about the file ("is empty (0 bytes)");
    ``kind`` is one of "file", "empty", "bytes", "format", "pixels", "truncated", "corrupt"."""

    def __init__(self, reason: str, kind: str = "file"):
        super().__init__(reason)
        self.reason, self.kind = reason, kind


@dataclass(frozen=True)
class ImageLimits:
    """The most bytes a file may hold and the most pixels (width x height, from the header) an image may have; the
    hints say how to change them in the messages."""
    max_bytes: int = MAX_BYTES
    max_pixels: int = MAX_PIXELS
    bytes_hint: str = ""
    pixels_hint: str = ""

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_pixels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ImageLimits.{name} = {value!r}; expected a whole number >= 1")

    @classmethod
    def from_env(cls) -> "ImageLimits":
        """The defaults, or ``DML_CSR_MAX_IMAGE_MB`` (MiB) and ``DML_CSR_MAX_MEGAPIXELS`` where set."""
        mib = _env_number(ENV_BYTES, MAX_BYTES / 2**20)
        mpx = _env_number(ENV_PIXELS, MAX_PIXELS / 1e6)
        return cls(max(1, int(mib * 2**20)), max(1, int(mpx * 1e6)),
                   f" (the byte limit: {ENV_BYTES} or --max-image-mb changes it)",
                   f" (the pixel limit: {ENV_PIXELS} or --max-megapixels changes it)")


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0 or value > 1e9:
        raise ValueError(f"environment variable {name} = {raw[:40]!r}; expected a finite number > 0")
    return value


def truncation(data: bytes) -> Optional[str]:
    """Why an encoded JPEG or PNG is cut short, or None. OpenCV decodes a truncated JPEG without an error (libjpeg
    only warns on stderr and fills the rest grey), so the end markers are checked: a JPEG's end-of-image marker in
    its last 4 KiB (past any trailing bytes some cameras append), a PNG's IEND chunk at its end."""
    head, tail = bytes(data[:8]), bytes(data[-4096:])
    if head[:2] == _JPEG and b"\xff\xd9" not in tail:
        return "is truncated (no JPEG end-of-image marker)"
    if head == _PNG and b"IEND" not in tail[-16:]:
        return "is truncated (no PNG IEND chunk)"
    return _png_chunk_past_end(data) if head == _PNG else None


def _png_chunk_past_end(data: bytes) -> Optional[str]:
    """Why a PNG's chunks do not fit in its bytes, or None: OpenCV allocates the length a chunk declares before
    reading it, so a 2 KB file whose chunk declares 4 GB took 4 GB (found by fuzzing)."""
    pos, end = 8, len(data)
    while pos + 8 <= end:
        length = int.from_bytes(data[pos:pos + 4], "big")
        if pos + 12 + length > end:
            return f"is truncated (a PNG chunk at byte {pos} declares {length} bytes; {end - pos - 12} remain)"
        if bytes(data[pos + 4:pos + 8]) == b"IEND":
            return None
        pos += 12 + length
    return None


def _webp_size(data: bytes) -> Optional[tuple[int, int]]:
    """A WebP's canvas (width, height) from its first chunk (VP8X extended, VP8 lossy or VP8L lossless)."""
    chunk = bytes(data[12:16])
    if chunk == b"VP8X" and len(data) >= 30:
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    if chunk == b"VP8 " and len(data) >= 30 and bytes(data[23:26]) == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", bytes(data[26:30]))
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def _png_jpeg_size(data: bytes) -> Optional[tuple[str, int, int]]:
    """(format, width, height) from a PNG's IHDR or a JPEG's first start-of-frame; None for other bytes or a
    header that cannot be read so (Pillow then decides)."""
    if bytes(data[:8]) == _PNG and len(data) >= 24 and bytes(data[12:16]) == b"IHDR":
        return ("PNG",) + struct.unpack(">II", bytes(data[16:24]))
    if bytes(data[:2]) != _JPEG:
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
        (length,) = struct.unpack(">H", bytes(data[i + 2: i + 4]))
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a start-of-frame: the image size
            if i + 9 > len(data):
                return None
            height, width = struct.unpack(">HH", bytes(data[i + 5: i + 9]))
            return "JPEG", width, height
        i += 2 + length
    return None


def header_size(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) read from the header without decoding the pixels; raises :class:`ImageError`
    ("format" for bytes of no accepted format, "corrupt" for a header that cannot be read)."""
    found = _png_jpeg_size(data)
    if found is not None:
        return found
    if bytes(data[:4]) == b"RIFF" and bytes(data[8:12]) == b"WEBP":
        size = _webp_size(data)
        if size is None:
            raise ImageError("cannot be decoded (its WebP header cannot be read)", "corrupt")
        return ("WEBP",) + size
    from PIL import Image

    Image.init()
    prefix = bytes(data[:16])
    for fmt in _PIL_FORMATS:  # as Image.open, without its decompression-bomb check: the pixel limit is ours
        factory, accept = Image.OPEN[fmt]
        accepted = accept is None or accept(prefix)
        if isinstance(accepted, str) or not accepted:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                im = factory(io.BytesIO(data), "")  # reads the header only
            size = tuple(im.size)
            im.close()
        except Exception as e:  # a malformed header in a Pillow parser: struct.error, SyntaxError, OSError, ...
            why = str(e).splitlines()[0][:120] if str(e).strip() else type(e).__name__
            raise ImageError(f"cannot be decoded (its {fmt} header cannot be read: {why})", "corrupt") from None
        return (fmt,) + size
    raise ImageError(f"cannot be decoded (not {FORMATS})", "format")


def image_size(data: bytes) -> Optional[tuple[int, int]]:
    """(width, height) from the header of an image of any accepted format, without decoding; None when it has none
    this reader can read."""
    try:
        return header_size(data)[1:]
    except ImageError:
        return None


def _too_many_pixels(width: int, height: int, limits: ImageLimits) -> ImageError:
    return ImageError(f"is {width}x{height} ({width * height / 1e6:.1f} megapixels); expected at most "
                      f"{limits.max_pixels / 1e6:g} megapixels{limits.pixels_hint}", "pixels")


def decode_image(data: bytes, flags: int = cv2.IMREAD_COLOR, limits: Optional[ImageLimits] = None) -> np.ndarray:
    """Encoded image bytes -> pixels (``cv2.imdecode`` with ``flags``), every check of the module docstring first;
    raises :class:`ImageError`."""
    limits = ImageLimits.from_env() if limits is None else limits
    if len(data) == 0:
        raise ImageError("is empty (0 bytes)", "empty")
    if len(data) > limits.max_bytes:
        raise ImageError(_too_many_bytes(len(data), limits), "bytes")
    fmt, width, height = header_size(data)
    if width * height > limits.max_pixels:
        raise _too_many_pixels(width, height, limits)
    if width < 1 or height < 1:
        raise ImageError(f"cannot be decoded (its {fmt} header says {width}x{height} pixels)", "corrupt")
    cut = truncation(data)
    if cut:
        raise ImageError(cut, "truncated")
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error:
        img = None
    if img is None or img.size == 0:
        raise ImageError("cannot be decoded (corrupt or not an image)", "corrupt")
    if img.shape[0] * img.shape[1] > limits.max_pixels:  # a decoder that read another size than the header's
        raise _too_many_pixels(img.shape[1], img.shape[0], limits)
    return img


def _too_many_bytes(n: int, limits: ImageLimits) -> str:
    return (f"is {n} bytes ({n / 2**20:.1f} MiB); expected at most {limits.max_bytes} bytes "
            f"({limits.max_bytes / 2**20:.3g} MiB){limits.bytes_hint}")


def read_file(path: str, limits: Optional[ImageLimits] = None) -> bytes:
    """The bytes of the image file ``path``, never more than the byte limit read; raises :class:`ImageError` (kind
    "file", "empty" or "bytes") for a missing path, a directory, a broken link or loop, a pipe or device, an empty
    file or one over the limit."""
    limits = ImageLimits.from_env() if limits is None else limits
    try:
        st = os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ImageError("is a symbolic link loop", "file") from None
        if isinstance(e, FileNotFoundError):
            raise ImageError("is a broken symbolic link" if os.path.islink(path) else "is missing", "file") from None
        raise ImageError(f"cannot be read ({e.strerror or e})", "file") from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageError("is a directory", "file")
    if not stat.S_ISREG(st.st_mode):
        raise ImageError("is not a regular file (a pipe, socket or device)", "file")
    if st.st_size > limits.max_bytes:
        raise ImageError(_too_many_bytes(st.st_size, limits), "bytes")
    try:
        with open(path, "rb") as f:
            data = f.read(limits.max_bytes + 1)  # a file that grew since: still never more than the limit
    except OSError as e:
        raise ImageError(f"cannot be read ({e.strerror or e})", "file") from None
    if not data:
        raise ImageError("is empty (0 bytes)", "empty")
    if len(data) > limits.max_bytes:
        raise ImageError(_too_many_bytes(len(data), limits), "bytes")
    return data


def imread_checked(path: str, flags: int = cv2.IMREAD_COLOR, error: type[Exception] = ValueError,
                   what: str = "image file", limits: Optional[ImageLimits] = None) -> np.ndarray:
    """Read and decode the image file ``path`` (:func:`read_file`, :func:`decode_image`); raises ``error`` with one
    line naming ``path`` and the reason when it is refused.

    Args:
        flags: cv2 read flags (IMREAD_COLOR gives (H, W, 3) BGR uint8, IMREAD_GRAYSCALE (H, W), IMREAD_UNCHANGED as is).
        error: the exception class to raise (each caller's own, e.g. BadSampleError, PrepareError).
        what: how the message names the file ("image file", "label file", ...).
        limits: the byte and pixel limits (default: :meth:`ImageLimits.from_env`).
    """
    try:
        limits = ImageLimits.from_env() if limits is None else limits
        return decode_image(read_file(path, limits), flags, limits)
    except ImageError as e:
        raise error(f"{what} '{path}' {e.reason}") from None


def to_bgr(image, channel_order: str = "RGB") -> np.ndarray:
    """Any supported image as (H, W, 3) uint8 BGR.

    Args:
        image: a file path (read by :func:`imread_checked`: an error names a missing, empty, oversized, truncated or
            undecodable file); a PIL image (any mode; turned by its EXIF orientation, as OpenCV turns a file); or a
            numpy array (H, W) grey, (H, W, 3) or (H, W, 4) uint8 whose colour order is ``channel_order`` (alpha is
            dropped).
        channel_order: order of a numpy array's channels: "RGB" (PIL, matplotlib, imageio) or "BGR" (cv2.imread).
    """
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        if not os.path.lexists(path):
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
