"""The issue's training criterion: RNN-G trains on synthetic faces to a held-out mean F1 >= 0.80 within 3 CPU minutes.

The whole schedule of ``configs/synthetic_rnn_g.yaml`` (two stages, eye+brow crops) runs through the trainer on 400
synthetic 128x128 tight face crops; the best-on-val checkpoint is then scored on an unseen test split at the original
resolution. "3 CPU minutes" on this 2-core machine: the process may use 3 minutes of both cores.
"""
from __future__ import annotations

import os
import time

import pytest
import torch

from dml_csr.config import load_config
from dml_csr.data.dataset import build_dataset, collate_samples
from dml_csr.data.labels import get_spec
from dml_csr.data.synthetic import write_dataset
from dml_csr.engine import evaluate
from dml_csr.models.loading import load_model
from dml_csr.trainer import train

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUDGET_CPU_SECONDS = 3 * 60 * 2
TARGET_F1 = 0.80


@pytest.mark.slow
def test_rnn_g_reaches_mean_f1_080_on_synthetic_faces_within_3_cpu_minutes(tmp_path):
    root = str(tmp_path / "faces")
    write_dataset(root, {"train": 400, "val": 40, "test": 40}, seed=7, size=(128, 128), face_scale=(0.34, 0.42),
                  second_face_prob=0.0)
    cfg = load_config(os.path.join(ROOT, "configs", "synthetic_rnn_g.yaml"),
                      [f"data.root={root}", f"output_dir={tmp_path / 'runs'}", "train.image_log_every=0"])
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        t0 = time.process_time()
        summary = train(cfg, progress=False)
        seconds = time.process_time() - t0
        model, meta = load_model(summary["best"])
        assert meta["model_name"] == "rnn_g"
        ds = build_dataset(cfg, "test", train=False)
        loader = torch.utils.data.DataLoader(ds, batch_size=8, collate_fn=collate_samples)
        spec = get_spec("synthetic")
        scores = evaluate(model, loader, ds, spec.num_classes, device=torch.device("cpu")).compute(spec.classes)
    finally:
        torch.set_num_threads(threads)
    per_class = {c: round(v["f1"], 3) for c, v in scores["per_class"].items()}
    print(f"training: {seconds:.0f} CPU s; test mean F1 {scores['mean_f1']:.4f}")
    assert seconds < BUDGET_CPU_SECONDS, f"training took {seconds:.0f} CPU s (budget {BUDGET_CPU_SECONDS} s)"
    assert scores["mean_f1"] >= TARGET_F1, f"test mean F1 {scores['mean_f1']:.3f} < {TARGET_F1}: {per_class}"
    assert summary["best_val_mean_f1"] >= TARGET_F1 - 0.05
