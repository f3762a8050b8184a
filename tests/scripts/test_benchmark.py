"""scripts/benchmark.py on a model that is not the paper's: no paper figures, RNN-G's training-only heads counted."""
import json
import os

import pytest
import torch

from helpers import ROOT
from helpers.scripts import run_script
from helpers.tiny_checkpoint import write_tiny_checkpoint

CONFIG = os.path.join(ROOT, "configs", "synthetic_rnn_g.yaml")


def test_benchmark_script_is_model_agnostic(tmp_path):
    out = tmp_path / "bench.json"
    r = run_script("benchmark", "--config", CONFIG, "--set", "data.root=unused", "model.rnn_channels=8", "model.two_stage=false",
                   "--size", "32", "--repeats", "1", "--warmup", "0", "--train", "--threads", "1", "--json", str(out))
    assert r.returncode == 0, r.stderr
    rec = json.load(open(out))
    assert rec["model"] == "rnn_g" and rec["paper"] is None and "paper:" not in r.stdout
    # the inference model has no coarse-label or gate head: exactly their weights fewer (8 // 4 = 2 hidden channels)
    heads = (2 * 11 * 9 + 11) + (2 + 1)
    assert rec["params_train"] - rec["params_inference"] == heads
    assert rec["flops_inference"] > 0
    paths = {row["path"] for row in rec["rows"]}
    assert {"fp32 eager", "train fp32"} <= paths


def test_deploy_rows_report_labels_unchanged_on_faces(tmp_path):
    """--deploy: ONNX Runtime fp32 and static int8 rows beside bf16, each with its share of labels equal to fp32
    eager's on face images; the exported fp32 graph agrees with eager on almost every pixel."""
    out = tmp_path / "bench.json"
    cfg = os.path.join(ROOT, "configs", "synthetic_dml_csr_tiny.yaml")
    r = run_script("benchmark", "--config", cfg, "--set", "data.root=unused", "--size", "64", "--repeats", "1",
                   "--warmup", "0", "--threads", "1", "--deploy", "--json", str(out))
    assert r.returncode == 0, r.stderr
    rec = json.load(open(out))
    rows = {row["path"]: row for row in rec["rows"]}
    assert {"onnxruntime fp32", "onnxruntime int8 (static QDQ)", "bf16 + channels_last (faces)"} <= set(rows)
    assert rows["onnxruntime fp32"]["label_agreement"] > 0.999
    assert 0.5 < rows["onnxruntime int8 (static QDQ)"]["label_agreement"] <= 1.0
    assert rows["onnxruntime int8 (static QDQ)"]["label_agreement_on"] == "8 face images"
    # the paper's figures belong to its model only: not to this ResNet-18 at output stride 16
    assert rec["paper"] is None and "paper:" not in r.stdout and rec["output_stride"] == 16


def test_the_papers_figures_stand_beside_the_papers_model_only(tmp_path):
    for config, paper in (("helen_dml_csr_r101.yaml", True), ("helen_dml_csr_r101_os16.yaml", False)):
        out = tmp_path / f"{config}.json"
        r = run_script("benchmark", "--config", os.path.join(ROOT, "configs", config), "--set", "data.root=unused",
                       "--size", "32", "--repeats", "1", "--warmup", "0", "--threads", "1", "--json", str(out))
        assert r.returncode == 0, r.stderr
        rec = json.load(open(out))
        assert (rec["paper"] is not None) == paper and ("paper: 59.67M" in r.stdout) == paper
        assert rec["params_train"] == 68_544_242  # stride 16 keeps every parameter of the authors' model


