"""OpenVINO for CPU deployment: the inference model as OpenVINO IR in fp32, and its int8 post-training quantization by
NNCF calibrated on face images (optional: ``pip install 'dml_csr[openvino]'``).

Usage::

    from dml_csr.photos.openvino import export_openvino, quantize_int8, compile_ir
    export_openvino(model, "model.xml", (128, 128), meta)             # model.xml + model.bin, fp32
    calib = calibration_batch("data/synthetic", "train", meta, 16)   # dml_csr.photos.quantize
    quantize_int8("model.xml", "model.int8.xml", calib)               # int8 weights and activations
    run = compile_ir("model.int8.xml")                                # x (B, 3, h, w) -> logits

The IR is converted from the ONNX export (:func:`dml_csr.photos.export.export_onnx`: the same graph, the same
dynamic batch, height and width) and saved uncompressed (fp32 weights: OpenVINO's default would store fp16). The
metadata travels in the IR's ``rt_info`` (key ``dml_csr_meta``, JSON). NNCF's quantization puts int8
fake-quantize operations on the convolutions' weights (per channel) and inputs (ranges from the calibration images),
which OpenVINO's CPU plugin runs as int8 kernels; fast bias correction keeps the layers' mean outputs. Every file is
written atomically (the ``.bin`` first, then the ``.xml`` that names it).
"""
from __future__ import annotations

import logging
import os
import tempfile
import threading
from typing import Callable, Optional, Sequence, Union

import numpy as np

from ..files import write_bytes
from .export import META_KEY, _json_meta, export_onnx

__all__ = ["export_openvino", "quantize_int8", "export_int8", "compile_ir", "compile_cpu", "save_ir", "int8_path", "core", "isa_cap",
           "bf16_allowed"]

log = logging.getLogger(__name__)
INSTALL = "pip install 'dml_csr[openvino]'"


def _ov():
    try:
        import openvino
    except ImportError:
        raise ImportError(f"OpenVINO export and inference need openvino: {INSTALL}") from None
    return openvino


_CORE, _CORE_LOCK = None, threading.Lock()


def core():
    """The process's one ``openvino.Core``, made on first use and kept.

    Each Core's CPU plugin gives the thread that compiles or runs on it an alternate signal stack of its own and,
    when the Core goes, puts back the one it found. Cores that overlap and go in another order than they came
    leave the thread pointing at a stack already unmapped (seen with OpenVINO 2025-2026: Core A, Core B, A goes,
    Core C, B goes, C goes); the next signal with a Python handler -- the SIGCHLD of a finished subprocess where a
    DataLoader has set one -- then kills the process with a segmentation fault that no handler sees. One Core,
    made before NNCF makes its own, keeps every restore in order."""
    global _CORE
    with _CORE_LOCK:  # two threads on their first call would make two Cores
        if _CORE is None:
            _CORE = _ov().Core()
    return _CORE


# oneDNN's run-time cap on its instruction sets (PyTorch's oneDNN and the CPU plugin's both read it, once, at their
# first kernel); the older name still works. The caps below bf16 compute, in oneDNN's spelling:
ISA_CAP_ENV = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")
_BELOW_BF16 = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}


def isa_cap() -> Optional[str]:
    """The instruction-set cap this process's oneDNN obeys (``ONEDNN_MAX_CPU_ISA``, else ``DNNL_MAX_CPU_ISA``), or
    None when neither is set."""
    for name in ISA_CAP_ENV:
        if os.environ.get(name):
            return os.environ[name].upper()  # oneDNN ignores a value with spaces around it; so does bf16_allowed
    return None


def bf16_allowed() -> bool:
    """False where the cap forbids the bf16 kernels (the AVX2 and AVX-512 caps below AVX512_CORE_BF16)."""
    return isa_cap() not in _BELOW_BF16


def int8_path(path: str) -> str:
    """Where the int8 IR of ``path`` goes: ``model.xml`` -> ``model.int8.xml``."""
    stem, ext = os.path.splitext(path)
    return f"{stem}.int8{ext or '.xml'}"


def save_ir(model, path: str) -> str:
    """Write the OpenVINO model ``model`` as ``path`` (.xml) and its ``.bin``, uncompressed, atomically."""
    ov = _ov()
    if not path.lower().endswith(".xml"):
        raise ValueError(f"--out '{path}': an OpenVINO IR is an .xml file (its weights go to the .bin beside it)")
    with tempfile.TemporaryDirectory() as tmp:
        xml = os.path.join(tmp, "model.xml")
        ov.save_model(model, xml, compress_to_fp16=False)
        for ext in (".bin", ".xml"):
            with open(os.path.join(tmp, "model" + ext), "rb") as f:
                write_bytes(os.path.splitext(path)[0] + ext, f.read())
    return path


def export_openvino(model, path: str, input_size: Sequence[int], meta: Optional[dict] = None,
                    dynamic_size: bool = True):
    """Write ``model`` (its inference wrapper, as the ONNX export) as an fp32 OpenVINO IR at ``path``; ``meta`` goes
    into the IR's ``rt_info``. Returns the OpenVINO model."""
    ov = _ov()
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = os.path.join(tmp, "model.onnx")
        export_onnx(model, onnx_path, input_size, meta, dynamic_size=dynamic_size)
        ov_model = ov.convert_model(onnx_path)
    ov_model.set_rt_info(_json_meta(meta), [META_KEY])
    save_ir(ov_model, path)
    return ov_model


