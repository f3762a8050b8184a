"""dml_csr.sharing.folder: a model folder round-trips its tensors, and anything but the safetensors file its
config.json describes is refused in one line before a byte of it is used (a pickle is never unpickled)."""
from __future__ import annotations

import hashlib
import json
import os
import pickle

import pytest
import torch

from dml_csr.sharing import folder
from dml_csr.sharing.folder import ShareError


def _state() -> dict:
    g = torch.Generator().manual_seed(0)
    return {"backbone.conv1.weight": torch.randn(4, 3, 3, 3, generator=g),
            "decoder.conv4.bias": torch.randn(11, generator=g),
            "backbone.bn1.num_batches_tracked": torch.tensor(7)}


RECORD = {"format": "dml_csr/1", "meta": {"classes": ["a", "b"]}, "config": {"model": {"name": "dml_csr"}}}


@pytest.fixture
def written(tmp_path):
    out = str(tmp_path / "model")
    paths = folder.write_folder(out, _state(), RECORD, "# card\n")
    return out, paths


def _one_line_error(path: str, match: str) -> str:
    with pytest.raises(ShareError, match=match) as e:
        folder.read_folder(path)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_the_folder_round_trips_its_tensors_and_records_their_hash(written):
    out, paths = written
    assert [os.path.basename(p) for p in paths] == ["model.safetensors", "config.json", "README.md"]
    record = json.load(open(os.path.join(out, "config.json")))
    data = open(os.path.join(out, "model.safetensors"), "rb").read()
    assert record["weights"] == {"file": "model.safetensors", "bytes": len(data),
                                 "sha256": hashlib.sha256(data).hexdigest()}
    assert {k: record[k] for k in RECORD} == RECORD
    for path in (out, os.path.join(out, "model.safetensors")):  # the folder, or its weights file
        ckpt = folder.read_folder(path)
        assert ckpt["format"] == "dml_csr/1" and ckpt["meta"] == RECORD["meta"] and ckpt["config"] == RECORD["config"]
        assert set(ckpt["model"]) == set(_state()) and all(torch.equal(ckpt["model"][k], v) for k, v in _state().items())
    assert folder.is_model_folder(out) and not folder.is_model_folder(os.path.join(out, "config.json"))
    assert folder.weights_file(out) == os.path.join(out, "model.safetensors")


class _Marker:
    """Unpickling this creates a file: the proof that a loader unpickled it."""
    path = ""

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_pickle_in_place_of_the_safetensors_file_is_refused_unread(written, tmp_path):
    out, _ = written
    weights = os.path.join(out, "model.safetensors")
    torch.save(_state(), weights)  # torch.save's zip
    _one_line_error(out, r"is not a safetensors file \(a zip archive \(a torch.save pickle\?\)\); refusing it")
    _Marker.path = str(tmp_path / "unpickled")
    with open(weights, "wb") as f:
        pickle.dump(_Marker(), f, protocol=2)  # a bare pickle whose loading would create the marker file
    _one_line_error(out, r"is not a safetensors file \(a pickle\)")
    assert not os.path.exists(_Marker.path)


def test_a_changed_or_cut_file_is_refused_by_its_recorded_hash(written):
    out, _ = written
    weights = os.path.join(out, "model.safetensors")
    data = bytearray(open(weights, "rb").read())
    data[-1] ^= 1  # one bit of the last tensor: still a well-formed safetensors file
    open(weights, "wb").write(bytes(data))
    msg = _one_line_error(out, "its config.json records")
    assert "a changed or damaged file, refused" in msg and hashlib.sha256(bytes(data)).hexdigest() in msg
    open(weights, "wb").write(bytes(data[:-10]))
    _one_line_error(out, f"has {len(data) - 10} bytes")


def test_check_pin_compares_with_a_registry_hash(written):
    out, _ = written
    digest = folder.sha256_of_file(os.path.join(out, "model.safetensors"))
    folder.check_pin(out, digest, "entry 'x'")
    with pytest.raises(ShareError, match="entry 'x' pins 0{64}: not the published file"):
        folder.check_pin(out, "0" * 64, "entry 'x'")


@pytest.mark.parametrize("content,match", [
    (None, "has no config.json: not a model folder"),
    ("{not json", "is not readable JSON"),
    ("[1, 2]", "holds a JSON list; expected an object"),
    ('{"format": "dml_csr/1", "meta": {}, "config": {}}', "lacks weights"),
    ('{"format": "dml_csr/1", "meta": {}, "config": {}, "weights": {"file": "model.safetensors"}}',
     "lacks weights.sha256, weights.bytes"),
])
def test_a_bad_config_json_is_one_line(written, content, match):
    out, _ = written
    path = os.path.join(out, "config.json")
    if content is None:
        os.remove(path)
    else:
        open(path, "w").write(content)
    _one_line_error(out, match)


def test_a_folder_without_its_weights_is_named(written):
    out, _ = written
    os.remove(os.path.join(out, "model.safetensors"))
    _one_line_error(out, "has no model.safetensors beside its config.json")
