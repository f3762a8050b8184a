"""Precision and memory format of a model's forward pass, and the check of what a model is fed; shared by training,
the benchmark, the evaluator and the inference API.

fp32 eager is the reference. ``precision`` "bf16"/"fp16" runs the model under ``torch.autocast`` (on CPU, bf16 uses
AMX/AVX-512 BF16 kernels where the CPU has them); ``channels_last`` stores weights and activations NHWC, which the
oneDNN and cuDNN convolutions prefer. Usage::

    model = prepare_for_inference(model, precision, channels_last)
    with torch.inference_mode(), autocast_context(device, precision):
        logits = model(to_model_input(x, channels_last))["parsing"].float()
"""
from __future__ import annotations

import contextlib
from typing import ContextManager, Optional, Union

import torch
from torch import nn

__all__ = ["PRECISIONS", "autocast_context", "prepare_for_inference", "to_model_input", "check_image_input"]

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_image_input(x: torch.Tensor, model: str, weight_dtype: Optional[torch.dtype] = None) -> None:
    """Models take normalised float images (B, 3, H, W) of their weights' dtype (any float under autocast); the data
    pipeline's uint8 images need :func:`dml_csr.data.transforms.batch_input` (or ``normalize_images``) first."""
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"{model} expects images (B, 3, H, W); got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{model} expects normalised float images, got {x.dtype}; dataset samples are uint8 BGR: "
                        f"convert a collated batch with dml_csr.data.transforms.batch_input(batch), which applies the "
                        f"convention its samples recorded, or a bare tensor with normalize_images(images, "
                        f"channel_order, mean, std) using the model's (model.channel_order, model.mean, model.std)")
    if (weight_dtype is not None and x.dtype != weight_dtype and not torch.jit.is_tracing()
            and not torch.is_autocast_enabled(x.device.type)):
        raise TypeError(f"{model} weights are {weight_dtype} but the images are {x.dtype}; cast the images "
                        f"(images.to({weight_dtype})) or run under torch.autocast")


def _dtype(precision: str):
    if precision not in PRECISIONS:
        raise ValueError(f"precision '{precision}' is unknown; expected one of {', '.join(PRECISIONS)}")
    return PRECISIONS[precision]


def autocast_context(device: Union[str, torch.device], precision: str) -> ContextManager:
    """``torch.autocast`` for "bf16"/"fp16" on ``device``'s type; a no-op context for "fp32"."""
    dtype = _dtype(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def prepare_for_inference(model: nn.Module, precision: str = "fp32", channels_last: bool = False) -> nn.Module:
    """Put ``model`` in eval mode and, with ``channels_last``, NHWC memory format; returns it (modified in place).

    Weights stay fp32 (autocast casts per op), so the fp32 reference and the fast path share one model.
    """
    _dtype(precision)  # validate early
    model.eval()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def to_model_input(x: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """(B, 3, H, W) in the memory format the prepared model expects."""
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x
