"""CelebAMask-HQ: part masks painted in order, the CelebA partition, mask sizes checked."""
import os

import cv2
import numpy as np
import pytest
from helpers.raw_layouts import load_all, write_celebamask

from dml_csr.data.labels import get_spec
from dml_csr.data.prepare import celebamask_hq
from dml_csr.data.prepare.check import check_root
from dml_csr.data.prepare.common import PrepareError


def test_celebamask_hq(tmp_path):
    raw, out = str(tmp_path / "raw"), str(tmp_path / "out")
    write_celebamask(raw)
    info = celebamask_hq.prepare(raw, out, workers=1, progress=False)
    assert info["counts"] == {"train": 2, "val": 1, "test": 1}
    spec = get_spec("celebamask_hq")
    lab = cv2.imread(os.path.join(out, "train", "labels", "0.png"), cv2.IMREAD_UNCHANGED)
    assert lab.shape == (512, 512) and lab[0, 0] == spec.index("hair")
    assert lab[120, 200] == spec.index("hair")  # hair painted after skin wins
    assert lab[210, 320] == spec.index("l_eye") and lab[300, 300] == spec.index("skin") and lab[450, 450] == 0
    assert cv2.imread(os.path.join(out, "train", "images", "0.jpg")).shape == (512, 512, 3)
    assert open(os.path.join(out, "train_list.txt")).read() == "images/0.jpg labels/0.png\nimages/3.jpg labels/3.png\n"
    assert info["pixel_histogram"]["l_eye"] == 3 * 30 * 50  # every face but idx 1 has the eye
    assert check_root(out, "celebamask_hq") == []
    load_all(out, "celebamask_hq")
    # the partition file decides when given
    with open(os.path.join(raw, "list_eval_partition.txt"), "w") as f:
        f.write("000101.jpg 2\n170001.jpg 0\n190001.jpg 1\n000006.jpg 0\n")
    info2 = celebamask_hq.prepare(raw, str(tmp_path / "out2"), workers=1, progress=False)
    assert info2["counts"] == {"train": 2, "val": 1, "test": 1}
    assert open(os.path.join(tmp_path, "out2", "test_list.txt")).read().startswith("images/0.jpg")


def test_celebamask_bad_mask_size_is_named(tmp_path):
    raw = str(tmp_path / "raw")
    write_celebamask(raw, orig=(1,))
    cv2.imwrite(os.path.join(raw, "CelebAMask-HQ-mask-anno", "0", "00000_nose.png"), np.zeros((100, 100), np.uint8))
    with pytest.raises(PrepareError, match=r"00000_nose.png' is 100x100; expected 512x512"):
        celebamask_hq.prepare(raw, str(tmp_path / "out"), workers=1, progress=False)
