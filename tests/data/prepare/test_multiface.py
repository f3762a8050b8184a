"""Multi-Face-style roots: rescaled by the long side to 512 and zero-padded to 512x512, padding as background."""
import os

import cv2
import numpy as np
import pytest

from dml_csr.data.prepare import multiface
from dml_csr.data.prepare.check import check_root
from dml_csr.data.prepare.common import PrepareError


def test_images_and_labels_are_scaled_by_the_long_side_and_padded(tmp_path):
    raw, out = tmp_path / "raw", str(tmp_path / "out")
    for split, (h, w) in (("train", (300, 600)), ("val", (256, 128)), ("test", (1024, 512))):
        for kind in ("images", "labels"):
            (raw / split / kind).mkdir(parents=True)
        image = np.full((h, w, 3), 200, np.uint8)
        label = np.zeros((h, w), np.uint8)
        label[: h // 2, : w // 2] = 1  # skin in the top-left quarter
        label[h // 2:, w // 2:] = 2  # hair in the bottom-right one
        cv2.imwrite(str(raw / split / "images" / "a.jpg"), image)
        cv2.imwrite(str(raw / split / "labels" / "a.png"), label)
    info = multiface.prepare(str(raw), out, workers=1, progress=False)
    assert info["counts"] == {"train": 1, "val": 1, "test": 1}
    assert check_root(out, "multiface") == []
    lab = cv2.imread(os.path.join(out, "train", "labels", "a.png"), cv2.IMREAD_UNCHANGED)
    img = cv2.imread(os.path.join(out, "train", "images", "a.jpg"))
    assert lab.shape == (512, 512) and img.shape == (512, 512, 3)
    # 600 x 300 -> 512 x 256: the bottom half is padding, background and black
    assert (lab[256:] == 0).all() and img[260:].max() < 8 and img[:250, :500].min() > 150
    assert (lab[:128, :256] == 1).all() and (lab[128:256, 256:] == 2).all()
    val = cv2.imread(os.path.join(out, "val", "labels", "a.png"), cv2.IMREAD_UNCHANGED)
    assert (val[:, 256:] == 0).all() and (val[:256, :128] == 1).all()  # 128 x 256 -> 256 x 512, padded right
    with pytest.raises(PrepareError, match="holds no"):
        multiface.collect(str(tmp_path / "empty"))