def test_deploy_adds_openvino_rows_scored_on_a_given_model_and_profiles_the_stages(tiny_synthetic, tmp_path,
                                                                                    monkeypatch):
    """--deploy --calib ROOT --agreement-weights CKPT --profile --variant: OpenVINO fp32 and int8 rows beside ONNX
    Runtime's, their labels compared on the given checkpoint at its own size (the row says so); the milliseconds of
    each stage of the network in fp32 eager and OpenVINO fp32 and int8; and a variant's paths (here output stride 8
    of the stride-16 demo model) timed against the same fp32 eager, in rows that name it."""
    ckpt = write_tiny_checkpoint(str(tmp_path / "tiny.pt"))
    out = tmp_path / "bench.json"
    cfg = os.path.join(ROOT, "configs", "synthetic_dml_csr_tiny.yaml")
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):  # the header's "unset" below
        monkeypatch.delenv(name, raising=False)
    r = run_script("benchmark", "--config", cfg, "--set", "data.root=unused", "--size", "64", "--repeats", "1",
                   "--warmup", "0", "--threads", "1", "--deploy", "--calib", tiny_synthetic, "--agreement-weights",
                   ckpt, "--profile", "--variant", "model.output_stride=8", "--json", str(out))
    assert r.returncode == 0, r.stderr
    rec = json.load(open(out))
    rows = {row["path"]: row for row in rec["rows"] if "variant" not in row}
    assert {"openvino fp32", "openvino int8 (NNCF)", "onnxruntime int8 (static QDQ)"} <= set(rows)
    assert "openvino int8 (NNCF)" in r.stdout
    assert rows["openvino fp32"]["label_agreement"] > 0.999 and rows["onnxruntime fp32"]["label_agreement"] > 0.999
    assert 0.5 < rows["openvino int8 (NNCF)"]["label_agreement"] <= 1.0
    assert rows["openvino int8 (NNCF)"]["label_agreement_on"] == f"8 face images, {ckpt} at 64x64"
    assert rows["openvino int8 (NNCF)"]["latency_ms"] > 0 and rows["openvino int8 (NNCF)"]["precision"] == "int8"
    # which kernels did the work: every convolution of both OpenVINO models named (none for ONNX Runtime's rows),
    # and the CPU the run was on, with what PyTorch's oneDNN dispatched to, in the header
    fp32, int8 = rows["openvino fp32"]["kernels"], rows["openvino int8 (NNCF)"]["kernels"]
    assert sum(fp32.values()) == sum(int8.values()) > 0 and rows["onnxruntime int8 (static QDQ)"]["kernels"] is None
    assert all(k.endswith("_f32") for k in fp32) and any(k.endswith("_I8") for k in int8), (fp32, int8)
    assert f"  openvino fp32: convolutions run {next(iter(fp32))} x{next(iter(fp32.values()))}" in r.stdout
    assert rec["cpu"]["cpu"] and rec["cpu"]["isa_cap"] is None and not rec["cpu"]["pytorch_onednn_isa"].startswith("not")
    assert f"CPU {rec['cpu']['cpu']} (" in r.stdout and "ONEDNN_MAX_CPU_ISA unset" in r.stdout
    variant = {row["path"]: row for row in rec["rows"] if row.get("variant") == "model.output_stride=8"}
    assert {"fp32 eager", "onnxruntime int8 (static QDQ)", "openvino int8 (NNCF)"} <= set(variant)
    base = next(row for row in rec["rows"] if row["path"] == "fp32 eager" and "variant" not in row)
    eager8 = variant["fp32 eager"]
    assert eager8["ratio_vs_fp32_eager"] == pytest.approx(eager8["latency_ms"] / base["latency_ms"])
    assert "variant model.output_stride=8, against the fp32 eager above:" in r.stdout
    assert variant["openvino int8 (NNCF)"]["label_agreement_on"] == f"8 face images, {ckpt} at 64x64"
    profile = rec["profile"]
    assert {"stem", "layer1", "layer2", "layer3", "layer4", "other"} <= set(profile["stages"])
    for key in ("eager_ms", "openvino_fp32_ms", "openvino_int8_ms"):
        assert sum(profile[key][s] for s in ("layer1", "layer2", "layer3", "layer4")) > 0, key
        # OpenVINO's fused operators (renamed Multiply_NNNN) are placed in their stages, not left in "other"
        assert profile[key]["other"] < 0.1 * sum(profile[key].values()), (key, profile[key])
    # the page faults of a run, each path's, beside its time (what moved fp32 eager between the table and here)
    assert set(profile["page_faults"]) == {"eager", "fp32", "int8"}
    assert all(v >= 0 for v in profile["page_faults"].values()) and "faults/run" in r.stdout
    assert all(row["page_faults"] >= 0 for row in rec["rows"])


