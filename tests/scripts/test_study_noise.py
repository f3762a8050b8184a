"""scripts/study_noise.py --quick: the reduced grid trains, scores on clean labels and writes its table and plot."""
import os

import cv2
import pytest
from helpers.scripts import run_script


@pytest.mark.slow
def test_the_quick_grid_writes_its_table_and_plot(tmp_path):
    r = run_script("study_noise", "--out", str(tmp_path), "--quick")
    assert r.returncode == 0, r.stderr
    assert "| 0 % |" in r.stdout and "| 30 % |" in r.stdout
    rows = open(tmp_path / "noise_study.csv").read().splitlines()
    assert rows[0] == "noise,method,seed0,mean" and len(rows) == 5
    assert all(0.0 <= float(x) <= 1.0 for row in rows[1:] for x in row.split(",")[2:])
    assert {"phase 1", "phase 1 + CSR"} == {row.split(",")[1] for row in rows[1:]}
    assert cv2.imread(str(tmp_path / "noise_study.png")) is not None
    runs = sorted(os.listdir(tmp_path / "runs"))
    assert runs == ["noise00_seed0_csr", "noise00_seed0_phase1", "noise30_seed0_csr", "noise30_seed0_phase1"]
