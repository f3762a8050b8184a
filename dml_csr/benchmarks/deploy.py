"""CPU deployment paths on face images: bf16 + channels_last, ONNX Runtime fp32 and static int8, OpenVINO fp32 and
int8 (NNCF), each with its share of labels equal to fp32 eager's (``scripts/benchmark.py --deploy``).

The latency of every path is the timed model's (``--config``/``--size``/``--weights``, often the authors'
architecture with random weights); random weights give near-constant labels, so the labels are compared on a
trained model when one is given (``--agreement-weights``, e.g. the demo's checkpoint at its own size): each path
is then built a second time from it, calibrated and scored the same way, and the row says on what it was scored.
int8 paths are calibrated on ``2 * count`` images of the root's train split and scored on ``count`` of its test split.
"""
from __future__ import annotations

import copy
import importlib.util
import os
import tempfile
from typing import Callable, Optional

import numpy as np
import torch

from ..models import autocast_context, prepare_for_inference, to_model_input
from ..photos.export import InferenceWrapper, export_onnx
from ..photos.quantize import calibration_batch, quantize_onnx_int8
from ..photos.quantize import label_agreement, reference_labels
from ..photos.runtime import runner
from .isa import openvino_kernels
from .timing import result_row, time_fn

__all__ = ["benchmark_deploy", "deploy_paths"]

Run = Callable[[np.ndarray], np.ndarray]


def _bf16(model) -> Run:
    fast = InferenceWrapper(prepare_for_inference(copy.deepcopy(model), "bf16", True))

    def run(x):
        with torch.inference_mode(), autocast_context(torch.device("cpu"), "bf16"):
            return fast(to_model_input(torch.from_numpy(x), True)).float().numpy()
    return run


def deploy_paths(model, meta: dict, folder: str, calibration: np.ndarray) -> list[tuple[str, str, Run]]:
    """(label, precision, run) of every deployment path of ``model`` at ``meta``'s input size, its files written in
    ``folder``; the int8 paths calibrated on ``calibration``. OpenVINO's rows need openvino and nncf (skipped with a
    line saying so when they are missing)."""
    os.makedirs(folder, exist_ok=True)
    size, threads = tuple(meta["input_size"]), torch.get_num_threads()
    fp32 = os.path.join(folder, "model.onnx")
    export_onnx(copy.deepcopy(model).float(), fp32, size, dynamic_size=False)
    int8 = quantize_onnx_int8(fp32, os.path.join(folder, "model.int8.onnx"), calibration)
    paths = [("bf16 + channels_last (faces)", "bf16", _bf16(model)),
             ("onnxruntime fp32", "fp32", runner(fp32, threads)),
             ("onnxruntime int8 (static QDQ)", "int8", runner(int8, threads))]
    if importlib.util.find_spec("openvino") is None or importlib.util.find_spec("nncf") is None:
        print("openvino rows skipped: pip install 'dml_csr[openvino]'")
        return paths
    from ..photos.openvino import compile_ir, export_openvino, quantize_int8

    ir = export_openvino(copy.deepcopy(model).float(), os.path.join(folder, "model.xml"), size, meta,
                         dynamic_size=False)
    return paths + [("openvino fp32", "fp32", compile_ir(ir, threads, precision="f32")),
                    ("openvino int8 (NNCF)", "int8", compile_ir(quantize_int8(ir, calibration), threads, None))]


def benchmark_deploy(model, meta: dict, base_latency: float, warmup: int, repeats: int, calib: str,
                     count: int = 8, trained: Optional[tuple] = None) -> list[dict]:
    """Every path of :func:`deploy_paths` timed at batch 1 on a face image of ``calib`` (a prepared root's test split
    or "synthetic") made with ``meta``'s input convention and size, against ``base_latency`` (fp32 eager of this
    run); its labels compared with fp32 eager's on ``count`` test faces, of ``trained`` = (model, meta, name) when
    given, else of ``model``."""
    faces = calibration_batch(calib, "test", meta, count, seed=2000)
    with tempfile.TemporaryDirectory() as tmp:
        timed = deploy_paths(model, meta, os.path.join(tmp, "timed"),
                             calibration_batch(calib, "train", meta, 2 * count, seed=1000))
        scored, on = timed, f"{count} face images"
        check_model, check_faces = model, faces
        if trained is not None:
            check_model, check_meta, name = trained
            check_faces = calibration_batch(calib, "test", check_meta, count, seed=2000)
            scored = deploy_paths(check_model, check_meta, os.path.join(tmp, "scored"),
                                  calibration_batch(calib, "train", check_meta, 2 * count, seed=1000))
            on = f"{count} face images, {name} at {'x'.join(map(str, check_meta['input_size']))}"
        ref = reference_labels(check_model, check_faces)
        rows = []
        for (label, precision, run), (_, _, check) in zip(timed, scored):
            took = time_fn(lambda run=run: run(faces[:1]), torch.device("cpu"), warmup, repeats)
            kernels = openvino_kernels(run.compiled) if hasattr(run, "compiled") else None
            rows.append(result_row(label, precision, False, 1, took, base_latency,
                                   label_agreement(check, check_faces, ref), label_agreement_on=on, kernels=kernels))
    for row in rows:
        if row["kernels"]:
            print(f"  {row['path']}: convolutions run " + ", ".join(f"{k} x{n}" for k, n in row["kernels"].items()))
    if any(r["path"].startswith("onnxruntime") for r in rows):
        print("  onnxruntime: picks its kernels from CPUID alone (AMX int8 where the CPU has it); no ISA cap applies")
    return rows
