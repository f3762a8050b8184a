"""int8 for CPU deployment: ONNX Runtime's static quantization of an exported model, calibrated on a few images.

Usage::

    from dml_csr.photos.quantize import calibration_batch, quantize_onnx_int8
    images = calibration_batch("data/helen", "train", meta, count=16)     # (N, 3, h, w) network input
    quantize_onnx_int8("model.onnx", "model.int8.onnx", images)

Weights are quantized per output channel (signed int8), activations per tensor (unsigned int8) from the ranges the
calibration images produce, in QDQ form (quantize/dequantize pairs around each operator, which ONNX Runtime fuses into
integer kernels). Calibrate on images like those the model will see: a few dozen training images are plenty, noise
is not. ``scripts/benchmark.py --deploy`` measures the speed and the share of labels that stay the same.
"""
from __future__ import annotations

import os
import tempfile
from typing import Callable, Optional, Sequence

import numpy as np

from ..files import write_bytes

__all__ = ["quantize_onnx_int8", "calibration_batch", "check_calibration_root", "to_network_input", "label_agreement",
           "reference_labels"]


def to_network_input(images_bgr: Sequence[np.ndarray], meta: dict,
                     points: Optional[Sequence[np.ndarray]] = None) -> np.ndarray:
    """(N, 3, h, w) float32 network input of BGR images, by the evaluation crop and the checkpoint's convention; with
    ``points`` (each image's five landmarks) each face framed by their similarity onto the checkpoint's template."""
    import torch

    from .. import inference
    from ..data.face_template import template_points
    from ..data.transforms import similarity_transform

    affines = None
    if points is not None:
        template = template_points(meta["crop"], meta["input_size"])
        affines = [similarity_transform(p, template) for p in points]
    with torch.no_grad():
        return inference.network_input(images_bgr, inference.input_transform(meta), affines)[0].numpy()


def check_calibration_root(root: str, flag: str = "--calib") -> None:
    """Before any work: ``root`` is "synthetic" or a prepared root with the train split int8 is calibrated on and the
    test split it is checked on; else one line naming ``flag`` and what is missing."""
    if root == "synthetic":
        return
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{flag} '{root}' is not a folder; give a prepared root (int8 is calibrated on its "
                                f"train split and checked on its test split) or 'synthetic'")
    for split in ("train", "test"):
        if not os.path.isfile(os.path.join(root, f"{split}_list.txt")):
            raise FileNotFoundError(f"{flag} '{root}' has no {split}_list.txt; int8 is calibrated on a prepared "
                                    f"root's train split and checked on its test split")


def calibration_batch(root: str, split: str, meta: dict, count: int = 16, seed: int = 1000) -> np.ndarray:
    """``count`` evenly spaced images of a prepared split as network input; ``root="synthetic"`` renders synthetic
    faces instead (seeds ``seed``, ``seed + 1``, ..., at twice the input size). A model trained on faces framed by
    their landmarks (``meta["crop"]["align"]``: ``data.align: landmarks``) gets its images framed so too (the
    split's landmark files, the rendered faces' keypoints)."""
    from ..data.face_template import framed_by_landmarks

    framed = framed_by_landmarks(meta.get("crop"))
    if root == "synthetic":
        from ..data.synthetic import render_face

        h, w = meta["input_size"]
        renders = [render_face(seed + i, size=(2 * h, 2 * w)) for i in range(count)]
        images, points = [r[0] for r in renders], [r[2] for r in renders]
    else:
        from ..data.dataset import evenly_spaced, landmark_file, read_five_points, read_image, read_split_list

        items = read_split_list(root, split)
        picked = [items[i] for i in evenly_spaced(len(items), count)]
        images = [read_image(path) for _, path, _ in picked]
        points = [read_five_points(landmark_file(path, name)) for name, path, _ in picked] if framed else None
    return to_network_input(images, meta, points if framed else None)


def quantize_onnx_int8(src: str, dst: str, calibration: np.ndarray, per_channel: bool = True) -> str:
    """Write the static int8 (QDQ) quantization of the ONNX model ``src`` to ``dst`` (atomically); returns ``dst``.

    Args:
        calibration: (N, 3, h, w) float32 network inputs whose activation ranges set the scales.
    """
    try:
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError:
        raise ImportError("int8 quantization needs onnxruntime: pip install 'dml_csr[onnx]'") from None
    if calibration.ndim != 4 or len(calibration) == 0:
        raise ValueError(f"calibration must be (N, 3, h, w) network inputs with N >= 1; got {calibration.shape}")

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.rows = iter(np.ascontiguousarray(calibration[i: i + 1], np.float32) for i in range(len(calibration)))

        def get_next(self):
            x = next(self.rows, None)
            return None if x is None else {"image": x}

    with tempfile.TemporaryDirectory() as tmp:  # the quantizer writes to a path: made whole there, then moved
        ready, out = os.path.join(tmp, "model.prep.onnx"), os.path.join(tmp, "model.int8.onnx")
        # the pre-processing ONNX Runtime asks for (shape inference, constant folding: biases become initializers);
        # without it, it warns once per convolution and once more about the missing step
        quant_pre_process(src, ready, skip_symbolic_shape=True)
        quantize_static(ready, out, Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        with open(out, "rb") as f:
            write_bytes(dst, f.read())
    return dst


def label_agreement(run: Callable[[np.ndarray], np.ndarray], inputs: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> float:
    """The share of pixels whose label (argmax over classes) from ``run`` on each (3, h, w) input equals the
    reference labels (h, w) of the same input, pooled over all inputs."""
    same = total = 0
    for x, ref in zip(inputs, reference):
        labels = np.asarray(run(np.ascontiguousarray(x[None], np.float32))).argmax(1)[0]
        same += int((labels == ref).sum())
        total += ref.size
    return same / max(total, 1)


def reference_labels(model, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """fp32 PyTorch labels (h, w) of each (3, h, w) input, at the input's resolution (as the exported graph)."""
    import torch

    from .export import InferenceWrapper

    wrapper = InferenceWrapper(model).eval()
    with torch.inference_mode():
        return [wrapper(torch.from_numpy(np.ascontiguousarray(x[None], np.float32))).argmax(1)[0].numpy()
                for x in inputs]
