"""Speed of RNN-G (Liu et al. 2017): frames per second of the first stage, and the four-direction scan against a
straightforward loop (one direction at a time, one step per Python iteration), measured in the same run.

    python scripts/benchmark_rnn.py                      # CPU, fp32 (+ bf16 autocast), 128 and 512, batch 1 and 32
    python scripts/benchmark_rnn.py --device cuda        # on a GPU
    python scripts/benchmark_rnn.py --sizes 128 --batches 32 --repeats 5

Timings are the median of ``--repeats`` runs after ``--warmup`` runs, in inference mode, eval mode, random weights.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from contextlib import nullcontext

import torch

from _common import check_pixels, device_name, integer, run_main
from dml_csr.models.rnn_g import RNNG, bounded_transition
from dml_csr.models.scan import loop_one_direction, spatial_rnn_4dir


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn, device: torch.device, warmup: int, repeats: int) -> float:
    """Median seconds of one call of ``fn``."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", type=device_name, default="cpu")
    p.add_argument("--sizes", type=integer(8, 4096), nargs="+", default=[128, 512])
    p.add_argument("--batches", type=integer(1, 1024), nargs="+", default=[1, 32])
    p.add_argument("--classes", type=integer(2, 256), default=3)
    p.add_argument("--width", type=integer(4, 1024), default=32)
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "fp16"])
    p.add_argument("--warmup", type=integer(0, 100000), default=2)
    p.add_argument("--repeats", type=integer(1, 100000), default=5)
    p.add_argument("--scan-size", type=integer(8, 4096), default=128,
                   help="input size of the scan comparison (RNN at size / 2)")
    p.add_argument("--scan-batch", type=integer(1, 1024), default=32)
    p.add_argument("--threads", type=integer(0, 1024), default=0, help="torch CPU threads (0 = default)")
    args = p.parse_args(argv)
    check_pixels(p, max(args.batches), max(args.sizes), "--batches %d at --sizes %d")
    check_pixels(p, args.scan_batch, args.scan_size, "--scan-batch %d at --scan-size %d")

    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} cpus={os.cpu_count()} "
          f"load_avg={load[0]:.2f},{load[1]:.2f},{load[2]:.2f}")
    if device.type == "cuda":
        print(f"gpu={torch.cuda.get_device_name(device)}")
    torch.manual_seed(0)
    model = RNNG(args.classes, width=args.width).to(device).eval()
    model.drop_edge_heads()

    print("\n== first stage (eval, inference_mode): images/s")
    print(f"{'size':>6} {'batch':>6} {'precision':>9} {'ms/batch':>10} {'images/s':>10}")
    for size in args.sizes:
        for bsz in args.batches:
            x = torch.randn(bsz, 3, size, size, device=device)
            for prec in args.precisions:
                dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(prec)
                if dtype is torch.float16 and device.type == "cpu":
                    continue
                ctx = torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()
                with torch.inference_mode(), ctx:
                    sec = time_fn(lambda: model(x), device, args.warmup, args.repeats)
                print(f"{size:>6} {bsz:>6} {prec:>9} {sec * 1e3:>10.2f} {bsz / sec:>10.1f}", flush=True)

    print(f"\n== four-direction scan vs straightforward loop (RNN input {args.scan_batch}x{model.hidden}x"
          f"{args.scan_size // 2}x{args.scan_size // 2}, fp32)")
    with torch.inference_mode():
        xr, gates = model.features(torch.randn(args.scan_batch, 3, args.scan_size, args.scan_size, device=device))
    w, b = bounded_transition(model.rnn_weight.detach()), model.rnn_bias.detach()
    with torch.inference_mode():
        diff = (spatial_rnn_4dir(xr, gates, w, b) - loop_one_direction(xr, gates, w, b)).abs().max().item()
        fwd_scan = time_fn(lambda: spatial_rnn_4dir(xr, gates, w, b), device, args.warmup, args.repeats)
        fwd_loop = time_fn(lambda: loop_one_direction(xr, gates, w, b), device, 1, max(3, args.repeats // 2))
    xr, gates = xr.clone().requires_grad_(), gates.clone().requires_grad_()
    w, b = w.clone().requires_grad_(), b.clone().requires_grad_()
    grad = torch.randn_like(xr)

    def train_step(fn):
        xr.grad = gates.grad = w.grad = b.grad = None
        fn(xr, gates, w, b).backward(grad)

    fb_scan = time_fn(lambda: train_step(spatial_rnn_4dir), device, args.warmup, args.repeats)
    fb_loop = time_fn(lambda: train_step(loop_one_direction), device, 1, max(3, args.repeats // 2))
    print(f"max |scan - loop| = {diff:.2e}")
    print(f"{'pass':>18} {'scan ms':>10} {'loop ms':>10} {'speed-up':>9}")
    print(f"{'forward':>18} {fwd_scan * 1e3:>10.2f} {fwd_loop * 1e3:>10.2f} {fwd_loop / fwd_scan:>8.1f}x")
    print(f"{'forward+backward':>18} {fb_scan * 1e3:>10.2f} {fb_loop * 1e3:>10.2f} {fb_loop / fb_scan:>8.1f}x")
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"\nload_avg at end={load[0]:.2f},{load[1]:.2f},{load[2]:.2f}")
    return 0


if __name__ == "__main__":
    run_main(main)
