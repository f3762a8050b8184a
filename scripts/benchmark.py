"""What the model costs: parameters, FLOPs, latency/throughput per precision and memory format, peak memory.

    python scripts/benchmark.py --config configs/_base_/models/dml_csr_r101.yaml --size 473 [--batch 4]
        [--repeats 5] [--warmup 2] [--device cpu|cuda] [--weights ckpt.pt] [--json out.json] [--train]
        [--deploy [--calib ROOT] [--agreement-weights runs/demo/best.pt] [--profile] [--variant KEY=VALUE ...]]

Every path is timed in the same run against the plain fp32 eager model (ratios are relative to it) and checked for
pixel-label agreement with it on the same input. Latency is the median of ``--repeats`` timed runs after
``--warmup`` runs. Peak memory: CUDA ``max_memory_allocated``; CPU peak resident set size sampled during the runs.
``--train`` also times a training step (forward + backward of the training model, CE on parsing and edges).
``--deploy`` adds the CPU deployment paths (bf16, ONNX Runtime and OpenVINO, fp32 and int8) with the share of labels
each keeps, measured on ``--agreement-weights`` (a trained model, at its own size) when given; ``--profile`` prints
where the time of one image goes, stage by stage, in fp32 eager and OpenVINO fp32 and int8; ``--variant`` (e.g.
``model.output_stride=16``) times a second model's paths against the same fp32 eager, in rows that name it.
On the CPU the header names the processor, its AMX/AVX-512 flags, any ``ONEDNN_MAX_CPU_ISA`` cap and the most
PyTorch's oneDNN will use (a ceiling); the OpenVINO rows list their convolutions' kernels
(:mod:`dml_csr.benchmarks.isa`).
The measuring is :mod:`dml_csr.benchmarks.model`'s.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional

import torch

from _common import check_pixels, device_name, integer, run_main
from dml_csr.benchmarks.model import run
from dml_csr.files import write_json


def main(argv: Optional[list[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True)
    p.add_argument("--set", nargs="*", default=[], help="config overrides KEY=VALUE")
    p.add_argument("--size", type=integer(16, 4096), default=473)
    p.add_argument("--batch", type=integer(1, 1024), default=1, help="also time this batch size (besides batch 1)")
    p.add_argument("--repeats", type=integer(1, 100000), default=5)
    p.add_argument("--warmup", type=integer(0, 100000), default=2)
    p.add_argument("--device", type=device_name, default="cpu", help="cpu, cuda, cuda:N, mps or auto")
    p.add_argument("--classes", type=integer(2, 256), default=None, help="class count (default: the config's dataset)")
    p.add_argument("--weights", default=None, help="checkpoint to load (our format or the authors'); else random")
    p.add_argument("--threads", type=integer(1, 1024), default=None, help="torch.set_num_threads")
    p.add_argument("--train", action="store_true", help="also time a training step (batch max(2, --batch))")
    p.add_argument("--deploy", action="store_true", help="CPU deployment: bf16, ONNX Runtime and OpenVINO fp32 and "
                                                         "int8 on face images, with the share of labels unchanged")
    p.add_argument("--calib", default="synthetic", help="with --deploy: a prepared root (int8 calibrated on its "
                                                        "train split, scored on its test split) or 'synthetic'")
    p.add_argument("--agreement-weights", default=None, help="with --deploy: a trained checkpoint (e.g. the demo's) "
                   "on which every path's labels are compared, at its own size (random weights prove nothing)")
    p.add_argument("--profile", action="store_true", help="milliseconds per stage of the network: fp32 eager, "
                                                          "OpenVINO fp32 and int8")
    p.add_argument("--variant", nargs="+", default=[], metavar="KEY=VALUE", help="with --deploy: also time the model "
                   "these overrides make (e.g. model.output_stride=16) against this run's fp32 eager")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)
    check_pixels(p, args.batch, args.size, "--batch %d at --size %d")
    if not args.deploy and (args.variant or args.agreement_weights):
        p.error("--variant and --agreement-weights go with --deploy")
    if not (args.deploy or args.profile) and args.calib != "synthetic":
        p.error("--calib goes with --deploy or --profile")
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run(args.config, args.set, size=args.size, batch=args.batch, repeats=args.repeats, warmup=args.warmup,
                 device=args.device, num_classes=args.classes, weights=args.weights, train=args.train,
                 deploy=args.deploy, calib=args.calib, agreement_weights=args.agreement_weights, profile=args.profile,
                 variant=args.variant)
    if args.json:
        write_json(args.json, result, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    run_main(lambda: main(sys.argv[1:]))
