"""dml_csr/training/noise_study.py beyond what scripts/study_noise.py --quick shows (tests/scripts/test_study_noise.py)."""
import os

import pytest
from helpers import ROOT

from dml_csr.training import noise_study

CONFIG = os.path.join(ROOT, "configs", "synthetic_dml_csr_tiny.yaml")


def test_a_training_stopped_by_a_signal_stops_the_study_without_scoring_or_a_table(tmp_path, monkeypatch):
    calls = []

    def stopped(cfg, progress):
        calls.append(cfg.name)
        return {"stopped": True}

    monkeypatch.setattr(noise_study, "train", stopped)
    monkeypatch.setattr(noise_study, "_test_mean_f1", lambda *a: pytest.fail("a stopped run was scored"))
    with pytest.raises(InterruptedError, match="noise00_seed0_phase1: training stopped by a signal"):
        noise_study.run_study(str(tmp_path), CONFIG, noise_study.QUICK)
    assert calls == ["noise00_seed0_phase1"]
    assert not any(os.path.exists(tmp_path / f"noise_study.{ext}") for ext in ("md", "csv", "png"))
