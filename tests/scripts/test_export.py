"""scripts/export.py: both models to ONNX and TorchScript, the parity check it runs and the metadata it stores; a
trained model shared as a Hugging Face folder and loaded back by path and by name; the demo-sized model deployed to
OpenVINO fp32 and int8 and run by predict.py."""
import json
import os
import re
import socket
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from helpers import ROOT
from helpers.hf_cache import COMMIT, FakeApi, go_offline, lay_out
from helpers.micro import MICRO
from helpers.scripts import run_script
from helpers.tiny_checkpoint import subprocess_env, write_tiny_checkpoint

from dml_csr import FaceParser, load_model
from dml_csr.config import load_config
from dml_csr.data.labels import get_spec
from dml_csr.data.synthetic import render_face
from dml_csr.hub import sha256_of
from dml_csr.photos.export import read_onnx_meta, read_torchscript_meta
from dml_csr.photos.openvino import int8_path as openvino_int8_path
from dml_csr.photos.quantize import calibration_batch
from dml_csr.photos.quantize import reference_labels
from dml_csr.training.trainer import train


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


# ------------------------------------------------------------------------------ shared: a model folder, by name
def test_a_trained_model_shared_as_a_folder_loads_back_by_path_and_by_hub_name(tiny_synthetic, tmp_path, monkeypatch):
    """Train, evaluate, export --format hf; the folder loads back by its path and, laid out in a Hugging Face cache,
    by hf:// offline (in this process, through torch.hub and in predict.py's), with the very same probabilities; the
    card names the classes, the metrics and the licence; a pickle or a changed file in place of the weights is refused
    in one line."""
    cfg = load_config(None, MICRO + [f"data.root={tiny_synthetic}", f"output_dir={tmp_path / 'runs'}", "name=shared",
                                     "train.epochs=2", "train.cycles=0"])
    best = train(cfg, progress=False)["best"]
    r = run_script("evaluate", "--config", os.path.join(cfg.run_dir, "config.yaml"), "--checkpoint", best,
                   "--no-progress")
    assert r.returncode == 0, r.stderr
    scores = json.load(open(os.path.join(cfg.run_dir, "eval_test", "metrics.json")))["scores"]
    out = str(tmp_path / "shared")
    r = run_script("export", "--checkpoint", best, "--format", "hf", "--out", out)
    assert r.returncode == 0, r.stderr
    assert f"wrote {out} (model.safetensors, config.json, README.md; metrics of the splits: test)" in r.stdout
    card = open(os.path.join(out, "README.md")).read()
    assert all(f"| {i} | {c} | #" in card for i, c in enumerate(get_spec("synthetic").classes))
    assert f"| test | 4 | False | [1.0] | nearest | original | whole | off | {100 * scores['mean_f1']:.2f} | " \
        f"{100 * scores['miou']:.2f} |" in card
    assert "license: apache-2.0" in card and "the weights carry the code's licence, Apache-2.0" in card

    photos = [render_face(i, size=(80, 72))[0] for i in range(3)]
    ref = [FaceParser.from_checkpoint(best)(p, channel_order="BGR", return_probs=True) for p in photos]

    def same(parser):
        for (labels, probs), photo in zip(ref, photos):
            got, got_probs = parser(photo, channel_order="BGR", return_probs=True)
            assert np.array_equal(got, labels) and np.array_equal(got_probs, probs)
    same(FaceParser.from_pretrained(out))
    cache = str(tmp_path / "hf_cache")
    lay_out(cache, "someone/micro-parser", {f: os.path.join(out, f) for f in os.listdir(out)}, COMMIT, ("main", "v1"))
    go_offline(monkeypatch, cache)
    monkeypatch.setattr(socket, "getaddrinfo", _no_network)
    same(FaceParser.from_pretrained("hf://someone/micro-parser@v1"))
    same(torch.hub.load(ROOT, "dml_csr", source="local", name="hf://someone/micro-parser@v1"))
    # the same folder scores as its checkpoint does, and its metrics name the weights file's hash
    r = run_script("evaluate", "--config", os.path.join(cfg.run_dir, "config.yaml"), "--checkpoint",
                   "hf://someone/micro-parser", "--no-progress", "--out", str(tmp_path / "eval_hf"))
    assert r.returncode == 0, r.stderr
    record = json.load(open(tmp_path / "eval_hf" / "metrics.json"))
    assert record["scores"] == scores and record["protocol"]["checkpoint_name"] == "hf://someone/micro-parser"
    assert record["protocol"]["checkpoint_sha256"] == sha256_of(os.path.join(out, "model.safetensors"))
    # predict.py in a fresh interpreter, offline by the environment alone
    cv2.imwrite(str(tmp_path / "face.png"), photos[0])
    env = dict(subprocess_env(), HF_HUB_OFFLINE="1", HF_HUB_CACHE=cache, DML_CSR_HOME=str(tmp_path / "home"),
               PYTHONPATH=ROOT)
    done = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "predict.py"), str(tmp_path / "face.png"),
                           "--checkpoint", "hf://someone/micro-parser", "--out", str(tmp_path / "pred"),
                           "--device", "cpu", "--no-progress", "--no-overlay"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert np.array_equal(cv2.imread(str(tmp_path / "pred" / "labels" / "face.png"), cv2.IMREAD_UNCHANGED), ref[0][0])

    weights = os.path.join(out, "model.safetensors")
    good = open(weights, "rb").read()
    for bad, why in ((None, "is not a safetensors file (a zip archive"), (good[:-1] + bytes([good[-1] ^ 1]),
                                                                         "a changed or damaged file, refused")):
        if bad is None:
            torch.save(load_model(best)[0].state_dict(), weights)  # a pickle under the safetensors name
        else:
            open(weights, "wb").write(bad)
        r = run_script("predict", str(tmp_path / "face.png"), "--checkpoint", out, "--out", str(tmp_path / "p2"),
                       "--device", "cpu", "--no-progress")
        assert r.returncode == 2 and why in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def _no_network(host, *args, **kwargs):
    raise AssertionError(f"a test tried to reach {host}")


