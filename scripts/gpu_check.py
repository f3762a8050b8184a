#!/usr/bin/env python
"""One call on a machine with a CUDA GPU: the CUDA tests, a short training of the authors' model at 473 in each
precision, the inference and training benchmarks, the data pipeline's share, and where the time goes; one JSON.

    python scripts/gpu_check.py --out gpu_check.json          # on one CUDA GPU, about 6 minutes (bash scripts/gpu_check.sh)
    python scripts/gpu_check.py --dry-run --out dry.json      # anywhere: the same stages, tiny and on the CPU

Stages (each one's failure is recorded and the others still run):

1. ``pytest -m cuda``: the CUDA-marked tests (tests/test_cuda.py).
2. Training throughput of the authors' DML-CSR (deep-stem ResNet-101, edge heads, the paper preset's loss) at
   473x473, batch ``--batch``, on synthetic faces through the real training step (``dml_csr.training.engine``): fp32,
   fp16 with the gradient scaler, bf16, bf16 + channels_last, and bf16 + channels_last + ``torch.compile``; images/s
   after warm-up, peak memory, the losses (finite, and near fp32's).
3. ``scripts/benchmark.py --device cuda --batch 32 --train``: inference latency per precision and a training step.
4. ``scripts/benchmark_data.py --device cuda``: samples/s per loader worker, and what the GPU's share costs.
5. A profile of the bf16 inference at batch 32 and of a training step: the 12 operators taking the most GPU time.

Targets on one H100/H200 (printed beside the figures): inference <= 3 ms an image at batch 32 in bf16, training
>= 170 images/s at 473.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback

from _common import run_main, setup_logging

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TARGETS = {"inference_ms_per_image_bf16_b32": 3.0, "train_images_per_s": 170.0}
VARIANTS = [("fp32", "fp32", False, False), ("fp16 + scaler", "fp16", False, False), ("bf16", "bf16", False, False),
            ("bf16 + channels_last", "bf16", True, False), ("bf16 + channels_last + compile", "bf16", True, True)]


def _stage(record: dict, name: str, fn) -> None:
    t0 = time.time()
    try:
        record[name] = {"ok": True, **fn()}
    except Exception as e:  # one stage's failure must not cost the others
        record[name] = {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
    record[name]["seconds"] = round(time.time() - t0, 1)
    print(f"== {name}: {'ok' if record[name]['ok'] else 'FAILED: ' + record[name]['error']} "
          f"({record[name]['seconds']} s)", flush=True)


def _run(cmd: list[str], timeout: int) -> dict:
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    return {"cmd": " ".join(cmd), "returncode": p.returncode, "tail": (p.stdout + p.stderr)[-4000:]}


def cuda_tests(args) -> dict:
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "tests/test_cuda.py", "-p", "no:cacheprovider"]
    if args.dry_run:
        cmd.append("--co")  # collected (and skipped without CUDA): the wiring, not the GPU
    out = _run(cmd, 300)
    if out["returncode"] not in (0, 5):
        raise RuntimeError(f"pytest exited {out['returncode']}: {out['tail'][-600:]}")
    return out


def _batches(size: int, batch: int, count: int, spec) -> list[dict]:
    """``count`` training batches of synthetic faces through the training transform, as the loader collates them."""
    import numpy as np

    from dml_csr.data.loader import collate_samples
    from dml_csr.data.synthetic import render_face
    from dml_csr.data.transforms import TrainTransform

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


def train_throughput(args) -> dict:
    import torch

    from dml_csr.config import load_config
    from dml_csr.data.labels import get_spec

    dev = torch.device("cpu" if args.dry_run else "cuda")
    overrides = ["data.root=unused"] + (["model.backbone=resnet18", "model.output_stride=16",
                                         "model.context_channels=32", "model.decoder_channels=32",
                                         "model.edge_channels=16"] if args.dry_run else [])
    cfg = load_config(os.path.join(ROOT, "configs", "helen_dml_csr_r101.yaml"), overrides)
    spec = get_spec(cfg.data.dataset)
    size, batch = (64, 2) if args.dry_run else (args.size, args.batch)
    steps, warm = (2, 1) if args.dry_run else (args.steps, 3)
    data = _batches(size, batch, 2, spec)
    rows = []
    for label, precision, channels_last, compile_ in VARIANTS:
        if args.dry_run and (compile_ or precision == "fp16"):
            continue  # compiling costs minutes on a CPU, and fp16's scaler is CUDA's: the GPU run covers both
        rows.append(_train_variant(cfg, spec, dev, data, label, precision, channels_last, compile_, steps, warm))
        print(f"  train {label:<32} {rows[-1]['images_per_s']:8.1f} img/s  losses {rows[-1]['first_losses']}",
              flush=True)
    return {"rows": rows, "target_images_per_s": TARGETS["train_images_per_s"]}


def _train_variant(cfg, spec, dev, data, label, precision, channels_last, compile_, steps, warm) -> dict:
    """Images/s of the real training step (dml_csr.training.engine.train_one_epoch) in one precision and memory format."""
    import torch

    from dml_csr.losses import build_criterion
    from dml_csr.models import build_model
    from dml_csr.training.engine import EpochPlan, StepContext, grad_scaler, train_one_epoch
    from dml_csr.training.trainer import resolve_class_weights

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


def benchmarks(args) -> dict:
    dev = "cpu" if args.dry_run else "cuda"
    cfg = os.path.join(ROOT, "configs", "helen_dml_csr_r101.yaml")
    out = os.path.join(os.path.dirname(os.path.abspath(args.out)), "benchmark_cuda.json")
    extra = ["--set", "data.root=unused", "model.backbone=resnet18", "model.output_stride=16", "--size", "64",
             "--batch", "2", "--repeats", "1", "--warmup", "0"] if args.dry_run else \
        ["--set", "data.root=unused", "--size", str(args.size), "--batch", "32", "--repeats", "10", "--warmup", "3"]
    model = _run([sys.executable, "scripts/benchmark.py", "--config", cfg, "--device", dev, "--train", "--json", out]
                 + extra, 600)
    data = _run([sys.executable, "scripts/benchmark_data.py", "--device", dev, "--size",
                 "64" if args.dry_run else str(args.size), "--samples", "4" if args.dry_run else "40",
                 "--rounds", "1" if args.dry_run else "3"], 300)
    for name, r in (("benchmark.py", model), ("benchmark_data.py", data)):
        if r["returncode"] != 0:
            raise RuntimeError(f"{name} exited {r['returncode']}: {r['tail'][-600:]}")
    rec = json.load(open(out))
    b32 = [r for r in rec["rows"] if r["path"] == "bf16 + channels_last" and r["batch"] == max(x["batch"] for x in
                                                                                           rec["rows"])]
    ms = b32[0]["latency_ms"] / b32[0]["batch"] if b32 else None
    return {"benchmark": rec, "data_tail": data["tail"], "inference_ms_per_image_bf16": ms,
            "target_ms_per_image": TARGETS["inference_ms_per_image_bf16_b32"]}


def profile(args) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile as torch_profile

    from dml_csr.config import ModelConfig
    from dml_csr.models import autocast_context, build_model

    dev = torch.device("cpu" if args.dry_run else "cuda")
    mcfg = ModelConfig(edge_heads=False, **({"backbone": "resnet18", "output_stride": 16} if args.dry_run else {}))
    model = build_model(mcfg, 11).to(dev).eval().to(memory_format=torch.channels_last)
    size, batch = (64, 2) if args.dry_run else (args.size, 32)
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


def main(argv=None) -> int:
    setup_logging()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="gpu_check.json")
    p.add_argument("--dry-run", action="store_true", help="tiny models on the CPU: checks the wiring, no figures")
    p.add_argument("--size", type=int, default=473)
    p.add_argument("--batch", type=int, default=16, help="training batch (the paper: 7 per GPU on 4 GPUs)")
    p.add_argument("--steps", type=int, default=20, help="timed training steps per variant")
    p.add_argument("--skip", nargs="*", default=[], help="stages to skip: tests train benchmarks profile")
    args = p.parse_args(argv)
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        raise ValueError("no CUDA device here; run on a machine with one CUDA GPU, or pass --dry-run")
    record = {"torch": torch.__version__, "dry_run": args.dry_run,
              "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() and not args.dry_run else "cpu",
              "targets": TARGETS}
    for name, fn in (("tests", cuda_tests), ("train", train_throughput), ("benchmarks", benchmarks),
                     ("profile", profile)):
        if name not in args.skip:
            _stage(record, name, lambda fn=fn: fn(args))
    from dml_csr.files import write_json

    write_json(args.out, record, indent=1, default=str)
    print(f"wrote {args.out}")
    return 0 if all(record[k]["ok"] for k in ("tests", "train", "benchmarks", "profile") if k in record) else 1


if __name__ == "__main__":
    run_main(main)
