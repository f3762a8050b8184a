"""What the model costs: parameters, FLOPs, latency/throughput per precision and memory format, peak memory.

    python scripts/benchmark.py --config configs/_base_/models/dml_csr_r101.yaml --size 473 [--batch 4]
        [--repeats 5] [--warmup 2] [--device cpu|cuda] [--weights ckpt.pt] [--json out.json] [--train]

Every path is timed in the same run against the plain fp32 eager model (ratios are relative to it) and checked for
pixel-label agreement with it on the same input. Latency is the median of ``--repeats`` timed runs after
``--warmup`` runs. Peak memory: CUDA ``max_memory_allocated``; CPU peak resident set size sampled during the runs.
``--train`` also times a training step (forward + backward of the training model, CE on parsing and edges).
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import threading
import time
from typing import Callable, Optional

import torch

from dml_csr.config import ConfigError, load_config
from dml_csr.data.labels import get_spec
from dml_csr.files import write_json
from dml_csr.loading import load_model
from dml_csr.models import (autocast_context, build_model, count_parameters, prepare_for_inference,
                            to_model_input)

PAPER = {"params_M": 59.67, "GFLOPs": 48.54, "latency_ms": 31.0}  # DML-CSR's paper figures (model.name dml_csr)


def _config(path: str, overrides: list[str]):
    """Experiment configs load as they are; a model-only base file gets placeholder data settings."""
    try:
        return load_config(path, overrides)
    except (ConfigError, TypeError) as e:  # TypeError: config.py does not name a missing 'data' section
        if "data" not in str(e) and "dataset" not in str(e):
            raise
        return load_config(path, ["data.dataset=helen", "data.root=."] + overrides)


class _PeakRSS:
    """Peak resident set size (MiB) of this process while the context is open, sampled every 2 ms."""

    def __enter__(self):
        self.peak, self._stop = _rss_mib(), False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop:
            self.peak = max(self.peak, _rss_mib())
            time.sleep(0.002)

    def __exit__(self, *exc):
        self._stop = True
        self._thread.join()


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _time(fn: Callable[[], torch.Tensor], device: torch.device, warmup: int, repeats: int):
    """Median seconds of ``fn`` and peak memory (MiB) during the timed runs; returns (median, peak, last output)."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    for _ in range(warmup):
        out = fn()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    with _PeakRSS() as rss:
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = fn()
            sync()
            times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else rss.peak
    return statistics.median(times), peak, out


