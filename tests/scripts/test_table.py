"""scripts/table.py: a run's best validation and its test evaluation as Markdown and CSV, and a per-class chart."""
import json
import os

import cv2
import pytest
from helpers.scripts import run_script


def test_tables_of_a_run_with_its_test_evaluation(rnn_g_run, tmp_path):
    tmp, _, sets, best = rnn_g_run
    run_dir = os.path.dirname(best)
    r = run_script("evaluate", "--config", os.path.join(run_dir, "config.yaml"), "--checkpoint", best, "--split",
                   "test", "--out", os.path.join(run_dir, "eval_test"), "--overwrite")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "tables"
    r = run_script("table", run_dir, "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(out)) == ["per_class_f1.png", "table.csv", "table.md"]
    vals = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl")) if '"val"' in line]
    top = max(vals, key=lambda v: v["mean_f1"])  # the synthetic config selects by mean F1
    test = json.load(open(os.path.join(run_dir, "eval_test", "metrics.json")))["scores"]
    rows = [line.split(",") for line in open(out / "table.csv").read().splitlines()]
    head = rows[0]
    assert head[:3] == ["run", "split", "epoch"] and head[-2:] == ["overall_F1", "mIoU"]
    val_row, test_row = rows[1], rows[2]
    assert val_row[:3] == ["rg", "val", str(top["epoch"])] and test_row[:2] == ["rg", "test"]
    for row, scores in ((val_row, top), (test_row, test)):
        assert float(row[head.index("mean_F1")]) == pytest.approx(100 * scores["mean_f1"], abs=0.006)
        assert float(row[head.index("mIoU")]) == pytest.approx(100 * scores["miou"], abs=0.006)
        assert float(row[head.index("nose")]) == pytest.approx(100 * scores["per_class"]["nose"]["f1"], abs=0.006)
    md = open(out / "table.md").read()
    assert "| rg (epoch" in md and "eval_test/metrics.json" in md
    assert cv2.imread(str(out / "per_class_f1.png")) is not None
    r = run_script("table", str(tmp_path), "--out", str(out))
    assert r.returncode == 2 and "not a run directory" in r.stderr
