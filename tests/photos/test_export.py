"""ONNX and TorchScript exports of the inference model: parity with PyTorch within 1e-4 on random inputs, dynamic
batch and size, opset, metadata, edge heads dropped."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.tiny_checkpoint import one_thread, write_tiny_checkpoint  # noqa: F401 (fixture)

from dml_csr.config import ModelConfig
from dml_csr.photos.export import InferenceWrapper, export_onnx, export_torchscript, read_onnx_meta, read_torchscript_meta
from dml_csr.models import build_model

pytestmark = pytest.mark.usefixtures("one_thread")
META = {"classes": [f"c{i}" for i in range(5)], "channel_order": "BGR", "mean": [0.4, 0.5, 0.6], "std": [0.2] * 3}
SHAPES = [(1, 3, 64, 64), (3, 3, 64, 64), (2, 3, 80, 48)]  # batch and size differ from the tracing input


def tiny_dml_csr(edge_heads=True):
    torch.manual_seed(0)
    cfg = ModelConfig(backbone="resnet18", output_stride=16, context_channels=32, decoder_channels=32,
                      edge_channels=16, edge_heads=edge_heads)
    model = build_model(cfg, 5).eval()
    with torch.no_grad():  # non-trivial norm statistics, so a wrong eval/train mode in the export would show
        for m in model.modules():
            if hasattr(m, "running_var") and m.running_var is not None:
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model


def reference(model, x):
    with torch.no_grad():
        logits = model(x)["parsing"]
    return torch.nn.functional.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=True).numpy()


def test_onnx_parity_dynamic_batch_and_size(tmp_path):
    import onnx
    import onnxruntime as ort

    model = tiny_dml_csr(edge_heads=True)
    path = str(tmp_path / "m.onnx")
    info = export_onnx(model, path, (64, 64), META)
    assert not model.has_edge_heads  # the inference model: edge heads dropped
    proto = onnx.load(path)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert [o.name for o in proto.graph.output] == ["logits"] and info["dynamic_axes"] == ["batch", "height", "width"]
    assert read_onnx_meta(path) == META
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(1)
    for shape in SHAPES:
        x = torch.randn(*shape, generator=g)
        got = sess.run(None, {"image": x.numpy()})[0]
        ref = reference(model, x)
        assert got.shape == ref.shape == (shape[0], 5) + shape[2:]
        assert np.abs(got - ref).max() < 1e-4


def test_onnx_static_size_keeps_dynamic_batch(tmp_path):
    import onnxruntime as ort

    model = tiny_dml_csr(edge_heads=False)
    path = str(tmp_path / "s.onnx")
    export_onnx(model, path, (48, 48), dynamic_size=False)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape == ["batch", 3, 48, 48]
    x = torch.randn(2, 3, 48, 48)
    assert np.abs(sess.run(None, {"image": x.numpy()})[0] - reference(model, x)).max() < 1e-4
    with pytest.raises(ValueError, match="opset"):
        export_onnx(model, path, (48, 48), opset=13)


def test_torchscript_parity(tmp_path):
    model = tiny_dml_csr(edge_heads=True)
    path = str(tmp_path / "m.ts")
    export_torchscript(model, path, (64, 64), META)
    module, meta = read_torchscript_meta(path)
    assert meta == META
    g = torch.Generator().manual_seed(2)
    for shape in SHAPES:
        x = torch.randn(*shape, generator=g)
        with torch.no_grad():
            got = module(x).numpy()
        assert np.abs(got - reference(model, x)).max() < 1e-4


def test_wrapper_does_not_resample_full_resolution_models():
    class FullRes(torch.nn.Module):
        def forward(self, x):
            return {"parsing": x[:, :2] * 2}

    x = torch.randn(1, 3, 9, 7)
    assert torch.equal(InferenceWrapper(FullRes())(x), x[:, :2] * 2)


def rnn_g():
    torch.manual_seed(0)
    return build_model(ModelConfig(name="rnn_g", rnn_channels=8), 5).eval()


def test_rnn_g_torchscript_parity(tmp_path):
    model = rnn_g()
    path = str(tmp_path / "r.ts")
    export_torchscript(model, path, (32, 32))
    module, _ = read_torchscript_meta(path)
    for shape in [(2, 3, 32, 32), (1, 3, 40, 24)]:
        x = torch.randn(*shape)
        with torch.no_grad():
            assert (module(x) - model(x)["parsing"]).abs().max() < 1e-4


def test_rnn_g_onnx_parity(tmp_path):
    import onnxruntime as ort

    model = rnn_g()
    path = str(tmp_path / "r.onnx")
    export_onnx(model, path, (32, 32))
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for shape in [(2, 3, 32, 32), (1, 3, 40, 24)]:  # RNN-G predicts at input resolution, any size
        x = torch.randn(*shape)
        with torch.no_grad():
            ref = model(x)["parsing"].numpy()
        assert np.abs(sess.run(None, {"image": x.numpy()})[0] - ref).max() < 1e-4