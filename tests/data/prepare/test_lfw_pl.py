"""LFW-PL: zero-padded names and colour maps to classes."""
import os

import numpy as np
import pytest
from helpers.raw_layouts import load_all, write_lfw

from dml_csr.data.prepare import lfw_pl
from dml_csr.data.prepare.check import check_root
from dml_csr.data.prepare.common import PrepareError


def test_lfw_pl_pads_numbers_and_maps_colours(tmp_path):
    raw, out = str(tmp_path / "raw"), str(tmp_path / "out")
    write_lfw(raw)
    info = lfw_pl.prepare(raw, out, workers=1, progress=False)
    assert info["counts"] == {"train": 2, "val": 1, "test": 1}
    assert "images/Aaron_Eckhart_0001.jpg" in open(os.path.join(out, "train_list.txt")).read()
    assert os.path.isfile(os.path.join(out, "val", "labels", "Ann_Lee_0012.png"))
    assert info["pixel_histogram"] == {"background": 4 * (625 - 225 - 75), "skin": 4 * 225, "hair": 4 * 75}
    assert check_root(out, "lfw_pl") == []
    load_all(out, "lfw_pl")
    with pytest.raises(PrepareError, match="no dominant colour"):
        lfw_pl.colours_to_labels(np.full((2, 2, 3), 255, np.uint8), "x.ppm")