def _flops(cfg, classes, size: int) -> int:
    """FLOPs of the inference model at batch 1 (torch's FLOP counter, run on the meta device: no compute)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = build_model(cfg, len(classes), classes).eval()
        x = torch.empty(1, 3, size, size)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(x)
    return counter.get_total_flops()


def _paths(device: torch.device) -> list[tuple[str, str, bool]]:
    """(label, precision, channels_last); the first is the fp32 eager baseline."""
    paths = [("fp32 eager", "fp32", False), ("fp32 channels_last", "fp32", True), ("bf16 autocast", "bf16", False),
             ("bf16 + channels_last", "bf16", True)]
    if device.type == "cuda":
        paths += [("fp16 autocast", "fp16", False), ("fp16 + channels_last", "fp16", True)]
    return paths


def benchmark_inference(model, device, size, batches, warmup, repeats) -> list[dict]:
    rows = []
    for batch in batches:
        x = torch.randn(batch, 3, size, size, device=device, generator=None)
        base_labels, base_latency = None, None
        for label, precision, channels_last in _paths(device):
            m = prepare_for_inference(copy.deepcopy(model), precision, channels_last)
            xi = to_model_input(x, channels_last)

            def run(m=m, xi=xi, precision=precision):
                with torch.inference_mode(), autocast_context(device, precision):
                    return m(xi)["parsing"]
            latency, peak, out = _time(run, device, warmup, repeats)
            labels = out.float().argmax(1)
            if base_labels is None:
                base_labels, base_latency = labels, latency
            rows.append({"path": label, "precision": precision, "channels_last": channels_last, "batch": batch,
                         "latency_ms": latency * 1e3, "throughput_img_s": batch / latency,
                         "ratio_vs_fp32_eager": latency / base_latency, "peak_mem_mib": peak,
                         "label_agreement": (labels == base_labels).float().mean().item()})
            print(_row(rows[-1]), flush=True)
            del m
    return rows


def benchmark_train(cfg, classes, device, size, batch, warmup, repeats) -> list[dict]:
    """Forward + backward of the training model with a dummy loss, fp32 vs bf16 autocast + channels_last."""
    rows, base = [], None
    torch.manual_seed(0)
    x = torch.randn(batch, 3, size, size, device=device)
    for label, precision, channels_last in (("train fp32", "fp32", False), ("train bf16 + channels_last", "bf16", True)):
        model = build_model(cfg, len(classes), classes).to(device).train()
        if channels_last:
            model.to(memory_format=torch.channels_last)
        xi = to_model_input(x, channels_last)

        def step():
            model.zero_grad(set_to_none=True)
            with autocast_context(device, precision):
                out = model(xi)
            loss = sum(_dummy_loss(v) for v in out.values() if v.dim() == 4)
            loss.backward()
            return out["parsing"]
        latency, peak, _ = _time(step, device, warmup, repeats)
        base = base or latency
        rows.append({"path": label, "precision": precision, "channels_last": channels_last, "batch": batch,
                     "latency_ms": latency * 1e3, "throughput_img_s": batch / latency,
                     "ratio_vs_fp32_eager": latency / base, "peak_mem_mib": peak, "label_agreement": None})
        print(_row(rows[-1]), flush=True)
    return rows


def benchmark_deploy(model, mcfg, size: int, base_latency: float, warmup: int, repeats: int, calib: str,
                     count: int = 8) -> list[dict]:
    """CPU deployment paths on face images (synthetic faces, or a prepared root's images): bf16 + channels_last,
    ONNX Runtime fp32 and ONNX Runtime static int8 (calibrated on other images), each with its share of labels equal
    to fp32 eager's on the same faces; ratios against ``base_latency`` (fp32 eager of this run)."""
    import tempfile

    import onnxruntime as ort

    from dml_csr.photos.export import InferenceWrapper, export_onnx
    from dml_csr.photos.quantize import calibration_batch, quantize_onnx_int8

    meta = {"input_size": [size, size], "channel_order": mcfg.channel_order, "mean": list(mcfg.mean),
            "std": list(mcfg.std)}
    faces = calibration_batch(calib, "test", meta, count, seed=2000)  # scored; calibrated on others
    calibration = calibration_batch(calib, "train", meta, 2 * count, seed=1000)
    # every path answers at the input's resolution, as the exported graph does (InferenceWrapper)
    eager = InferenceWrapper(prepare_for_inference(copy.deepcopy(model), "fp32"))
    with torch.inference_mode():
        ref = [eager(torch.from_numpy(f[None])).argmax(1).numpy() for f in faces]
    fast = InferenceWrapper(prepare_for_inference(copy.deepcopy(model), "bf16", True))

    def run_bf16(x):
        with torch.inference_mode(), autocast_context(torch.device("cpu"), "bf16"):
            return fast(to_model_input(torch.from_numpy(x), True)).float().numpy()
    rows = [_deploy_row("bf16 + channels_last (faces)", "bf16", run_bf16, faces, ref, base_latency, warmup, repeats)]
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = os.path.join(tmp, "model.onnx")
        export_onnx(copy.deepcopy(model).float(), fp32, (size, size), dynamic_size=False)
        int8 = quantize_onnx_int8(fp32, os.path.join(tmp, "model.int8.onnx"), calibration)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        for label, path, precision in (("onnxruntime fp32", fp32, "fp32"), ("onnxruntime int8 (static QDQ)", int8,
                                                                              "int8")):
            sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
            rows.append(_deploy_row(label, precision, lambda x, sess=sess: sess.run(None, {"image": x})[0], faces, ref,
                                    base_latency, warmup, repeats))
    return rows


def _deploy_row(label, precision, run, faces, ref, base_latency, warmup, repeats) -> dict:
    """Latency on the first face (batch 1) and the share of labels equal to ``ref`` over all faces."""
    import numpy as np

    latency, peak, _ = _time(lambda: run(faces[:1]), torch.device("cpu"), warmup, repeats)
    same = [float((np.asarray(run(f[None])).argmax(1) == r).mean()) for f, r in zip(faces, ref)]
    row = {"path": label, "precision": precision, "channels_last": False, "batch": 1, "latency_ms": latency * 1e3,
           "throughput_img_s": 1 / latency, "ratio_vs_fp32_eager": latency / base_latency, "peak_mem_mib": peak,
           "label_agreement": float(np.mean(same)), "label_agreement_on": f"{len(faces)} face images"}
    print(_row(row), flush=True)
    return row


def _dummy_loss(v: torch.Tensor) -> torch.Tensor:
    """CE against class 0 for a class map (B, C>1, h, w), BCE against 0 for a one-channel map (RNN-G's gate)."""
    v = v.float()
    if v.shape[1] == 1:
        return torch.nn.functional.binary_cross_entropy_with_logits(v, torch.zeros_like(v))
    target = torch.zeros(v.shape[0], *v.shape[-2:], dtype=torch.long, device=v.device)
    return torch.nn.functional.cross_entropy(v, target)


HEADER = f"{'path':<28}{'batch':>6}{'latency ms':>12}{'img/s':>9}{'x fp32':>8}{'peak MiB':>10}{'labels same':>13}"


def _row(r: dict) -> str:
    agree = "" if r["label_agreement"] is None else f"{100 * r['label_agreement']:.2f}%"
    return (f"{r['path']:<28}{r['batch']:>6}{r['latency_ms']:>12.1f}{r['throughput_img_s']:>9.2f}"
            f"{r['ratio_vs_fp32_eager']:>8.3f}{r['peak_mem_mib']:>10.0f}{agree:>13}")


def main(argv: Optional[list[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True)
    p.add_argument("--set", nargs="*", default=[], help="config overrides KEY=VALUE")
    p.add_argument("--size", type=int, default=473)
    p.add_argument("--batch", type=int, default=1, help="also time this batch size (besides batch 1)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--classes", type=int, default=None, help="class count (default: the config's dataset)")
    p.add_argument("--weights", default=None, help="checkpoint to load (our format or the authors'); else random")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--train", action="store_true", help="also time a training step (batch max(2, --batch))")
    p.add_argument("--deploy", action="store_true", help="CPU deployment: bf16, ONNX Runtime fp32 and int8 on face "
                                                         "images, with the share of labels unchanged")
    p.add_argument("--calib", default="synthetic", help="with --deploy: a prepared root (int8 calibrated on its "
                                                        "train split, scored on its test split) or 'synthetic'")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = _config(args.config, args.set)
    spec = get_spec(cfg.data.dataset)
    if args.classes is None:
        args.classes = spec.num_classes
    classes = spec.classes if args.classes == spec.num_classes else [f"class_{i}" for i in range(args.classes)]
    mcfg = copy.deepcopy(cfg.model)
    mcfg.pretrained = ""
    with torch.device("meta"):
        train_params = count_parameters(build_model(_with(mcfg, True), args.classes, classes))
        infer_cfg = _with(mcfg, False)
        infer_params = count_parameters(build_model(infer_cfg, args.classes, classes))
    flops = _flops(infer_cfg, classes, args.size)
    if args.weights:
        model, _ = load_model(args.weights, device)
    else:
        torch.manual_seed(0)
        model = build_model(infer_cfg, args.classes, classes).to(device).eval()
    is_dml_csr = mcfg.name == "dml_csr"
    # the paper's figures belong to the paper's model: the deep-stem ResNet-101 at output stride 8
    is_paper = is_dml_csr and mcfg.backbone == "resnet101_deepstem" and mcfg.output_stride == 8
    arch = (f"{mcfg.backbone}, output stride {mcfg.output_stride}" if is_dml_csr else
            f"width {mcfg.rnn_channels}" + (", two-stage" if mcfg.two_stage else ""))
    paper_params = f"; paper: {PAPER['params_M']}M" if is_paper else ""
    paper_flops = f"; paper: {PAPER['GFLOPs']} G" if is_paper else ""

    print(f"config {args.config}: {mcfg.name} ({arch}), {args.classes} classes, input {args.size}x{args.size}, "
          f"device {device} ({torch.get_num_threads()} threads), torch {torch.__version__}")
    print(f"parameters: training model {train_params:,} ({train_params / 1e6:.2f}M), inference model "
          f"{infer_params:,} ({infer_params / 1e6:.2f}M){paper_params}")
    print(f"FLOPs (inference, batch 1): {flops / 1e9:.3g} GFLOPs = {flops / 2e9:.3g} GMACs{paper_flops}")
    print(f"median of {args.repeats} after {args.warmup} warm-up runs; ratios against fp32 eager in this run")
    print(HEADER)
    batches = sorted({1, args.batch})
    rows = benchmark_inference(model, device, args.size, batches, args.warmup, args.repeats)
    if args.deploy:
        base = next(r["latency_ms"] / 1e3 for r in rows if r["path"] == "fp32 eager" and r["batch"] == 1)
        print(f"CPU deployment, batch 1, labels compared with fp32 eager on face images ({args.calib}):")
        rows += benchmark_deploy(model, mcfg, args.size, base, args.warmup, args.repeats, args.calib)
    if args.train:
        rows += benchmark_train(_with(mcfg, True), classes, device, args.size, max(2, args.batch),
                                args.warmup, args.repeats)
    result = {"config": args.config, "size": args.size, "device": str(device), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "num_classes": args.classes, "params_train": train_params,
              "params_inference": infer_params, "flops_inference": flops, "macs_inference": flops // 2,
              "model": mcfg.name, "output_stride": mcfg.output_stride if is_dml_csr else None,
              "paper": PAPER if is_paper else None, "rows": rows}
    if args.json:
        write_json(args.json, result, indent=1)
        print(f"wrote {args.json}")


def _with(mcfg, edge_heads: bool):
    out = copy.deepcopy(mcfg)
    out.edge_heads = edge_heads
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
