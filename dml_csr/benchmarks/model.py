"""What the model costs: parameters, FLOPs, latency/throughput per precision and memory format, peak memory.

Every path is timed in the same run against the plain fp32 eager model (ratios are relative to it) and checked for
pixel-label agreement with it on the same input. Latency is the median of ``repeats`` timed runs after ``warmup``
runs (:func:`dml_csr.benchmarks.timing.time_fn`). :func:`benchmark_train` also times a training step (forward +
backward of the training model, CE on parsing and edges); the CPU deployment paths are :mod:`.deploy`'s.
"""
from __future__ import annotations

import copy
import dataclasses
import os
from typing import Optional, Sequence

import torch

from ..checkpoint import make_meta
from ..config import Config, ConfigError, ModelConfig, load_config
from ..data.class_map import label_spec
from ..checkpoint import load_model
from ..models import autocast_context, build_model, count_parameters, prepare_for_inference, to_model_input
from .isa import ISA_FLAGS, describe_cpu
from .timing import HEADER, result_row, time_fn

__all__ = ["PAPER", "load_benchmark_config", "count_flops", "benchmark_inference", "benchmark_train", "run"]

# the paper's figures for its own model, DML-CSR with the deep-stem ResNet-101 at output stride 8: printed and
# recorded beside that model only (not beside other backbones, strides or RNN-G)
PAPER = {"params_M": 59.67, "GFLOPs": 48.54, "latency_ms": 31.0}


def load_benchmark_config(path: str, overrides: Sequence[str], source: str = "--set") -> Config:
    """Experiment configs load as they are; a model-only base file gets placeholder data settings. ``source``: the
    flag the overrides came from, as errors name it."""
    try:
        return load_config(path, list(overrides), source)
    except ConfigError as e:  # a model-only file: "missing required value 'data.dataset'"
        if "data" not in str(e) and "dataset" not in str(e):
            raise
        return load_config(path, ["data.dataset=helen", "data.root=."] + list(overrides), source)


