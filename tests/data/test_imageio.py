"""Reading image files: the size from a PNG or JPEG header without decoding the pixels."""
import cv2
import numpy as np
import pytest

from dml_csr.data.imageio import image_size


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_image_size_reads_the_header(ext):
    ok, buf = cv2.imencode(ext, np.zeros((37, 53, 3), np.uint8))
    assert image_size(buf.tobytes()) == (53, 37)
    assert image_size(b"BM not a png") is None and image_size(b"\xff\xd8\xff") is None
