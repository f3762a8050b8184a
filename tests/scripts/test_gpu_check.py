"""scripts/gpu_check.py in its dry mode: every stage runs on the CPU with tiny models and lands in one JSON (the
GPU figures need a GPU; the wiring does not)."""
import json

import pytest
import torch
from helpers.scripts import run_script


def test_dry_run_writes_every_stage(tmp_path):
    out = tmp_path / "dry.json"
    r = run_script("gpu_check", "--dry-run", "--out", str(out))
    rec = json.loads(out.read_text())
    assert r.returncode == 0, {k: v.get("error") for k, v in rec.items() if isinstance(v, dict)}
    assert rec["dry_run"] is True and set(rec["targets"]) == {"inference_ms_per_image_bf16_b32", "train_images_per_s"}
    assert all(rec[k]["ok"] for k in ("tests", "train", "benchmarks", "profile"))
    rows = rec["train"]["rows"]
    assert [row["variant"] for row in rows] == ["fp32", "bf16", "bf16 + channels_last"]
    for row in rows:
        assert row["images_per_s"] > 0 and all(torch.isfinite(torch.tensor(row["first_losses"])))
    bench = rec["benchmarks"]["benchmark"]
    assert {"fp32 eager", "bf16 + channels_last", "train fp32"} <= {row["path"] for row in bench["rows"]}
    assert rec["benchmarks"]["inference_ms_per_image_bf16"] > 0
    assert "Self CPU" in rec["profile"]["inference_top_ops"]
    assert "test_cuda.py" in rec["tests"]["tail"]  # collected


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_the_real_run_says_so(tmp_path):
    r = run_script("gpu_check", "--out", str(tmp_path / "x.json"))
    assert r.returncode == 2 and "no CUDA device here" in r.stderr and "--dry-run" in r.stderr
