"""Results tables from run directories (``scripts/table.py``), in the papers' layout: a row a run, a column a class
(F1), then the mean F1, Helen's overall F1 where the dataset has it, and the mIoU -- once for each run's best
validation (the record ``eval.select_metric`` prefers in ``metrics.jsonl``) and once for its test split (the
``metrics.json`` that ``scripts/evaluate.py`` wrote into ``RUN/eval_test``, or the newest ``RUN/eval_test*``).
"""
from __future__ import annotations

import glob
import json
import os
from typing import Optional, Sequence

import numpy as np

from ..config import load_config
from .charts import bar_chart
from .metrics import selection_score

__all__ = ["RunScores", "read_run", "format_tables", "class_chart"]


class RunScores:
    """One run's scores: ``val`` (the best validation record, with its ``epoch`` and ``tag``) and ``test`` (the
    scores of its test evaluation, or None), and where the test scores come from."""

    def __init__(self, name: str, val: dict, test: Optional[dict], test_source: Optional[str]):
        self.name, self.val, self.test, self.test_source = name, val, test, test_source


def _test_scores(run_dir: str) -> tuple[Optional[dict], Optional[str]]:
    exact = os.path.join(run_dir, "eval_test", "metrics.json")
    found = [exact] if os.path.isfile(exact) else sorted(glob.glob(os.path.join(run_dir, "eval_test*", "metrics.json")),
                                                         key=os.path.getmtime)
    if not found:
        return None, None
    with open(found[-1]) as f:
        return json.load(f)["scores"], os.path.relpath(found[-1], run_dir)


def read_run(run_dir: str) -> RunScores:
    """The scores of ``run_dir`` (its ``config.yaml``, ``metrics.jsonl`` and test evaluation); one-line errors name
    what is missing."""
    config, metrics = os.path.join(run_dir, "config.yaml"), os.path.join(run_dir, "metrics.jsonl")
    for path in (config, metrics):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"'{path}' is missing: '{run_dir}' is not a run directory that scripts/train.py "
                                    f"wrote")
    metric = load_config(config).eval.select_metric
    with open(metrics) as f:
        vals = [r for r in map(json.loads, f) if r.get("type") == "val"]
    if not vals:
        raise ValueError(f"'{metrics}' holds no validation record yet; train the run past its first validation")
    best = max(vals, key=lambda r: selection_score(r, metric))
    test, source = _test_scores(run_dir)
    return RunScores(os.path.basename(os.path.normpath(run_dir)), best, test, source)


def _cells(scores: Optional[dict], classes: Sequence[str], overall: bool) -> list[str]:
    if scores is None:
        return ["-"] * (len(classes) + 2 + overall)
    pct = [f"{100 * scores['per_class'].get(c, {}).get('f1', float('nan')):.2f}" for c in classes]
    pct.append(f"{100 * scores['mean_f1']:.2f}")
    if overall:
        pct.append(f"{100 * scores['groups'].get('overall', float('nan')):.2f}")
    return pct + [f"{100 * scores['miou']:.2f}"]


def format_tables(runs: Sequence[RunScores]) -> tuple[str, str]:
    """Markdown (a validation table and a test table) and CSV (one row a run and split) of ``runs``; F1, mean F1,
    overall F1 and mIoU in percent."""
    classes = [c for c in runs[0].val["per_class"] if c != "background"]
    overall = any("overall" in r.val.get("groups", {}) for r in runs)
    head = classes + ["mean F1"] + (["overall F1"] if overall else []) + ["mIoU"]
    md, csv = [], ["run,split,epoch," + ",".join(h.replace(" ", "_") for h in head)]
    for split in ("val", "test"):
        title = "best validation (epoch, model)" if split == "val" else "test"
        md += [f"**{title}**", "", "| run | " + " | ".join(head) + " |", "|" + " --- |" * (len(head) + 1)]
        for r in runs:
            scores = r.val if split == "val" else r.test
            where = f" (epoch {r.val['epoch']}, {r.val['tag']})" if split == "val" else ""
            cells = _cells(scores, classes, overall)
            md.append(f"| {r.name}{where} | " + " | ".join(cells) + " |")
            epoch = r.val["epoch"] if split == "val" else ""
            csv.append(f"{r.name},{split},{epoch}," + ",".join(cells))
        md.append("")
    sources = [f"{r.name}: {r.test_source}" for r in runs if r.test_source]
    if sources:
        md.append("test scores from " + "; ".join(sources))
    missing = [r.name for r in runs if r.test is None]
    if missing:
        md.append(f"no test evaluation for {', '.join(missing)}: run scripts/evaluate.py --checkpoint RUN/best.pt "
                  f"--split test")
    return "\n".join(md) + "\n", "\n".join(csv) + "\n"


def class_chart(runs: Sequence[RunScores]) -> np.ndarray:
    """Per-class F1 bars, a bar a run: the test scores where a run has them, else its best validation's."""
    classes = [c for c in runs[0].val["per_class"] if c != "background"]
    series = {}
    for r in runs:
        scores = r.test if r.test is not None else r.val
        series[r.name + ("" if r.test is not None else " (val)")] = [
            scores["per_class"].get(c, {}).get("f1", float("nan")) for c in classes]
    return bar_chart(classes, series, "per-class F1")
