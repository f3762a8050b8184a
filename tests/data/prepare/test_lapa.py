"""LaPa: resume, idempotence and the CLI with worker processes; every bad sample reported."""
import os

import cv2
import numpy as np
import pytest
from helpers.raw_layouts import load_all, run_cli, write_lapa

from dml_csr.data.prepare import lapa
from dml_csr.data.prepare.check import check_root
from dml_csr.data.prepare.common import PrepareError


def test_lapa_prepare_resume_idempotent_and_cli(tmp_path):
    raw, out = str(tmp_path / "raw"), str(tmp_path / "out")
    write_lapa(raw)
    info = lapa.prepare(raw, out, workers=1, progress=False)
    assert info["counts"] == {"train": 2, "val": 2, "test": 2}
    assert info["pixel_histogram"]["left_eye"] == 6 * 24
    assert os.path.isfile(os.path.join(out, "val", "landmarks", "val1.txt"))
    snapshot = {p: open(os.path.join(out, p), "rb").read() for p in ("info.json", "train_list.txt", "label_names.txt")}
    # resume: remove one sample's outputs and rerun through the CLI with two worker processes
    os.remove(os.path.join(out, "test", "labels", "test1.png"))
    mtime = os.path.getmtime(os.path.join(out, "train", "images", "train0.jpg"))
    r = run_cli("prepare_lapa.py", raw, out, "--workers", "2", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert os.path.isfile(os.path.join(out, "test", "labels", "test1.png"))
    assert os.path.getmtime(os.path.join(out, "train", "images", "train0.jpg")) == mtime  # done samples untouched
    assert {p: open(os.path.join(out, p), "rb").read() for p in snapshot} == snapshot  # idempotent
    assert check_root(out, "lapa") == []
    load_all(out, "lapa")


def test_lapa_reports_every_bad_sample(tmp_path):
    raw = str(tmp_path / "raw")
    write_lapa(raw)
    os.remove(os.path.join(raw, "train", "landmarks", "train0.txt"))
    cv2.imwrite(os.path.join(raw, "val", "labels", "val1.png"), np.full((30, 40), 12, np.uint8))
    with pytest.raises(PrepareError, match="2 of 6 samples failed"):
        lapa.prepare(raw, str(tmp_path / "out"), workers=1, progress=False)
    r = run_cli("prepare_lapa.py", raw, str(tmp_path / "out"), "--workers", "1", "--no-progress")
    assert r.returncode == 1
    assert "train0.txt' is missing" in r.stderr and "label values [12]" in r.stderr


def test_names_with_spaces_are_refused_as_the_lists_could_not_hold_them(tmp_path):
    raw = str(tmp_path / "raw")
    write_lapa(raw)
    for kind, ext in (("images", "jpg"), ("labels", "png"), ("landmarks", "txt")):
        os.rename(os.path.join(raw, "val", kind, f"val0.{ext}"), os.path.join(raw, "val", kind, f"val 0.{ext}"))
    with pytest.raises(PrepareError, match=r"1 sample name\(s\) contain whitespace.*'val 0'"):
        lapa.prepare(raw, str(tmp_path / "out"), workers=1, progress=False)
