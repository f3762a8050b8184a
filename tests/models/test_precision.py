"""The fast path (bf16 autocast + channels_last) against fp32 eager, and the precision names."""
import contextlib

import pytest
import torch

from dml_csr.checkpoint import build_from_official
from dml_csr.models import autocast_context, prepare_for_inference, to_model_input


def test_fast_path_keeps_pixel_labels(official_sd):
    """Authors' architecture, deterministic random weights: >= 99.5% of labels unchanged in bf16 + channels_last."""
    model = build_from_official(official_sd, "official_state_dict(11)").eval()
    torch.manual_seed(0)
    x = torch.randn(2, 3, 97, 129)
    with torch.inference_mode():
        ref = model(x)["parsing"]
        prepare_for_inference(model, "bf16", channels_last=True)
        assert model.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
        with autocast_context("cpu", "bf16"):
            fast = model(to_model_input(x, channels_last=True))["parsing"]
    assert fast.dtype == torch.bfloat16 and fast.shape == ref.shape == (2, 11, 25, 33)
    agreement = (fast.float().argmax(1) == ref.argmax(1)).float().mean().item()
    assert agreement >= 0.995
    assert ((fast.float() - ref).abs().max() / ref.abs().max()).item() < 0.1  # bf16 rounding, not a different model


def test_autocast_context_and_precision_names():
    assert isinstance(autocast_context("cpu", "fp32"), contextlib.nullcontext)
    with autocast_context("cpu", "bf16"):
        y = torch.nn.functional.linear(torch.randn(2, 4), torch.randn(3, 4))
    assert y.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="precision 'int8'"):
        autocast_context("cpu", "int8")
    with pytest.raises(ValueError, match="precision 'fp64'"):
        prepare_for_inference(torch.nn.Conv2d(1, 1, 1), "fp64")
