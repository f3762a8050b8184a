"""dml_csr.photos.share: a checkpoint (ours or the authors') as a model folder that rebuilds the same network from
safetensors, with the metrics of the evaluations that scored this very file."""
from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from helpers.tiny_checkpoint import one_thread, write_tiny_checkpoint  # noqa: F401 (fixture)

from dml_csr import load_model
from dml_csr.hub import sha256_of
from dml_csr.photos.share import export_hf, run_metrics

pytestmark = pytest.mark.usefixtures("one_thread")


def _same_outputs(a, b, size=(64, 64)) -> None:
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(a(x)["parsing"], b(x)["parsing"])


def test_the_authors_file_becomes_a_folder_of_the_same_network(official_file, tmp_path):
    out = tmp_path / "authors"
    info = export_hf(str(official_file), str(out))
    assert info["metrics"] == [] and sorted(os.listdir(out)) == ["README.md", "config.json", "model.safetensors"]
    record = json.load(open(out / "config.json"))
    assert record["meta"]["source"] == "official" and record["meta"]["channel_order"] == "BGR"
    assert record["config"]["model"]["backbone"] == "resnet101_deepstem"
    assert record["config"]["model"]["edge_heads"] is False and record["config"]["model"]["pretrained"] == ""
    ours, meta = load_model(str(out))
    theirs, their_meta = load_model(str(official_file))
    assert meta == their_meta and not any(k.startswith("edge") for k in ours.state_dict())
    _same_outputs(ours, theirs)
    assert "Trained and released by the DML-CSR authors" in open(out / "README.md").read()


def test_the_card_takes_the_metrics_that_scored_this_file(tmp_path):
    run = tmp_path / "run"
    ckpt = write_tiny_checkpoint(str(run / "best.pt"))
    digest = sha256_of(ckpt)
    for name, sha, f1 in (("eval_test", digest, 0.81), ("eval_test_flip", digest, 0.83), ("eval_val", "0" * 64, 0.5)):
        (run / name).mkdir()
        (run / name / "metrics.json").write_text(json.dumps({
            "protocol": {"split": name.split("_")[1], "checkpoint_sha256": sha, "flip": "flip" in name},
            "scores": {"mean_f1": f1, "miou": 0.7, "miou_fg": 0.6, "pixel_accuracy": 0.9,
                       "per_class": {"background": {"f1": 0.9, "iou": 0.8, "pixels": 1}}, "groups": {}}}))
    records = run_metrics(ckpt)
    assert [(r["protocol"]["split"], r["protocol"]["flip"]) for r in records] == [("test", False), ("test", True)]
    with pytest.raises(ValueError, match=r"--metrics '.*eval_val/metrics.json' scored a checkpoint of sha256 0{64}, "
                                         r"not"):
        run_metrics(ckpt, [str(run / "eval_val" / "metrics.json")])
    with pytest.raises(ValueError, match="not a metrics.json of scripts/evaluate.py"):
        run_metrics(ckpt, [ckpt])
    info = export_hf(ckpt, str(tmp_path / "out"))
    card = open(tmp_path / "out" / "README.md").read()
    assert info["metrics"] == ["test", "test"] and "| 81.00 |" in card and "| 83.00 |" in card and "| 50.00 |" not in card
    # a folder exported again keeps its weights; metrics of the .pt do not travel with it (another file's hash)
    shutil.copytree(tmp_path / "out", tmp_path / "copy")
    again = export_hf(str(tmp_path / "copy"), str(tmp_path / "again"))
    assert again["metrics"] == []
    assert open(tmp_path / "again" / "model.safetensors", "rb").read() == \
        open(tmp_path / "out" / "model.safetensors", "rb").read()
