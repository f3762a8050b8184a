"""Where the time of one image goes, stage by stage (``scripts/benchmark.py --deploy --profile``): the backbone's stem
and its four stages, the context head, the decoder and the rest, in fp32 eager (forward hooks), OpenVINO fp32 and
OpenVINO int8 (its own per-operator counters, grouped by the stage in each operator's name).

A path whose total misses its goal shows here which stage to work on: the stage that keeps its time under int8
(operators OpenVINO leaves in floating point: the ``kernels`` column names what each stage ran) or the one that
dominates whatever the precision (a lever for the architecture: output stride 16, the head's width).
"""
from __future__ import annotations

import copy
import os
import re
import statistics
import tempfile
import time
from collections import defaultdict

import numpy as np
import torch

from ..photos.export import InferenceWrapper
from ..photos.quantize import calibration_batch
from .timing import minor_faults

__all__ = ["profile_stages", "stage_of"]

LAYER = re.compile(r"layer\d+$")


def stage_of(name: str) -> str:
    """The stage of an exported operator's name (``/model/backbone/layer3/...`` -> ``layer3``; the backbone's other
    operators -> ``stem``; ``/model/context/...`` -> ``context``), ``other`` for names without one."""
    m = re.search(r"/model/([^/]+)(?:/([^/]+))?", name)
    if m is None:
        return "other"
    if m.group(1) == "backbone":
        return m.group(2) if m.group(2) and LAYER.match(m.group(2)) else "stem"
    return m.group(1)


def _eager(model, x: torch.Tensor, warmup: int, repeats: int) -> tuple[dict, float]:
    """Median seconds a stage in fp32 eager, from forward hooks (the stem: the backbone less its stages), and the
    page faults a timed run."""
    wrapper = InferenceWrapper(copy.deepcopy(model)).eval()
    modules = {}
    for name, child in wrapper.model.named_children():
        modules[name] = child
        modules.update({n: c for n, c in child.named_children() if LAYER.match(n)})
    times, start = defaultdict(list), {}
    for name, mod in modules.items():
        mod.register_forward_pre_hook(lambda m, a, name=name: start.__setitem__(name, time.perf_counter()))
        mod.register_forward_hook(lambda m, a, o, name=name: times[name].append(time.perf_counter() - start[name]))
    totals = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            if i == warmup:
                faults = minor_faults()
            t0 = time.perf_counter()
            wrapper(x)
            totals.append(time.perf_counter() - t0)
    faults = (minor_faults() - faults) / repeats
    out = {k: statistics.median(v[warmup:]) for k, v in times.items()}
    if "backbone" in out:
        out["stem"] = out.pop("backbone") - sum(v for k, v in out.items() if LAYER.match(k))
    out["other"] = statistics.median(totals[warmup:]) - sum(out.values())
    return out, faults


def _runtime_stages(compiled) -> dict:
    """The stage of each operator OpenVINO runs, by its name. The CPU plugin renames what it fuses (a convolution
    with its batch norm becomes ``Multiply_NNNN``): an operator's stage is that of the first of its original layers'
    names (``originalLayersNames``) that has one, else that of the first of the operators feeding it that has one
    (in graph order; a fused operator at a stage's first layer is then counted in the stage before)."""
    stages: dict = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        names = info["originalLayersNames"].astype(str).split(",") if "originalLayersNames" in info else []
        found = [stage_of(n) for n in names + [op.get_friendly_name()] if stage_of(n) != "other"]
        if not found:
            inputs = (i.get_source_output().get_node().get_friendly_name() for i in op.inputs())
            found = [stages[n] for n in inputs if stages.get(n, "other") != "other"]
        stages[op.get_friendly_name()] = found[0] if found else "other"
    return stages


def _openvino(ir, x: np.ndarray, warmup: int, repeats: int, precision) -> tuple[dict, dict, float]:
    """Seconds a stage (the median run's counters) and the kernels each stage ran, from OpenVINO's counters, and the
    page faults a timed run."""
    from ..photos.openvino import compile_cpu

    compiled = compile_cpu(ir, torch.get_num_threads(), precision, perf_count=True)
    request, names = compiled.create_infer_request(), _runtime_stages(compiled)
    runs = []
    for i in range(warmup + repeats):
        if i == warmup:
            faults = minor_faults()
        request.infer({0: x})
        if i >= warmup:
            stages, kernels = defaultdict(float), defaultdict(set)
            for p in request.get_profiling_info():
                if p.status.name == "EXECUTED":
                    stage = names.get(p.node_name) or stage_of(p.node_name)
                    stages[stage] += p.real_time.total_seconds()
                    kernels[stage].add(p.exec_type)
            runs.append((sum(stages.values()), stages, kernels))
    faults = (minor_faults() - faults) / repeats
    runs.sort(key=lambda r: r[0])
    return dict(runs[len(runs) // 2][1]), {k: sorted(v) for k, v in runs[len(runs) // 2][2].items()}, faults


def profile_stages(model, meta: dict, warmup: int, repeats: int, calib: str) -> dict:
    """Per stage, milliseconds of one image in fp32 eager, OpenVINO fp32 and OpenVINO int8 (calibrated on 16 train
    images of ``calib``), printed as a table with the page faults a run of each; returns {"stages", "eager_ms",
    "openvino_fp32_ms", "openvino_int8_ms", "int8_kernels", "page_faults"}."""
    from ..photos.openvino import export_openvino, quantize_int8

    face = calibration_batch(calib, "test", meta, 1, seed=2000)
    eager, faults = _eager(model, torch.from_numpy(face), warmup, repeats)
    with tempfile.TemporaryDirectory() as tmp:
        ir = export_openvino(copy.deepcopy(model).float(), os.path.join(tmp, "model.xml"), meta["input_size"], meta,
                             dynamic_size=False)
        fp32, _, fp32_faults = _openvino(ir, face, warmup, repeats, "f32")
        int8_ir = quantize_int8(ir, calibration_batch(calib, "train", meta, 16, seed=1000))
        int8, kernels, int8_faults = _openvino(int8_ir, face, warmup, repeats, None)
    stages = [s for s in ("stem", "layer1", "layer2", "layer3", "layer4") if s in eager or s in fp32]
    stages += sorted((set(eager) | set(fp32) | set(int8)) - set(stages) - {"other"}) + ["other"]
    ms = {k: {s: 1e3 * d.get(s, 0.0) for s in stages} for k, d in (("eager", eager), ("fp32", fp32), ("int8", int8))}
    print(f"{'stage':<10}{'eager fp32 ms':>15}{'openvino fp32 ms':>18}{'openvino int8 ms':>18}  int8 kernels")
    for s in stages + ["total"]:
        row = [sum(ms[k].values()) if s == "total" else ms[k][s] for k in ("eager", "fp32", "int8")]
        print(f"{s:<10}{row[0]:>15.1f}{row[1]:>18.1f}{row[2]:>18.1f}  {', '.join(kernels.get(s, []))[:60]}")
    faults = {"eager": faults, "fp32": fp32_faults, "int8": int8_faults}
    print(f"{'faults/run':<10}{faults['eager']:>15,.0f}{faults['fp32']:>18,.0f}{faults['int8']:>18,.0f}")
    return {"stages": stages, "eager_ms": ms["eager"], "openvino_fp32_ms": ms["fp32"], "openvino_int8_ms": ms["int8"],
            "int8_kernels": kernels, "page_faults": faults}
