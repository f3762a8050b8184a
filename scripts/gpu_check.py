#!/usr/bin/env python
"""One call on a machine with a CUDA GPU: the CUDA tests, a short training of the authors' model at 473 in each
precision, the inference and training benchmarks, the data pipeline's share, and where the time goes; one JSON.

    python scripts/gpu_check.py --out gpu_check.json          # on one CUDA GPU, about 6 minutes (bash scripts/gpu_check.sh)
    python scripts/gpu_check.py --dry-run --out dry.json      # anywhere: the same stages, tiny and on the CPU

Stages (each one's failure is recorded and the others still run; the code is dml_csr.benchmarks.gpu_check):

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
import os

from _common import run_main, setup_logging

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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

    from dml_csr.benchmarks.gpu_check import STAGES, CheckOptions, run_check
    from dml_csr.files import write_json

    if not args.dry_run and not torch.cuda.is_available():
        raise ValueError("no CUDA device here; run on a machine with one CUDA GPU, or pass --dry-run")
    record = run_check(CheckOptions(root=ROOT, out=args.out, dry_run=args.dry_run, size=args.size, batch=args.batch,
                                    steps=args.steps), skip=args.skip)
    write_json(args.out, record, indent=1, default=str)
    print(f"wrote {args.out}")
    return 0 if all(record[name]["ok"] for name, _ in STAGES if name in record) else 1


if __name__ == "__main__":
    run_main(main)
