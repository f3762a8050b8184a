"""The run's metrics writer: metrics.jsonl records counted from 1, TensorBoard scalars every log_every steps, and
nothing at all on a process that is not the main one."""
import json
import os

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dml_csr.checkpoint import RunPaths
from dml_csr.training.run_log import RunLog

SCORES = {"mean_f1": 0.5, "miou": 0.4, "miou_fg": 0.3, "pixel_accuracy": 0.9, "groups": {"eyes": 0.2},
          "per_class": {"background": {"f1": 0.9, "iou": 0.8}, "skin": {"f1": 0.1, "iou": 0.05}}, "extra": 1}


def test_records_and_scalars(tmp_path):
    paths = RunPaths(str(tmp_path))
    log = RunLog(paths, enabled=True, log_every=2)
    for step in (1, 2, 3, 4):
        log.step(step, {"total": float(step), "parsing_ce": 0.5}, lr=0.1 / step)
    log.epoch(0, cycle=0, step=4, lr=0.025, loss={"total": 2.5}, seconds=1.0)
    log.validation("ensemble_1", 0, SCORES)
    log.close()
    records = [json.loads(line) for line in open(paths.metrics)]
    assert [(r["type"], r["epoch"]) for r in records] == [("train", 1), ("val", 1)]
    assert records[0]["loss"] == {"total": 2.5} and records[1]["tag"] == "ensemble_1" and "extra" not in records[1]
    events = EventAccumulator(paths.tb).Reload()
    assert [(e.step, e.value) for e in events.Scalars("loss/total")] == [(2, 2.0), (4, 4.0)]
    assert [e.step for e in events.Scalars("lr")] == [2, 4]
    assert events.Scalars("val_ensemble_1_f1/skin")[0].value == pytest.approx(0.1)
    assert events.Scalars("val_ensemble_1/miou")[0].value == pytest.approx(0.4)


def test_a_process_that_is_not_the_main_one_writes_nothing(tmp_path):
    log = RunLog(RunPaths(str(tmp_path / "run")), enabled=False, log_every=1, image_every=1)
    log.step(1, {"total": 1.0}, 0.1)
    log.epoch(0, loss={})
    log.validation("student", 0, SCORES)
    log.images(0, None, None, None, None)
    log.close()
    assert not os.path.exists(tmp_path / "run")
