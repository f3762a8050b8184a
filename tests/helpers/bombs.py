"""Image bombs: files of each format whose header declares a huge image (16383 x 16383 for WebP, 20000 x 20000 for
the others) around a few bytes of pixel data. Written at their declared size, never decoded here."""
from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np

SIDE = 20000
WEBP_SIDE = 16383  # the largest side a WebP can declare
FORMATS = ("png", "jpg", "webp", "tif", "gif", "bmp", "ppm")


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def zlib_zeros(n: int, block: int = 1 << 20) -> bytes:
    """A zlib stream of ``n`` zero bytes, made without compressing them all: one fully flushed deflate block of
    ``block`` zeros repeated (a full flush drops the back references, so the blocks are alike), the rest, an empty
    final block and the Adler-32 of the whole."""
    co = zlib.compressobj(9)
    first = co.compress(bytes(block)) + co.flush(zlib.Z_FULL_FLUSH)  # the 2-byte zlib header, then a block
    again = co.compress(bytes(block)) + co.flush(zlib.Z_FULL_FLUSH)
    count, rest = divmod(n, block)
    tail = co.compress(bytes(rest)) + co.flush(zlib.Z_FULL_FLUSH) if rest else b""
    adler, chunk = 1, bytes(block)
    for _ in range(count):
        adler = zlib.adler32(chunk, adler)
    adler = zlib.adler32(bytes(rest), adler)
    body = first + again * (count - 1) if count else first[:2]
    return body + tail + b"\x03\x00" + struct.pack(">I", adler)


def png(side: int = SIDE) -> bytes:
    """8-bit grey, every row of zeros compressed (about 400 KB for 20000 x 20000), CRCs right."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    rows = zlib_zeros((1 + side) * side)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", rows) + _chunk(b"IEND", b"")


def _encoded(ext: str, params=()) -> bytearray:
    ok, buf = cv2.imencode(ext, np.zeros((16, 16, 3), np.uint8), list(params))
    assert ok
    return bytearray(buf.tobytes())


def jpg(side: int = SIDE) -> bytes:
    """A 16 x 16 baseline JPEG whose start-of-frame says ``side`` x ``side``."""
    data = _encoded(".jpg")
    sof = data.index(b"\xff\xc0")
    data[sof + 5: sof + 9] = struct.pack(">HH", side, side)
    return bytes(data)


def webp(side: int = WEBP_SIDE) -> bytes:
    """A lossless (VP8L) WebP whose header says ``side`` x ``side``."""
    data = _encoded(".webp", (cv2.IMWRITE_WEBP_QUALITY, 101))
    at = data.index(b"VP8L") + 9
    bits = struct.unpack("<I", data[at: at + 4])[0]
    bits = (bits & ~((1 << 28) - 1)) | (side - 1) | ((side - 1) << 14)
    data[at: at + 4] = struct.pack("<I", bits)
    return bytes(data)


def tif(side: int = SIDE) -> bytes:
    """A little-endian 8-bit grey TIFF of ``side`` x ``side`` in one deflate strip of zeros."""
    strip = zlib_zeros(side * side)
    tags = [(256, 4, side), (257, 4, side), (258, 3, 8), (259, 3, 8), (262, 3, 1), (273, 4, 8 + 2 + 9 * 12 + 4),
            (277, 3, 1), (278, 4, side), (279, 4, len(strip))]
    ifd = struct.pack("<H", len(tags)) + b"".join(struct.pack("<HHII", t, k, 1, v) for t, k, v in tags)
    return b"II*\0" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + strip


def gif(side: int = SIDE) -> bytes:
    """A GIF whose logical screen and first image are ``side`` x ``side``, with a few codes of LZW data."""
    head = b"GIF89a" + struct.pack("<HHBBB", side, side, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    image = b"," + struct.pack("<HHHHB", 0, 0, side, side, 0) + b"\x02\x02\x44\x01\x00"
    return head + image + b";"


def bmp(side: int = SIDE) -> bytes:
    """An 8-bit RLE BMP of ``side`` x ``side`` whose whole bitmap is one end-of-bitmap code."""
    palette = b"\0\0\0\0" * 256
    rle = b"\x00\x01"
    offset = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, side, side, 1, 8, 1, len(rle), 2835, 2835, 256, 0)
    return b"BM" + struct.pack("<IHHI", offset + len(rle), 0, 0, offset) + info + palette + rle


def ppm(side: int = SIDE) -> bytes:
    """A binary PPM header for ``side`` x ``side`` and a few pixels."""
    return f"P6\n{side} {side}\n255\n".encode() + b"\0" * 48


def bomb(fmt: str) -> bytes:
    """The bomb of format ``fmt`` (one of :data:`FORMATS`)."""
    return globals()[fmt]()