def quantize_int8(src: Union[str, object], calibration: np.ndarray, *, preset: str = "mixed"):
    """The NNCF int8 post-training quantization of the IR ``src`` (a path or an OpenVINO model), its activation
    ranges from ``calibration`` ((N, 3, h, w) network inputs, one image a step); returns the OpenVINO model (not
    written: :func:`save_ir`), with ``src``'s metadata.

    ``preset``: "mixed" (symmetric weights, asymmetric activations: the heads' and the authors' backbone's
    LeakyReLU outputs are not one-signed) or "performance" (symmetric both). Bias correction runs in full, not its
    fast approximation. Both choices were measured on a trained demo-sized model (ResNet-18 at 128x128, 64 steps):
    98.97 % of the fp32 labels kept with NNCF's defaults (performance, fast bias correction), 99.34 % with these."""
    ov_core = core()  # ours before NNCF makes its own (see core())
    try:
        import nncf
    except ImportError:
        raise ImportError(f"int8 quantization for OpenVINO needs nncf: {INSTALL}") from None
    if calibration.ndim != 4 or len(calibration) == 0:
        raise ValueError(f"calibration must be (N, 3, h, w) network inputs with N >= 1; got {calibration.shape}")
    model = ov_core.read_model(src) if isinstance(src, str) else src
    items = [np.ascontiguousarray(calibration[i:i + 1], np.float32) for i in range(len(calibration))]
    logging.getLogger("nncf").setLevel(logging.WARNING)
    quantized = nncf.quantize(model, nncf.Dataset(items), preset=nncf.QuantizationPreset(preset),
                              subset_size=len(items), fast_bias_correction=False)
    if model.has_rt_info([META_KEY]):
        quantized.set_rt_info(model.get_rt_info([META_KEY]).astype(str), [META_KEY])
    return quantized


def compile_cpu(model: Union[str, object], threads: Optional[int] = None, precision: Optional[str] = "f32",
                latency: bool = True, perf_count: bool = False):
    """The OpenVINO compiled model of an IR on the CPU, as :func:`compile_ir` describes its arguments; ``perf_count``:
    with OpenVINO's per-operator counters (the benchmark's profile)."""
    config = {"PERFORMANCE_HINT": "LATENCY" if latency else "THROUGHPUT"}
    if precision is None and not bf16_allowed():
        precision = "f32"  # as on a CPU without bf16; OpenVINO would pick bf16 from the CPU's flags (and fail)
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    if perf_count:
        config["PERF_COUNT"] = True
    return core().compile_model(model, "CPU", config)


def compile_ir(model: Union[str, object], threads: Optional[int] = None, precision: Optional[str] = "f32",
               latency: bool = True) -> Callable[[np.ndarray], np.ndarray]:
    """``x (B, 3, h, w) float32 -> logits`` of an IR (a path or an OpenVINO model) compiled for the CPU.

    ``precision``: OpenVINO's inference precision hint, "f32" (the reference: on a CPU with bf16 support OpenVINO
    would otherwise run the fp32 operators in bf16) or None (OpenVINO's choice, except "f32" where
    ``ONEDNN_MAX_CPU_ISA`` caps the kernels below bf16, as a CPU without bf16 gets: OpenVINO 2026.4 still chooses
    bf16 from the CPU's flags, and under the AVX2 caps fails at the first inference with "node ... is not
    initialized"); ``threads``: its thread count;
    ``latency``: tuned for one request at a time (batch 1), as the benchmark measures."""
    compiled = compile_cpu(model, threads, precision, latency)
    request = compiled.create_infer_request()
    output = compiled.outputs[0]

    def run(x: np.ndarray) -> np.ndarray:
        return request.infer({0: x})[output].copy()
    run.compiled = compiled  # its kernels: dml_csr.benchmarks.isa.openvino_kernels
    return run


def export_int8(model, fp32_path: str, path: str, meta: dict, calib: str, *, count: int = 32,
                min_agreement: float = 0.99) -> dict:
    """The int8 IR of the fp32 IR ``fp32_path`` (exported from ``model``) at ``path``: calibrated on ``count`` images
    of the prepared root ``calib``'s train split ("synthetic": rendered faces), its labels compared with ``model``'s
    fp32 PyTorch labels on ``count`` images of the test split, and written only when at least ``min_agreement`` of
    them are unchanged (otherwise a one-line error). Returns {"path", "agreement", "images"}."""
    from .quantize import calibration_batch, label_agreement, reference_labels

    calibration = calibration_batch(calib, "train", meta, count, seed=1000)
    faces = calibration_batch(calib, "test", meta, count, seed=2000)
    quantized = quantize_int8(fp32_path, calibration)
    agreement = label_agreement(compile_ir(quantized, precision=None), faces, reference_labels(model, faces))
    if agreement < min_agreement:
        raise ValueError(f"{path}: the int8 IR keeps {100 * agreement:.2f}% of the labels of the fp32 model on "
                         f"{len(faces)} test images of '{calib}', below --min-agreement {100 * min_agreement:g}%; "
                         "not written (calibrate on more images, or lower the threshold knowingly)")
    save_ir(quantized, path)
    return {"path": path, "agreement": agreement, "images": len(faces)}