def test_export_push_uploads_through_huggingface_hub(tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    FakeApi.calls = []
    ckpt = write_tiny_checkpoint(str(tmp_path / "tiny.pt"))
    out = str(tmp_path / "hf")
    r = run_script("export", "--checkpoint", ckpt, "--format", "hf", "--out", out, "--push", "someone/tiny",
                   "--revision", "exp1")
    assert r.returncode == 0, r.stderr
    assert f"pushed to someone/tiny: https://huggingface.co/someone/tiny/commit/{COMMIT}" in r.stdout
    assert [c[0] for c in FakeApi.calls] == ["create_repo", "create_branch", "upload_folder"]
    assert FakeApi.calls[2][2]["files"] == ["README.md", "config.json", "model.safetensors"]
    assert 'from_pretrained("hf://someone/tiny")' in open(os.path.join(out, "README.md")).read()
    r = run_script("export", "--checkpoint", ckpt, "--format", "onnx", "--out", str(tmp_path / "m.onnx"), "--push",
                   "someone/tiny")
    assert r.returncode == 2 and "--push and --metrics are for --format hf" in r.stderr


# ------------------------------------------------------------------------------ deployed: OpenVINO fp32 and int8
@pytest.mark.slow
def test_the_demo_sized_model_deploys_to_openvino_and_predict_runs_the_exports(demo_trained, tmp_path):
    """The demo's model, trained: OpenVINO fp32 within 1e-4 of PyTorch, int8 (NNCF, calibrated on the train split)
    keeping >= 99 % of the labels on the test split; predict.py runs the IRs and an ONNX export as it runs the
    checkpoint."""
    root, best = demo_trained
    model, meta = load_model(best)
    faces = calibration_batch(root, "test", meta, 16, seed=2000)
    shares = np.bincount(np.concatenate([r.ravel() for r in reference_labels(model, faces)]), minlength=11) / \
        (16 * 128 * 128)
    assert (shares > 0.004).sum() == 11, shares  # every class: the labels compared are a trained model's
    xml = str(tmp_path / "demo.xml")
    r = run_script("export", "--checkpoint", best, "--format", "openvino", "--out", xml, "--int8", "--calib", root,
                   "--calib-count", "16")
    assert r.returncode == 0, r.stderr
    assert float(r.stdout.split("pytorch| = ")[1].split()[0]) < 1e-4
    kept = float(r.stdout.split("(OpenVINO IR, int8 by NNCF): ")[1].split("%")[0])
    assert kept >= 99.0 and "on 16 test images (at least 99% required)" in r.stdout
    onnx_path = str(tmp_path / "demo.onnx")
    assert run_script("export", "--checkpoint", best, "--format", "onnx", "--out", onnx_path).returncode == 0
    images = os.path.join(root, "test", "images")
    labels = {}
    for ckpt in (best, onnx_path, xml, openvino_int8_path(xml)):
        out = tmp_path / f"predicted_by_{os.path.basename(ckpt)}"
        r = run_script("predict", images, "--checkpoint", ckpt, "--out", str(out), "--device", "cpu", "--no-progress",
                       "--no-overlay")
        assert r.returncode == 0, r.stderr
        labels[ckpt] = np.stack([cv2.imread(str(out / "labels" / f), cv2.IMREAD_UNCHANGED)
                                 for f in sorted(os.listdir(out / "labels"))])
    assert labels[best].shape == (16, 256, 256)
    assert (labels[onnx_path] == labels[best]).mean() > 0.9999 and (labels[xml] == labels[best]).mean() > 0.9999
    assert (labels[openvino_int8_path(xml)] == labels[best]).mean() >= 0.99


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


@pytest.mark.parametrize("calib,expected", [
    ("/nonexistent", "--calib '/nonexistent' is not a folder"),
    (os.path.join(ROOT, "configs"), "has no train_list.txt"),
])
def test_an_int8_export_checks_its_calibration_root_before_writing_anything(tmp_path, calib, expected):
    out = tmp_path / "q.xml"
    r = run_script("export", "--checkpoint", str(tmp_path / "any.pt"), "--format", "openvino", "--out", str(out),
                   "--int8", "--calib", calib)
    assert r.returncode == 2 and expected in r.stderr.strip().splitlines()[-1], r.stderr
    assert not os.listdir(tmp_path)
