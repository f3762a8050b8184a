"""dml_csr.photos.openvino: the IR in fp32 within 1e-4 of PyTorch at any batch and size, uncompressed, with our
metadata in its rt_info; int8 by NNCF written only above the label agreement asked for (the demo-sized model, trained,
is tests/scripts/test_export.py's)."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from helpers.tiny_checkpoint import one_thread, write_tiny_checkpoint  # noqa: F401 (fixture)

from dml_csr import load_model
from dml_csr.data.synthetic import write_dataset
from dml_csr.photos import openvino, runtime
from dml_csr.photos.export import InferenceWrapper

pytest.importorskip("openvino")
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("openvino")
    model, meta = load_model(write_tiny_checkpoint(str(tmp / "tiny.pt")))
    return tmp, model, meta


def test_the_fp32_ir_matches_pytorch_at_any_batch_and_size(tiny):
    tmp, model, meta = tiny
    path = str(tmp / "tiny.xml")
    openvino.export_openvino(model, path, (64, 64), meta)
    stored = runtime.read_meta(path)
    assert {k: stored[k] for k in ("classes", "channel_order", "mean", "std")} == \
        {k: meta[k] for k in ("classes", "channel_order", "mean", "std")}
    params = sum(p.numel() for p in model.parameters())
    assert os.path.getsize(str(tmp / "tiny.bin")) > 3 * params  # fp32 weights (4 bytes), not OpenVINO's default fp16
    run = openvino.compile_ir(path)
    wrapper = InferenceWrapper(model).eval()
    for shape in ((1, 3, 64, 64), (3, 3, 64, 64), (2, 3, 80, 48)):
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)))
        with torch.no_grad():
            ref = wrapper(x).numpy()
        got = run(x.numpy())
        assert got.shape == ref.shape and np.abs(got - ref).max() < 1e-4
    assert runtime.parity(path, model, (64, 64)) < 1e-4
    assert not [f for f in os.listdir(tmp) if f.startswith(".tmp-")]  # written whole


def test_int8_below_the_agreement_asked_for_is_not_written(tiny):
    tmp, model, meta = tiny
    root = str(tmp / "faces")
    write_dataset(root, {"train": 4, "test": 2}, seed=5, size=(96, 96))
    fp32 = str(tmp / "gate.xml")
    openvino.export_openvino(model, fp32, (64, 64), meta)
    int8 = openvino.int8_path(fp32)
    assert int8 == str(tmp / "gate.int8.xml")
    with pytest.raises(ValueError) as e:
        openvino.export_int8(model, fp32, int8, meta, root, count=2, min_agreement=1.01)
    msg = str(e.value)
    assert msg.startswith(f"{int8}: the int8 IR keeps ") and "of the labels of the fp32 model on 2 test images of" in msg
    assert "below --min-agreement 101%; not written" in msg and "\n" not in msg
    assert not os.path.exists(int8) and not os.path.exists(str(tmp / "gate.int8.bin"))
    r = openvino.export_int8(model, fp32, int8, meta, root, count=2, min_agreement=0.0)
    assert r["images"] == 2 and 0.0 <= r["agreement"] <= 1.0 and runtime.read_meta(int8) == runtime.read_meta(fp32)
    with pytest.raises(ValueError, match="an OpenVINO IR is an .xml file"):
        openvino.save_ir(None, str(tmp / "model.bin"))
