"""Reading image files: the size from a PNG or JPEG header without decoding the pixels; images of any kind as BGR,
turned by their EXIF orientation."""
import cv2
import numpy as np
import pytest

from dml_csr.data.imageio import image_size


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_image_size_reads_the_header(ext):
    ok, buf = cv2.imencode(ext, np.zeros((37, 53, 3), np.uint8))
    assert image_size(buf.tobytes()) == (53, 37)
    assert image_size(b"BM not a png") is None and image_size(b"\xff\xd8\xff") is None


def test_a_pil_image_is_turned_by_its_exif_orientation_as_a_file_is(tmp_path):
    """A phone photo stored sideways with EXIF orientation 6 (turn 90 degrees clockwise to view): OpenCV turns the
    file, and a PIL image of it is turned the same way, so labels and overlays of both have the photo's shape."""
    from PIL import Image

    from dml_csr.data.imageio import to_bgr

    stored = np.zeros((40, 60, 3), np.uint8)
    stored[:, :20] = 255  # the stored left third is white: viewed, the top third
    exif = Image.Exif()
    exif[0x0112] = 6
    path = str(tmp_path / "sideways.png")
    Image.fromarray(stored).save(path, exif=exif)
    from_file, from_pil = to_bgr(path), to_bgr(Image.open(path))
    assert from_file.shape == from_pil.shape == (60, 40, 3)
    assert (from_pil[:18] == 255).all() and (from_pil[22:] == 0).all()
    np.testing.assert_array_equal(from_pil, from_file)


# ------------------------------------------------------------------------------------------------ the one reader
import io  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

from helpers import ROOT, bombs  # noqa: E402
from helpers.tiny_checkpoint import subprocess_env  # noqa: E402

# the package and the tests' helpers (the child measures its own peak with helpers.peak_rss)
CHILD_ENV = dict(subprocess_env(), PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "tests")]))

from dml_csr.data.imageio import (ENV_BYTES, ENV_PIXELS, MAX_PIXELS, ImageError, ImageLimits,  # noqa: E402
                                  decode_image, header_size, imread_checked)

PIXEL_HINT = "(the pixel limit: DML_CSR_MAX_MEGAPIXELS or --max-megapixels changes it)"


def _encoded(fmt: str, img: np.ndarray) -> bytes:
    """``img`` (BGR) as a file of ``fmt``: OpenCV's encoders, Pillow's for GIF."""
    if fmt == "gif":
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(img[..., ::-1]).convert("P").save(buf, format="GIF")
        return buf.getvalue()
    ok, buf = cv2.imencode("." + fmt, img)
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize("fmt", ["png", "jpg", "webp", "tif", "gif", "bmp", "ppm"])
def test_every_format_gives_its_size_from_the_header_and_decodes(fmt):
    img = np.random.default_rng(1).integers(0, 255, (29, 41, 3), np.uint8)
    data = _encoded(fmt, img)
    assert header_size(data)[1:] == (41, 29)
    out = decode_image(data)
    assert out.shape == (29, 41, 3)
    if fmt in ("png", "tif", "bmp", "ppm"):  # lossless: the pixels themselves
        np.testing.assert_array_equal(out, img)


