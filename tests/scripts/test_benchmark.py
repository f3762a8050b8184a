"""scripts/benchmark.py on a model that is not the paper's: no paper figures, RNN-G's training-only heads counted."""
import json
import os

from helpers import ROOT
from helpers.scripts import run_script

CONFIG = os.path.join(ROOT, "configs", "synthetic_rnn_g.yaml")


def test_benchmark_script_is_model_agnostic(tmp_path):
    out = tmp_path / "bench.json"
    r = run_script("benchmark", "--config", CONFIG, "--set", "data.root=unused", "model.rnn_channels=8", "model.two_stage=false",
                   "--size", "32", "--repeats", "1", "--warmup", "0", "--train", "--threads", "1", "--json", str(out))
    assert r.returncode == 0, r.stderr
    rec = json.load(open(out))
    assert rec["model"] == "rnn_g" and rec["paper"] is None and "paper:" not in r.stdout
    # the inference model has no coarse-label or gate head: exactly their weights fewer (8 // 4 = 2 hidden channels)
    heads = (2 * 11 * 9 + 11) + (2 + 1)
    assert rec["params_train"] - rec["params_inference"] == heads
    assert rec["flops_inference"] > 0
    paths = {row["path"] for row in rec["rows"]}
    assert {"fp32 eager", "train fp32"} <= paths
