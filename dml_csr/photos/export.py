"""Export the inference model (edge heads dropped) to ONNX or TorchScript.

The exported graph takes the normalised input ``(B, 3, H, W)`` float32 (the checkpoint's channel order, mean and std,
recorded next to the graph) and returns parsing logits ``(B, C, H, W)`` at the input resolution (bilinear,
``align_corners=True``, as evaluation does). The batch dimension is dynamic; height and width are dynamic too where
the model allows it (both DML-CSR and RNN-G do, see :func:`export_onnx`), otherwise fixed at ``input_size``.

Metadata (classes, channel order, mean, std, input size) travels inside the file: ONNX ``metadata_props`` key
``dml_csr_meta`` and the TorchScript extra file ``meta.json``, both JSON.
"""
from __future__ import annotations

import io
import json
import logging
import warnings
from typing import Optional, Sequence

import torch
from torch import nn

from ..files import write_bytes
from ..conventions import resize_bilinear

__all__ = ["InferenceWrapper", "export_onnx", "export_torchscript", "read_onnx_meta", "read_torchscript_meta",
           "ONNX_OPSET"]

log = logging.getLogger(__name__)

ONNX_OPSET = 17
META_KEY = "dml_csr_meta"


class InferenceWrapper(nn.Module):
    """``(B, 3, H, W) -> (B, C, H, W)`` logits: the model's ``"parsing"`` output, upsampled only when its size
    differs from the input's (DML-CSR predicts at stride 4, RNN-G at input resolution)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        if hasattr(model, "drop_edge_heads"):
            model.drop_edge_heads()
        self.model = model
        self.eval()  # the exporters restore the wrapper's mode afterwards: it must be eval, or BN would train

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)["parsing"]
        if logits.shape[-2:] != x.shape[-2:]:
            logits = resize_bilinear(logits, x.shape[-2:])
        return logits


def _json_meta(meta: Optional[dict]) -> str:
    return json.dumps({k: v for k, v in (meta or {}).items()
                       if isinstance(v, (str, int, float, bool, list, tuple, type(None)))})


def export_onnx(model: nn.Module, path: str, input_size: Sequence[int], meta: Optional[dict] = None,
                opset: int = ONNX_OPSET, dynamic_size: bool = True) -> dict:
    """Write ``model`` (wrapped by :class:`InferenceWrapper`) as ONNX with a dynamic batch.

    Args:
        model: a DML-CSR or RNN-G model (edge heads are dropped in place).
        path: output ``.onnx`` file (written atomically).
        input_size: (height, width) of the tracing input.
        meta: checkpoint metadata stored as JSON under ``metadata_props["dml_csr_meta"]``.
        opset: ONNX opset, at least 17.
        dynamic_size: also make height and width dynamic.
    Returns:
        {"path", "opset", "dynamic_axes"}.
    """
    import onnx

    if opset < 17:
        raise ValueError(f"opset {opset} is too old; use 17 or newer")
    wrapper = InferenceWrapper(model).cpu().float()
    h, w = int(input_size[0]), int(input_size[1])
    x = torch.randn(1, 3, h, w)
    axes = {0: "batch", 2: "height", 3: "width"} if dynamic_size else {0: "batch"}
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape-dependent Python values
        torch.onnx.export(wrapper, (x,), buf, input_names=["image"], output_names=["logits"], opset_version=opset,
                          dynamic_axes={"image": axes, "logits": axes}, dynamo=False, do_constant_folding=True)
    proto = onnx.load_from_string(buf.getvalue())
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, _json_meta(meta)
    onnx.checker.check_model(proto)
    write_bytes(path, proto.SerializeToString())
    return {"path": path, "opset": opset, "dynamic_axes": list(axes.values())}


def export_torchscript(model: nn.Module, path: str, input_size: Sequence[int], meta: Optional[dict] = None) -> dict:
    """Write ``model`` (wrapped by :class:`InferenceWrapper`) as TorchScript via ``torch.jit.trace``.

    Returns:
        {"path"}. ``meta`` is stored as the extra file ``meta.json``.
    """
    wrapper = InferenceWrapper(model).cpu().float()
    x = torch.randn(1, 3, int(input_size[0]), int(input_size[1]))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(wrapper, (x,), check_trace=False)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in favour of torch.export
        torch.jit.save(traced, buf, _extra_files={"meta.json": _json_meta(meta)})
    write_bytes(path, buf.getvalue())
    return {"path": path}


def read_onnx_meta(path: str) -> dict:
    """The metadata :func:`export_onnx` stored in ``path``."""
    import onnx

    proto = onnx.load(path, load_external_data=False)
    for p in proto.metadata_props:
        if p.key == META_KEY:
            return json.loads(p.value)
    raise KeyError(f"'{path}' has no '{META_KEY}' metadata (not written by dml_csr.photos.export)")


def read_torchscript_meta(path: str) -> tuple[torch.jit.ScriptModule, dict]:
    """Load a TorchScript export on CPU; returns (module, metadata)."""
    extra = {"meta.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(path, map_location="cpu", _extra_files=extra)
    return module, json.loads(extra["meta.json"] or "{}")
