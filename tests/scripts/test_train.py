"""scripts/train.py: the run it writes (an RNN-G run here; DML-CSR runs are tests/test_trainer.py's), and a config error
that stops it before any work."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from helpers import ROOT

from dml_csr.checkpoint import RunPaths, load_checkpoint


def test_train_script_writes_an_rnn_g_run(rnn_g_run):
    tmp, _, _, best = rnn_g_run
    ckpt = load_checkpoint(best)
    assert ckpt["meta"]["model_name"] == "rnn_g" and ckpt["meta"]["num_classes"] == 11
    assert ckpt["config"]["model"]["name"] == "rnn_g" and ckpt["config"]["model"]["rnn_channels"] == 8
    assert "rnn_weight" in ckpt["model"] and "gate_head.weight" in ckpt["model"]
    records = [json.loads(line) for line in open(RunPaths(str(tmp / "runs" / "rg")).metrics)]
    loss = next(r for r in records if r["type"] == "train")["loss"]
    assert {"parsing_ce", "coarse_ce", "gate_ce", "total"} <= set(loss)  # the paper's three losses
    assert all(np.isfinite(v) and v > 0 for v in loss.values())
    assert loss["total"] == pytest.approx(loss["parsing_ce"] + loss["coarse_ce"] + loss["gate_ce"], rel=1e-5)
    # the TensorBoard image grid was written although RNN-G returns maps that are not class maps in training
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp / "runs" / "rg" / "tb"))


def test_a_config_error_stops_before_work_with_one_line(tmp_path):
    """A typo stops scripts/train.py with one clear line and exit status 2, before anything is written; in a fresh
    interpreter, as a user runs it."""
    p = tmp_path / "typo.yaml"
    p.write_text(yaml.safe_dump({"_base_": os.path.join(ROOT, "configs", "synthetic_rnn_g.yaml"),
                                 "trian": {"epochs": 1}, "output_dir": str(tmp_path / "runs")}))
    r = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "train.py"), "--config", str(p)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "unknown key 'trian'" in lines[0] and "typo.yaml" in lines[0]
    assert not os.path.exists(tmp_path / "runs")


@pytest.mark.parametrize("value", ["0", "-1", "nan", "1.5"])
def test_max_epochs_that_is_not_a_whole_number_from_1_is_one_line(value):
    from helpers.scripts import run_script

    r = run_script("train", "--config", os.path.join(ROOT, "configs", "synthetic_rnn_g.yaml"), "--max-epochs", value)
    assert r.returncode == 2 and r.stderr == f"error: --max-epochs = '{value}'; expected a whole number >= 1\n"