def test_bombs_of_every_format_are_refused_from_their_header_in_a_process_under_1_gb(tmp_path):
    """The bombs (each a few hundred bytes to 400 KB declaring 16383 x 16383 or 20000 x 20000, which OpenCV would
    decode into 0.8-1.2 GB) are refused before decoding, each in one line naming the file and the limit; the child
    process reading all of them stays under 1 GB resident (measured there: ru_maxrss)."""
    paths = []
    for fmt in bombs.FORMATS:
        paths.append(str(tmp_path / f"bomb.{fmt}"))
        with open(paths[-1], "wb") as f:
            f.write(bombs.bomb(fmt))
    code = ("import json, sys\n"
            "from helpers.peak_rss import peak_rss_mb\n"
            "from dml_csr.data.imageio import imread_checked\n"
            "errors = []\n"
            "for p in sys.argv[1:]:\n"
            "    try:\n"
            "        imread_checked(p)\n"
            "        errors.append(None)\n"
            "    except ValueError as e:\n"
            "        errors.append(str(e))\n"
            "print(json.dumps({'errors': errors, 'peak_mb': peak_rss_mb()}))")
    r = subprocess.run([sys.executable, "-c", code, *paths], capture_output=True, text=True, cwd=ROOT,
                       env=CHILD_ENV, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["peak_mb"] < 1024, out
    for path, err in zip(paths, out["errors"]):
        side = bombs.WEBP_SIDE if path.endswith(".webp") else bombs.SIDE
        assert err == (f"image file '{path}' is {side}x{side} ({side * side / 1e6:.1f} megapixels); expected at most "
                       f"{MAX_PIXELS / 1e6:g} megapixels {PIXEL_HINT}")


def test_the_limits_are_settable_and_named(tmp_path, monkeypatch):
    path = str(tmp_path / "face.png")
    cv2.imwrite(path, np.zeros((30, 40, 3), np.uint8))
    size = os.path.getsize(path)
    monkeypatch.setenv(ENV_PIXELS, "0.001")  # 1000 pixels
    with pytest.raises(ValueError, match=r"face.png' is 40x30 \(0.0 megapixels\); expected at most 0.001 megapixels "
                                         r"\(the pixel limit: DML_CSR_MAX_MEGAPIXELS"):
        imread_checked(path)
    monkeypatch.delenv(ENV_PIXELS)
    monkeypatch.setenv(ENV_BYTES, str((size - 1) / 2**20))
    with pytest.raises(ValueError, match=rf"face.png' is {size} bytes \(0.0 MiB\); expected at most {size - 1} bytes"
                                         r" .*\(the byte limit: DML_CSR_MAX_IMAGE_MB or --max-image-mb changes it\)"):
        imread_checked(path)
    monkeypatch.setenv(ENV_BYTES, "nan")
    with pytest.raises(ValueError, match=r"^environment variable DML_CSR_MAX_IMAGE_MB = 'nan'; expected a finite "
                                         r"number > 0$"):
        imread_checked(path)
    monkeypatch.delenv(ENV_BYTES)
    assert imread_checked(path).shape == (30, 40, 3)
    # given by the caller: no environment involved, and the caller's own error class
    with pytest.raises(KeyError, match=r"is 40x30 \(0.0 megapixels\); expected at most 0.001199 megapixels"):
        imread_checked(path, error=KeyError, limits=ImageLimits(max_pixels=1199))
    with pytest.raises(ValueError, match=r"ImageLimits.max_bytes = 0; expected a whole number >= 1"):
        ImageLimits(max_bytes=0)


def test_empty_special_and_oversized_files_are_named_without_being_read(tmp_path):
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "folder.png").mkdir()
    os.symlink("loop.png", tmp_path / "loop.png")
    os.symlink("nowhere.png", tmp_path / "dangling.png")
    os.mkfifo(tmp_path / "pipe.png")  # opening it would wait for a writer forever
    with open(tmp_path / "huge.png", "wb") as f:  # 7 GB, sparse: reading it whole would end in a MemoryError
        f.write(good.read_bytes())
        f.truncate(7 << 30)
    expected = {"empty.jpg": "is empty (0 bytes)", "folder.png": "is a directory", "loop.png": "is a symbolic link loop",
                "dangling.png": "is a broken symbolic link", "missing.png": "is missing",
                "pipe.png": "is not a regular file (a pipe, socket or device)",
                "huge.png": f"is {7 << 30} bytes (7168.0 MiB); expected at most {256 << 20} bytes (256 MiB)"}
    for name, reason in expected.items():
        with pytest.raises(ValueError) as e:
            imread_checked(str(tmp_path / name))
        assert str(e.value).startswith(f"image file '{tmp_path / name}' {reason}"), str(e.value)
        assert "\n" not in str(e.value)


@pytest.mark.parametrize("data,kind,reason", [
    (b"", "empty", "is empty (0 bytes)"),
    (b"hello, not a picture", "format", "cannot be decoded (not a JPEG, PNG, WebP, TIFF, GIF, BMP or PPM/PGM file)"),
    (b"BM" + b"\0" * 10, "corrupt", "cannot be decoded (its BMP header cannot be read"),
    (b"RIFF\0\0\0\0WEBPVP8Z", "corrupt", "cannot be decoded (its WebP header cannot be read)"),
    (b"P6\n0 5\n255\n", "corrupt", "cannot be decoded (its PPM header"),
], ids=["empty", "text", "bmp-header", "webp-header", "zero-width"])
def test_bytes_that_are_not_an_image_are_refused_with_the_reason(data, kind, reason):
    with pytest.raises(ImageError) as e:
        decode_image(data)
    assert e.value.kind == kind and str(e.value).startswith(reason), str(e.value)


def test_a_png_chunk_declaring_more_bytes_than_the_file_holds_is_refused_before_opencv(tmp_path):
    """Found by tests/helpers/fuzz.py: a 2 KB PNG of 31 x 23 whose IDAT chunk declares 4 GB made OpenCV allocate
    them (4.1 GB resident) before failing. The chunks are walked first: one line naming the chunk, and the child
    process that reads the file stays under 1 GB resident."""
    data = bytearray(cv2.imencode(".png", np.zeros((23, 31, 3), np.uint8))[1].tobytes())
    at = data.index(b"IDAT") - 4
    data[at:at + 4] = (0xFF7F087D).to_bytes(4, "big")
    path = tmp_path / "chunk.png"
    path.write_bytes(bytes(data))
    code = ("import json, sys\n"
            "from helpers.peak_rss import peak_rss_mb\n"
            "from dml_csr.data.imageio import imread_checked\n"
            "try:\n"
            "    imread_checked(sys.argv[1]); err = None\n"
            "except ValueError as e:\n"
            "    err = str(e)\n"
            "print(json.dumps({'error': err, 'peak_mb': peak_rss_mb()}))")
    r = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, cwd=ROOT,
                       env=CHILD_ENV, timeout=120)
    out = json.loads(r.stdout)
    assert out["error"] == (f"image file '{path}' is truncated (a PNG chunk at byte {at} declares {0xFF7F087D} "
                            f"bytes; {len(data) - at - 12} remain)")
    assert out["peak_mb"] < 1024, out
