"""Does cyclical self-regulation help when labels are noisy, as the paper says it should? (``scripts/study_noise.py``)

For each label-noise rate (``data.label_noise.rate``: the share of a training map's parts corrupted, see
:mod:`dml_csr.data.noise`) and each seed, two trainings of the same length on synthetic faces: the first phase
alone for E + K N epochs, and the first phase for E epochs followed by K self-regulation cycles of N epochs. Each is
scored on a clean test split: the first phase's final student, and the self-regulated run's final self-ensemble
(its last teacher, the model CSR produces). Validation and test labels are never corrupted.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Optional, Sequence

import numpy as np
import torch

from ..checkpoint import RunPaths, load_checkpoint
from ..config import Config, load_config
from ..data.dataset import build_dataset
from ..data.drawing import save_rgb
from ..data.class_map import label_spec
from ..data.loader import build_loader
from ..data.synthetic import write_dataset
from ..evaluation.charts import line_chart
from ..evaluation.protocol import evaluate
from ..files import write_bytes
from ..models import build_model
from .trainer import train

__all__ = ["Study", "FULL", "QUICK", "run_study", "format_table"]

log = logging.getLogger(__name__)

METHODS = ("phase 1", "phase 1 + CSR")


@dataclasses.dataclass
class Study:
    """The grid and the data of a study: noise rates, seeds, the schedule (E, K, N) and the synthetic faces."""
    rates: Sequence[float] = (0.0, 0.15, 0.30)
    seeds: Sequence[int] = (0, 1)
    epochs: int = 3  # E
    cycles: int = 1  # K
    cycle_epochs: int = 2  # N
    faces: dict = dataclasses.field(default_factory=lambda: {"train": 96, "val": 24, "test": 40})
    size: tuple[int, int] = (56, 56)  # the faces' images; the network input is data.input_size below
    overrides: Sequence[str] = ()  # on top of configs/synthetic_dml_csr_tiny.yaml


# a ResNet-18 DML-CSR with 16-channel heads at output stride 32, 48 x 48: small enough that the 12 trainings of the
# grid fit in minutes on 2 shared CPU cores
SMALL = ("data.input_size=[48, 48]", "model.output_stride=32", "model.context_channels=16",
         "model.decoder_channels=16", "model.edge_channels=8", "train.val_every=1000", "loss.lovasz=false")
FULL = Study(overrides=SMALL + ("data.batch_size=8", "train.lr=0.02", "train.cycle_lr=0.01"))
QUICK = Study(rates=(0.0, 0.3), seeds=(0,), epochs=1, cycles=1, cycle_epochs=1,
              faces={"train": 8, "val": 4, "test": 4}, size=(48, 48), overrides=SMALL + ("data.batch_size=4",))


def _config(base: str, study: Study, root: str, out: str, rate: float, seed: int, csr: bool) -> Config:
    e, k, n = study.epochs, study.cycles, study.cycle_epochs
    schedule = ([f"train.epochs={e}", f"train.cycles={k}", f"train.cycle_epochs={n}"] if csr
                else [f"train.epochs={e + k * n}", "train.cycles=0"])
    name = f"noise{round(rate * 100):02d}_seed{seed}_{'csr' if csr else 'phase1'}"
    return load_config(base, [*study.overrides, *schedule, f"data.root={root}", f"output_dir={out}", f"name={name}",
                              f"seed={seed}", f"data.label_noise.rate={rate}", f"data.label_noise.seed={seed}",
                              "data.workers=0", "train.device=cpu", "train.image_log_every=0", "train.keep_last=1"])


def _test_mean_f1(cfg: Config, csr: bool) -> float:
    """The clean test split's mean F1 of the run's final model: its last teacher with CSR, else its student."""
    ckpt = load_checkpoint(RunPaths(cfg.run_dir).checkpoints()[-1])
    spec = label_spec(cfg)
    model = build_model(cfg.model, spec.num_classes, spec.classes)
    model.load_state_dict(ckpt["csr"]["teacher_state"] if csr else ckpt["model"])
    ds = build_dataset(cfg, cfg.data.test_split, train=False, spec=spec)
    loader = build_loader(ds, batch_size=cfg.eval.batch_size, workers=0, seed=cfg.seed, train=False)
    cm = evaluate(model, loader, ds, spec.num_classes, device=torch.device("cpu"))
    return float(cm.compute(spec.classes, spec.groups)["mean_f1"])


def run_study(out: str, base_config: str, study: Study = FULL, data: Optional[str] = None) -> dict:
    """Every training of the grid, into ``out/runs``; returns ``{"rates", "seeds", "scores": {method: [[F1 per
    seed] per rate]}, "seconds"}`` and writes ``out/noise_study.{md,csv,png}``."""
    t0 = time.time()
    root = data or os.path.join(out, "faces")
    if data is None:
        write_dataset(root, dict(study.faces), seed=123, size=study.size, face_scale=(0.3, 0.38))
    scores = {m: [[] for _ in study.rates] for m in METHODS}
    for i, rate in enumerate(study.rates):
        for seed in study.seeds:
            for csr, method in ((False, METHODS[0]), (True, METHODS[1])):
                cfg = _config(base_config, study, root, os.path.join(out, "runs"), rate, seed, csr)
                if train(cfg, progress=False)["stopped"]:  # a signal: no score of a half-trained model
                    raise InterruptedError(f"{cfg.run_dir}: training stopped by a signal; the study stops, no table")
                scores[method][i].append(_test_mean_f1(cfg, csr))
                log.info("noise %.0f%%, seed %d, %s: clean test mean F1 %.4f", rate * 100, seed, method,
                         scores[method][i][-1])
    result = {"rates": list(study.rates), "seeds": list(study.seeds), "scores": scores,
              "seconds": time.time() - t0, "schedule": [study.epochs, study.cycles, study.cycle_epochs]}
    _write(out, result)
    return result


def format_table(result: dict) -> tuple[str, str]:
    """The study as a Markdown table and as CSV: a row a noise rate, each method's mean (and each seed's) clean
    test mean F1, and the difference CSR makes."""
    seeds = result["seeds"]
    md = ["| label noise | phase 1 | phase 1 + CSR | CSR - phase 1 |", "| --- | --- | --- | --- |"]
    csv = ["noise,method," + ",".join(f"seed{s}" for s in seeds) + ",mean"]
    for i, rate in enumerate(result["rates"]):
        cells = []
        for m in METHODS:
            v = result["scores"][m][i]
            cells.append(f"{100 * np.mean(v):.2f} ({', '.join(f'{100 * x:.2f}' for x in v)})")
            csv.append(f"{rate:g},{m}," + ",".join(f"{x:.4f}" for x in v) + f",{np.mean(v):.4f}")
        diff = 100 * (np.mean(result["scores"][METHODS[1]][i]) - np.mean(result["scores"][METHODS[0]][i]))
        md.append(f"| {100 * rate:.0f} % | {cells[0]} | {cells[1]} | {diff:+.2f} |")
    return "\n".join(md) + "\n", "\n".join(csv) + "\n"


def _write(out: str, result: dict) -> None:
    md, csv = format_table(result)
    for name, text in (("noise_study.md", md), ("noise_study.csv", csv)):
        write_bytes(os.path.join(out, name), text.encode())
    plot = line_chart([100 * r for r in result["rates"]], result["scores"], "clean test mean F1",
                      "label noise (% of parts corrupted)")
    save_rgb(os.path.join(out, "noise_study.png"), plot)
