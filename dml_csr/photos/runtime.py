"""Exported models run by their runtimes behind the PyTorch model's interface: an ONNX file through ONNX Runtime, an
OpenVINO IR (``model.xml`` beside ``model.bin``) through OpenVINO, both on the CPU.

:func:`load_exported` returns ``(model, meta)`` like :func:`dml_csr.checkpoint.load_model`: the model is a module
whose forward takes the normalised (B, 3, H, W) input and returns ``{"parsing": logits}``, so
:class:`~dml_csr.photos.parser.FaceParser` and ``scripts/predict.py`` put a deployed model through the same
pre- and post-processing (crop, alignment, flip and scales, paste-back) as the network it came from. The metadata
(classes, input convention, crop) is the one the export stored in the file (:mod:`dml_csr.photos.export`,
:mod:`dml_csr.photos.openvino`); a file without it is refused, since nothing else could say how to feed it.
"""
from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch import nn

from .export import META_KEY, read_onnx_meta

__all__ = ["RUNTIMES", "ExportedModel", "is_exported", "read_meta", "runner", "load_exported",
           "parity"]

RUNTIMES = {".onnx": "onnxruntime", ".xml": "openvino"}
Run = Callable[[np.ndarray], np.ndarray]


class ExportedModel(nn.Module):
    """An exported graph as a module: ``forward(x) -> {"parsing": logits}``, computed by ``run`` on the CPU (the
    input is copied there and the logits back to its device)."""

    def __init__(self, run: Run, path: str, runtime: str):
        super().__init__()
        self.run, self.path, self.runtime = run, path, runtime

    def forward(self, x: torch.Tensor, **kwargs) -> dict:
        if kwargs:
            raise ValueError(f"{self.path}: an exported model takes the image only, not {', '.join(kwargs)}")
        out = self.run(np.ascontiguousarray(x.detach().float().cpu().numpy()))
        return {"parsing": torch.from_numpy(np.asarray(out)).to(x.device)}

    def extra_repr(self) -> str:
        return f"{self.runtime}: {self.path}"


def is_exported(path: object) -> bool:
    """Whether ``path`` names an exported model a runtime runs (``.onnx``, ``.xml``)."""
    return isinstance(path, (str, os.PathLike)) and os.path.splitext(str(path))[1].lower() in RUNTIMES


def read_meta(path: str) -> dict:
    """The metadata an export stored in ``path``: ONNX ``metadata_props``, or the IR's ``rt_info`` (read from the
    XML itself, without OpenVINO)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"exported model '{path}' does not exist")
    if path.lower().endswith(".onnx"):
        return read_onnx_meta(path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise ValueError(f"'{path}' is not an OpenVINO IR (XML: {e})") from None
    node = root.find(f"rt_info/{META_KEY}")
    if node is None or "value" not in node.attrib:
        raise KeyError(f"'{path}' has no '{META_KEY}' rt_info (not written by dml_csr.photos.openvino)")
    return json.loads(node.attrib["value"])


def runner(path: str, threads: Optional[int] = None, precision: str = "f32") -> Run:
    """``x (B, 3, H, W) float32 -> logits`` of the exported model at ``path`` on the CPU. ``threads``: the runtime's
    intra-op threads (default: torch's); ``precision``: OpenVINO's inference precision hint ("f32" keeps fp32 where
    the CPU could run bf16; an int8 IR keeps its int8 operators either way)."""
    threads = threads or torch.get_num_threads()
    if path.lower().endswith(".onnx"):
        try:
            import onnxruntime as ort
        except ImportError:
            raise ImportError(f"running '{path}' needs onnxruntime: pip install 'dml_csr[onnx]'") from None
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        return lambda x: sess.run(None, {"image": x})[0]
    from .openvino import compile_ir

    return compile_ir(path, threads=threads, precision=precision)


def load_exported(path: str, threads: Optional[int] = None) -> tuple[ExportedModel, dict]:
    """(model, meta) of an exported file, as :func:`dml_csr.checkpoint.load_model` gives for a checkpoint."""
    meta = read_meta(path)
    missing = [k for k in ("classes", "input_size", "channel_order", "mean", "std") if k not in meta]
    if missing:
        raise KeyError(f"'{path}': its metadata lacks {', '.join(missing)}; export it again with scripts/export.py")
    run = runner(path, threads)
    return ExportedModel(run, path, RUNTIMES[os.path.splitext(path)[1].lower()]), meta


def parity(path: str, model: nn.Module, size: Sequence[int], dynamic: bool = True) -> float:
    """Max |export - PyTorch| of the logits on a random batch of 2 at ``size`` (and, for dynamic exports, at a
    different size): ONNX, OpenVINO (in fp32) or TorchScript. A ValueError when either output is not finite."""
    from .export import InferenceWrapper, read_torchscript_meta

    wrapper = InferenceWrapper(model).eval()
    if is_exported(path):
        run = runner(path, precision="f32")
    else:
        module, _ = read_torchscript_meta(path)
        run = lambda x: module(torch.from_numpy(x)).numpy()  # noqa: E731
    g = torch.Generator().manual_seed(0)
    worst = 0.0
    sizes = [tuple(size)] + ([(size[0] + 8, size[1] + 16)] if dynamic else [])
    for h, w in sizes:
        x = torch.randn(2, 3, h, w, generator=g)
        with torch.no_grad():
            ref = wrapper(x).numpy()
            got = np.asarray(run(x.numpy()))
        for what, out in (("the export", got), ("PyTorch", ref)):  # max() would pass over a NaN difference
            if not np.isfinite(out).all():
                raise ValueError(f"{path}: {what}'s output at {h}x{w} holds {int((~np.isfinite(out)).sum())} values "
                                 "that are not finite (NaN or infinity); parity cannot hold")
        worst = max(worst, float(np.abs(got - ref).max()))
    return worst
