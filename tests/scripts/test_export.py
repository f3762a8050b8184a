"""scripts/export.py: both models to ONNX and TorchScript, the parity check it runs and the metadata it stores."""
import os
import re

import numpy as np
import pytest
from helpers.scripts import run_script
from helpers.tiny_checkpoint import write_tiny_checkpoint

from dml_csr.photos.export import read_onnx_meta, read_torchscript_meta


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_script_checks_parity(tmp_path, fmt):
    ckpt = write_tiny_checkpoint(str(tmp_path / "tiny.pt"))
    out = str(tmp_path / f"m.{fmt}")
    r = run_script("export", "--checkpoint", ckpt, "--format", fmt, "--out", out, "--input-size", "48,40")
    assert r.returncode == 0, r.stderr
    diff = float(r.stdout.split("pytorch| = ")[1].split()[0])
    assert diff < 1e-4 and os.path.isfile(out)
    meta = read_onnx_meta(out) if fmt == "onnx" else read_torchscript_meta(out)[1]
    assert meta["input_size"] == [48, 40] and meta["classes"][0] == "background" and meta["channel_order"] == "BGR"



def test_export_script_onnx_parity_rnn_g(rnn_g_run):
    tmp, _, _, best = rnn_g_run
    out = tmp / "rg.onnx"
    r = run_script("export", "--checkpoint", best, "--format", "onnx", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "parity" in r.stdout  # the script fails by itself above its tolerance
    meta = read_onnx_meta(str(out))
    assert meta["model_name"] == "rnn_g" and meta["num_classes"] == 11 and meta["input_size"] == [64, 64]
    import onnxruntime as ort
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    logits = sess.run(None, {"image": np.random.default_rng(0).normal(size=(3, 3, 40, 56)).astype(np.float32)})[0]
    assert logits.shape == (3, 11, 40, 56)


def test_an_export_whose_output_is_not_finite_fails_its_parity_check(tmp_path):
    """max(worst, nan) is worst: a NaN export passed parity as "0". A batch norm whose running variance is negative
    (finite weights, so the checkpoint loads) makes every output NaN: the check names it and the script fails."""
    import torch

    ckpt = write_tiny_checkpoint(str(tmp_path / "tiny.pt"))
    obj = torch.load(ckpt, weights_only=True)
    var = next(k for k in obj["model"] if k.endswith("running_var"))
    obj["model"][var].fill_(-1.0)
    torch.save(obj, ckpt)
    out = str(tmp_path / "m.torchscript")
    r = run_script("export", "--checkpoint", ckpt, "--format", "torchscript", "--out", out, "--input-size", "48,40")
    assert r.returncode == 2, r.stderr
    assert re.fullmatch(rf"error: {re.escape(out)}: the export's output at \d+x\d+ holds \d+ values that are not "
                        r"finite \(NaN or infinity\); parity cannot hold\n", r.stderr), r.stderr
