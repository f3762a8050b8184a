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
