"""The stages of ``scripts/gpu_check.py``, each recorded in one JSON whatever the others do: the CUDA tests, the
real training step's throughput in each precision, the inference and training benchmarks and the data pipeline's
share (``scripts/benchmark.py`` and ``scripts/benchmark_data.py``, run as a user runs them), and a profile.

With ``dry_run`` every stage runs tiny and on the CPU: the wiring, not the figures.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
import traceback
from typing import Callable, Sequence

__all__ = ["TARGETS", "VARIANTS", "CheckOptions", "STAGES", "run_check"]

TARGETS = {"inference_ms_per_image_bf16_b32": 3.0, "train_images_per_s": 170.0}
VARIANTS = [("fp32", "fp32", False, False), ("fp16 + scaler", "fp16", False, False), ("bf16", "bf16", False, False),
            ("bf16 + channels_last", "bf16", True, False), ("bf16 + channels_last + compile", "bf16", True, True)]
TINY = ["model.backbone=resnet18", "model.output_stride=16"]  # the dry run's model (and its narrower heads below)


@dataclasses.dataclass
class CheckOptions:
    """What the check measures: ``root`` is the repository (its tests, configs and scripts), ``out`` the JSON."""
    root: str
    out: str
    dry_run: bool = False
    size: int = 473
    batch: int = 16  # training batch
    steps: int = 20  # timed training steps per variant


def run_stage(record: dict, name: str, fn: Callable[[], dict]) -> None:
    t0 = time.time()
    try:
        record[name] = {"ok": True, **fn()}
    except Exception as e:  # one stage's failure must not cost the others
        record[name] = {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
    record[name]["seconds"] = round(time.time() - t0, 1)
    print(f"== {name}: {'ok' if record[name]['ok'] else 'FAILED: ' + record[name]['error']} "
          f"({record[name]['seconds']} s)", flush=True)


def _run(opts: CheckOptions, cmd: list[str], timeout: int) -> dict:
    p = subprocess.run(cmd, cwd=opts.root, capture_output=True, text=True, timeout=timeout)
    return {"cmd": " ".join(cmd), "returncode": p.returncode, "tail": (p.stdout + p.stderr)[-4000:]}


def cuda_tests(opts: CheckOptions) -> dict:
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "tests/test_cuda.py", "-p", "no:cacheprovider"]
    if opts.dry_run:
        cmd.append("--co")  # collected (and skipped without CUDA): the wiring, not the GPU
    out = _run(opts, cmd, 300)
    if out["returncode"] not in (0, 5):
        raise RuntimeError(f"pytest exited {out['returncode']}: {out['tail'][-600:]}")
    return out


def _batches(size: int, batch: int, count: int, spec) -> list[dict]:
    """``count`` training batches of synthetic faces through the training transform, as the loader collates them."""
    import numpy as np

    from ..data.loader import collate_samples
    from ..data.synthetic import render_face
    from ..data.transforms import TrainTransform

    t = TrainTransform((size, size), spec, flip=False)
    rng = np.random.default_rng(0)
    out = []
    for b in range(count):
        samples = []
        for i in range(batch):
            img, lab = render_face(b * batch + i, size=(size + 39, size + 39))[:2]
            samples.append(t(img, lab, rng))
        out.append(collate_samples(samples))
    return out


def train_throughput(opts: CheckOptions) -> dict:
    import torch

    from ..config import load_config
    from ..data.class_map import label_spec

    dev = torch.device("cpu" if opts.dry_run else "cuda")
    overrides = ["data.root=unused"] + (TINY + ["model.context_channels=32", "model.decoder_channels=32",
                                                "model.edge_channels=16"] if opts.dry_run else [])
    cfg = load_config(os.path.join(opts.root, "configs", "helen_dml_csr_r101.yaml"), overrides)
    spec = label_spec(cfg)
    size, batch = (64, 2) if opts.dry_run else (opts.size, opts.batch)
    steps, warm = (2, 1) if opts.dry_run else (opts.steps, 3)
    data = _batches(size, batch, 2, spec)
    rows = []
    for label, precision, channels_last, compile_ in VARIANTS:
        if opts.dry_run and (compile_ or precision == "fp16"):
            continue  # compiling costs minutes on a CPU, and fp16's scaler is CUDA's: the GPU run covers both
        rows.append(_train_variant(cfg, spec, dev, data, label, precision, channels_last, compile_, steps, warm))
        print(f"  train {label:<32} {rows[-1]['images_per_s']:8.1f} img/s  losses {rows[-1]['first_losses']}",
              flush=True)
    return {"rows": rows, "target_images_per_s": TARGETS["train_images_per_s"]}


def _train_variant(cfg, spec, dev, data, label, precision, channels_last, compile_, steps, warm) -> dict:
    """Images/s of the real training step (dml_csr.training.engine.train_one_epoch) in one precision and memory format."""
    import torch

    from ..losses import build_criterion
    from ..models import build_model
    from ..training.engine import EpochPlan, StepContext, grad_scaler, train_one_epoch
    from ..training.trainer import resolve_class_weights

    torch.manual_seed(0)
    model = build_model(cfg.model, spec.num_classes, spec.classes).to(dev)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = torch.compile(model) if compile_ else model
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4, fused=True)  # as the trainer
    ctx = StepContext(criterion=build_criterion(cfg, spec.classes, resolve_class_weights(cfg, spec)), optimizer=opt,
                      scaler=grad_scaler(dev, precision), device=dev, lr_at=lambda s: 1e-3, precision=precision,
                      channels_last=channels_last)
    losses: list[float] = []

    def run(n):
        train_one_epoch(net, [data[i % len(data)] for i in range(n)], ctx,
                        EpochPlan(on_step=lambda s, terms: losses.append(terms["total"])))
        if dev.type == "cuda":
            torch.cuda.synchronize()
    run(warm)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    run(steps)
    seconds = time.perf_counter() - t0
    batch = len(data[0]["image"])
    return {"variant": label, "batch": batch, "size": int(data[0]["image"].shape[-1]), "steps": steps,
            "images_per_s": steps * batch / seconds, "first_losses": [round(v, 4) for v in losses[:3]],
            "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else None}


def benchmarks(opts: CheckOptions) -> dict:
    dev = "cpu" if opts.dry_run else "cuda"
    cfg = os.path.join(opts.root, "configs", "helen_dml_csr_r101.yaml")
    out = os.path.join(os.path.dirname(os.path.abspath(opts.out)), "benchmark_cuda.json")
    extra = ["--set", "data.root=unused", *TINY, "--size", "64", "--batch", "2", "--repeats", "1", "--warmup",
             "0"] if opts.dry_run else \
        ["--set", "data.root=unused", "--size", str(opts.size), "--batch", "32", "--repeats", "10", "--warmup", "3"]
    model = _run(opts, [sys.executable, "scripts/benchmark.py", "--config", cfg, "--device", dev, "--train", "--json",
                        out] + extra, 600)
    data = _run(opts, [sys.executable, "scripts/benchmark_data.py", "--device", dev, "--size",
                       "64" if opts.dry_run else str(opts.size), "--samples", "4" if opts.dry_run else "40",
                       "--rounds", "1" if opts.dry_run else "3"], 300)
    for name, r in (("benchmark.py", model), ("benchmark_data.py", data)):
        if r["returncode"] != 0:
            raise RuntimeError(f"{name} exited {r['returncode']}: {r['tail'][-600:]}")
    with open(out) as f:
        rec = json.load(f)
    b32 = [r for r in rec["rows"] if r["path"] == "bf16 + channels_last" and r["batch"] == max(x["batch"] for x in
                                                                                           rec["rows"])]
    ms = b32[0]["latency_ms"] / b32[0]["batch"] if b32 else None
    return {"benchmark": rec, "data_tail": data["tail"], "inference_ms_per_image_bf16": ms,
            "target_ms_per_image": TARGETS["inference_ms_per_image_bf16_b32"]}


def profile(opts: CheckOptions) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile as torch_profile

    from ..config import ModelConfig
    from ..models import autocast_context, build_model

    dev = torch.device("cpu" if opts.dry_run else "cuda")
    mcfg = ModelConfig(edge_heads=False, **({"backbone": "resnet18", "output_stride": 16} if opts.dry_run else {}))
    model = build_model(mcfg, 11).to(dev).eval().to(memory_format=torch.channels_last)
    size, batch = (64, 2) if opts.dry_run else (opts.size, 32)
    x = torch.randn(batch, 3, size, size, device=dev).to(memory_format=torch.channels_last)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with torch.inference_mode(), autocast_context(dev, "bf16"):
        for _ in range(2):
            model(x)
        with torch_profile(activities=acts) as prof:
            for _ in range(3):
                model(x)
            if dev.type == "cuda":
                torch.cuda.synchronize()
    key = "self_cuda_time_total" if dev.type == "cuda" else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=key, row_limit=12)
    print(table, flush=True)
    return {"inference_top_ops": table}


STAGES = (("tests", cuda_tests), ("train", train_throughput), ("benchmarks", benchmarks), ("profile", profile))


def run_check(opts: CheckOptions, skip: Sequence[str] = ()) -> dict:
    """Every stage not in ``skip``, in order; returns the record (the JSON's content)."""
    import torch

    record = {"torch": torch.__version__, "dry_run": opts.dry_run,
              "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() and not opts.dry_run else "cpu",
              "targets": TARGETS}
    for name, fn in STAGES:
        if name not in skip:
            run_stage(record, name, lambda fn=fn: fn(opts))
    return record