@pytest.mark.parametrize("script,option,value,expected", [
    ("benchmark", "--size", "100000", ">= 16 and <= 4096"), ("benchmark", "--repeats", "0", ">= 1 and <= 100000"),
    ("benchmark", "--batch", "2000", ">= 1 and <= 1024"), ("benchmark", "--threads", "-2", ">= 1 and <= 1024"),
    ("benchmark_data", "--samples", "0", ">= 1 and <= 100000"), ("benchmark_rnn", "--sizes", "0", ">= 8 and <= 4096"),
    ("benchmark_detect", "--repeats", "1e9", ">= 1 and <= 100000"), ("benchmark_video", "--frames", "-1",
                                                                     ">= 1 and <= 100000")])
def test_sizes_and_counts_out_of_range_are_one_line_before_any_work(script, option, value, expected):
    args = ["--config", os.path.join(ROOT, "configs", "synthetic_dml_csr_tiny.yaml")] if script == "benchmark" else []
    args += ["--checkpoint", "unused.pt"] if script == "benchmark_video" else []
    r = run_script(script, *args, option, value)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].endswith(
        f" error: argument {option}: '{value}'; expected a whole number {expected}"), r.stderr


@pytest.mark.parametrize("script,args,expected", [
    ("benchmark_rnn", ["--sizes", "4096", "--batches", "1024"],
     "error: --batches 1024 at --sizes 4096 is 17,179,869,184 pixels a batch; expected at most 134,217,728"),
    ("benchmark_data", ["--size", "4096", "--batch-size", "1024"], "error: --batch-size 1024 at --size 4096 is"),
    ("benchmark_data", ["--device", "tpu"], "error: argument --device: 'tpu'; expected auto, cpu, mps, cuda or cuda:N"),
    ("benchmark_data", ["--root", "/nonexistent", "--samples", "1", "--rounds", "1"],
     "error: dataset root '/nonexistent' does not exist"),
    ("benchmark", ["--variant", "model.output_stride=16"], "error: --variant and --agreement-weights go with --deploy"),
    ("benchmark", ["--calib", "data/x"], "error: --calib goes with --deploy or --profile"),
])
def test_devices_sizes_and_folders_out_of_reach_are_one_line(script, args, expected):
    config = ["--config", os.path.join(ROOT, "configs", "synthetic_dml_csr_tiny.yaml")] if script == "benchmark" else []
    r = run_script(script, *config, *args)
    assert r.returncode == 2 and expected in r.stderr.strip().splitlines()[-1] and "Traceback" not in r.stderr, r.stderr


@pytest.mark.parametrize("args,expected", [
    (["--variant", "model.output_strid=16"], "--variant: unknown key 'model.output_strid'"),
    (["--calib", "/nonexistent"], "--calib '/nonexistent' is not a folder; give a prepared root"),
    (["--agreement-weights", "/nonexistent.pt"], "checkpoint '/nonexistent.pt' does not exist"),
])
def test_what_the_deployment_rows_need_is_checked_before_anything_is_timed(args, expected):
    r = run_script("benchmark", "--config", os.path.join(ROOT, "configs", "synthetic_dml_csr_tiny.yaml"), "--size",
                   "32", "--deploy", *args)
    assert r.returncode == 2 and expected in r.stderr.strip().splitlines()[-1], r.stderr
    assert "fp32 eager" not in r.stdout and "Traceback" not in r.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_asked_for_where_there_is_none_is_one_line():
    r = run_script("benchmark_rnn", "--device", "cuda")
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].endswith(
        "argument --device: device 'cuda:0' asked for, but CUDA is not available on this machine; use cpu or auto")


def test_a_batch_of_too_many_pixels_is_one_line_before_any_work():
    """Each in range, --size 4096 and --batch 1024 would still ask for terabytes of activations."""
    r = run_script("benchmark", "--config", os.path.join(ROOT, "configs", "synthetic_dml_csr_tiny.yaml"), "--size",
                   "4096", "--batch", "1024")
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].endswith(
        "error: --batch 1024 at --size 4096 is 17,179,869,184 pixels a batch; expected at most 134,217,728 "
        "(e.g. batch 512 at size 512)"), r.stderr