def count_flops(mcfg: ModelConfig, classes: Sequence[str], size: int) -> int:
    """FLOPs of the inference model at batch 1 (torch's FLOP counter, run on the meta device: no compute)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = build_model(mcfg, len(classes), classes).eval()
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

            def run_once(m=m, xi=xi, precision=precision):
                with torch.inference_mode(), autocast_context(device, precision):
                    return m(xi)["parsing"]
            timed = time_fn(run_once, device, warmup, repeats)
            labels = timed.out.float().argmax(1)
            if base_labels is None:
                base_labels, base_latency = labels, timed.seconds
            rows.append(result_row(label, precision, channels_last, batch, timed, base_latency,
                                   (labels == base_labels).float().mean().item()))
            del m
    return rows


def benchmark_train(mcfg: ModelConfig, classes, device, size, batch, warmup, repeats) -> list[dict]:
    """Forward + backward of the training model with a dummy loss, fp32 vs bf16 autocast + channels_last."""
    rows, base = [], None
    torch.manual_seed(0)
    x = torch.randn(batch, 3, size, size, device=device)
    for label, precision, channels_last in (("train fp32", "fp32", False), ("train bf16 + channels_last", "bf16", True)):
        model = build_model(mcfg, len(classes), classes).to(device).train()
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
        timed = time_fn(step, device, warmup, repeats)
        base = base or timed.seconds
        rows.append(result_row(label, precision, channels_last, batch, timed, base, None))
    return rows


def _dummy_loss(v: torch.Tensor) -> torch.Tensor:
    """CE against class 0 for a class map (B, C>1, h, w), BCE against 0 for a one-channel map (RNN-G's gate)."""
    v = v.float()
    if v.shape[1] == 1:
        return torch.nn.functional.binary_cross_entropy_with_logits(v, torch.zeros_like(v))
    target = torch.zeros(v.shape[0], *v.shape[-2:], dtype=torch.long, device=v.device)
    return torch.nn.functional.cross_entropy(v, target)


def _variant_rows(config_path: str, overrides: list, variant: list, weights_of, meta: dict, base: float, how: tuple,
                  trained) -> list[dict]:
    """fp32 eager and the deployment paths of the model ``variant`` describes (the timed model's weights loaded into
    it when ``weights_of`` is given: output stride 16 keeps every parameter), against ``base``; each row names the
    variant. Labels are compared as for the timed model's rows (on ``trained`` when given)."""
    from ..photos.export import InferenceWrapper
    from ..photos.quantize import calibration_batch
    from .deploy import benchmark_deploy

    num_classes, classes, warmup, repeats, calib = how
    name = " ".join(variant)
    cfg = load_benchmark_config(config_path, overrides + variant)
    torch.manual_seed(0)
    model = build_model(_with(cfg.model, False), num_classes, classes).eval()
    if weights_of is not None:
        model.load_state_dict(weights_of.state_dict())
    print(f"variant {name}, against the fp32 eager above:")
    eager = InferenceWrapper(prepare_for_inference(copy.deepcopy(model), "fp32"))
    x = torch.from_numpy(calibration_batch(calib, "test", meta, 1, seed=2000))

    def run_once():
        with torch.inference_mode():
            return eager(x)
    rows = [result_row("fp32 eager", "fp32", False, 1, time_fn(run_once, torch.device("cpu"), warmup, repeats), base,
                       None)]
    rows += benchmark_deploy(model, meta, base, warmup, repeats, calib, trained=trained)
    return [dict(r, variant=name) for r in rows]


def _with(mcfg: ModelConfig, edge_heads: bool) -> ModelConfig:
    return dataclasses.replace(mcfg, pretrained="", edge_heads=edge_heads)


def _describe(cfg: Config, config_path: str, num_classes: int, classes, size: int, device: torch.device,
              repeats: int, warmup: int) -> dict:
    """Count the parameters and FLOPs, print what is measured; returns the result's header fields."""
    mcfg = cfg.model
    with torch.device("meta"):
        train_params = count_parameters(build_model(_with(mcfg, True), num_classes, classes))
        infer_params = count_parameters(build_model(_with(mcfg, False), num_classes, classes))
    flops = count_flops(_with(mcfg, False), classes, size)
    is_dml_csr = mcfg.name == "dml_csr"
    is_paper = is_dml_csr and mcfg.backbone == "resnet101_deepstem" and mcfg.output_stride == 8
    arch = (f"{mcfg.backbone}, output stride {mcfg.output_stride}" if is_dml_csr else
            f"width {mcfg.rnn_channels}" + (", two-stage" if mcfg.two_stage else ""))
    paper_params = f"; paper: {PAPER['params_M']}M" if is_paper else ""
    paper_flops = f"; paper: {PAPER['GFLOPs']} G" if is_paper else ""
    print(f"config {config_path}: {mcfg.name} ({arch}), {num_classes} classes, input {size}x{size}, "
          f"device {device} ({torch.get_num_threads()} threads), torch {torch.__version__}")
    print(f"parameters: training model {train_params:,} ({train_params / 1e6:.2f}M), inference model "
          f"{infer_params:,} ({infer_params / 1e6:.2f}M){paper_params}")
    print(f"FLOPs (inference, batch 1): {flops / 1e9:.3g} GFLOPs = {flops / 2e9:.3g} GMACs{paper_flops}")
    malloc = {k: v for k, v in sorted(os.environ.items()) if k.startswith("MALLOC_")}  # they move eager latencies
    cpu = describe_cpu() if device.type == "cpu" else None
    if cpu:
        print(f"CPU {cpu['cpu']} ({', '.join(cpu['flags']) or 'none of ' + '/'.join(ISA_FLAGS)}); "
              f"ONEDNN_MAX_CPU_ISA {cpu['isa_cap'] or 'unset'}; PyTorch's oneDNN up to {cpu['pytorch_onednn_isa']}")
    print(f"median of {repeats} after {warmup} warm-up runs; ratios against fp32 eager in this run; glibc malloc "
          f"{' '.join(f'{k}={v}' for k, v in malloc.items()) or 'defaults'}")
    print(HEADER)
    return {"config": config_path, "size": size, "device": str(device), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "num_classes": num_classes, "params_train": train_params,
            "params_inference": infer_params, "flops_inference": flops, "macs_inference": flops // 2,
            "model": mcfg.name, "output_stride": mcfg.output_stride if is_dml_csr else None,
            "paper": PAPER if is_paper else None, "malloc_env": malloc, "cpu": cpu}


def run(config_path: str, overrides: Sequence[str] = (), *, size: int = 473, batch: int = 1, repeats: int = 5,
        warmup: int = 2, device: str = "cpu", num_classes: Optional[int] = None, weights: Optional[str] = None,
        train: bool = False, deploy: bool = False, calib: str = "synthetic", agreement_weights: Optional[str] = None,
        profile: bool = False, variant: Sequence[str] = ()) -> dict:
    """The whole benchmark of ``scripts/benchmark.py``, printed as it goes; returns what its ``--json`` holds.
    ``variant``: config overrides (e.g. ``model.output_stride=16``) of a second model whose fp32 eager and deployment
    paths are timed against this run's fp32 eager, in rows that name the variant."""
    dev = torch.device(device)
    cfg = load_benchmark_config(config_path, overrides)
    if deploy or profile:  # what the deployment rows need, checked before anything is timed
        from ..photos.quantize import check_calibration_root

        check_calibration_root(calib)
        if variant:
            load_benchmark_config(config_path, [*overrides, *variant], source="--variant")
    trained = (*load_model(agreement_weights), agreement_weights) if deploy and agreement_weights else None
    spec = label_spec(cfg)
    num_classes = spec.num_classes if num_classes is None else num_classes
    classes = spec.classes if num_classes == spec.num_classes else [f"class_{i}" for i in range(num_classes)]
    result = _describe(cfg, config_path, num_classes, classes, size, dev, repeats, warmup)
    if weights:
        model, _ = load_model(weights, dev)
    else:
        torch.manual_seed(0)
        model = build_model(_with(cfg.model, False), num_classes, classes).to(dev).eval()
    rows = benchmark_inference(model, dev, size, sorted({1, batch}), warmup, repeats)
    at_size = make_meta(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, input_size=(size, size))), spec)
    if deploy:
        from .deploy import benchmark_deploy

        base = next(r["latency_ms"] / 1e3 for r in rows if r["path"] == "fp32 eager" and r["batch"] == 1)
        print(f"CPU deployment, batch 1, labels compared with fp32 eager on face images ({calib}"
              f"{', of ' + agreement_weights if agreement_weights else ''}):")
        rows += benchmark_deploy(model, at_size, base, warmup, repeats, calib, trained=trained)
        if variant:
            rows += _variant_rows(config_path, [*overrides], list(variant), model if weights else None, at_size,
                                  base, (num_classes, classes, warmup, repeats, calib), trained)
    if profile:
        from .profile import profile_stages

        print(f"where the time of one image goes ({size}x{size}, batch 1):")
        result["profile"] = profile_stages(model, at_size, warmup, repeats, calib)
    if train:
        rows += benchmark_train(_with(cfg.model, True), classes, dev, size, max(2, batch), warmup, repeats)
    return {**result, "rows": rows}
