"""CPU deployment paths on face images: bf16 + channels_last, ONNX Runtime fp32 and ONNX Runtime static int8, each
with its share of labels equal to fp32 eager's on the same faces (``scripts/benchmark.py --deploy``)."""
from __future__ import annotations

import copy
import os
import tempfile

import numpy as np
import torch

from ..models import autocast_context, prepare_for_inference, to_model_input
from ..photos.export import InferenceWrapper, export_onnx
from ..photos.quantize import calibration_batch, quantize_onnx_int8
from .timing import result_row, time_fn

__all__ = ["benchmark_deploy"]


def benchmark_deploy(model, meta: dict, base_latency: float, warmup: int, repeats: int, calib: str,
                     count: int = 8) -> list[dict]:
    """The three paths on ``count`` face images (synthetic faces, or a prepared root's test images) made with
    ``meta``'s input convention and size; int8 is calibrated on other images (the root's train split). Ratios are
    against ``base_latency`` (fp32 eager of this run)."""
    import onnxruntime as ort

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
        export_onnx(copy.deepcopy(model).float(), fp32, tuple(meta["input_size"]), dynamic_size=False)
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
    latency, peak, _ = time_fn(lambda: run(faces[:1]), torch.device("cpu"), warmup, repeats)
    same = [float((np.asarray(run(f[None])).argmax(1) == r).mean()) for f, r in zip(faces, ref)]
    return result_row(label, precision, False, 1, latency, base_latency, peak, float(np.mean(same)),
                      label_agreement_on=f"{len(faces)} face images")
