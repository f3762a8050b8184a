"""dml_csr.sharing.hf: Hub names resolve through huggingface_hub's own cache and offline mode (a cache laid out by
hand, HF_HUB_OFFLINE=1, no network), revisions pin files, the registry may pin a hash, model.pretrained takes a Hub
name, uploads go through huggingface_hub's login, and each failure is one line."""
from __future__ import annotations

import os
import socket
import sys

import pytest
import torch
from helpers.hf_cache import COMMIT, FakeApi, go_offline, lay_out
from helpers.tiny_checkpoint import TINY, write_tiny_checkpoint

from dml_csr import hub, load_model
from dml_csr.config import load_config
from dml_csr.hub import Weights
from dml_csr.sharing import folder, hf
from dml_csr.sharing.folder import ShareError

NEW, OLD = "a" * 40, "b" * 40


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    """huggingface_hub's cache under tmp_path, its offline mode on (its constants are read when it is imported, so
    they are set there too), and no connection to any host."""
    cache = str(tmp_path / "hf_cache")
    go_offline(monkeypatch, cache)

    def no_network(host, *args, **kwargs):
        raise AssertionError(f"a test tried to reach {host}")
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    return cache


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Two model folders of tiny checkpoints with different weights (seeds 0 and 1)."""
    from dml_csr.photos.share import export_hf

    tmp = tmp_path_factory.mktemp("hf_folders")
    out = []
    for seed in (0, 1):
        ckpt = write_tiny_checkpoint(str(tmp / f"tiny{seed}" / "tiny.pt"), seed=seed)
        export_hf(ckpt, str(tmp / f"folder{seed}"))
        out.append(str(tmp / f"folder{seed}"))
    return out


def _publish(cache: str, src: str, commit: str, refs=("main",)) -> str:
    files = {f: os.path.join(src, f) for f in ("config.json", "model.safetensors", "README.md")}
    return lay_out(cache, "someone/tiny-parser", files, commit, refs)


def test_names_parse_and_bad_ones_are_one_line():
    assert hf.parse("hf://someone/tiny-parser") == ("someone/tiny-parser", None)
    assert hf.parse("hf://someone/tiny.parser_2@v1.0") == ("someone/tiny.parser_2", "v1.0")
    assert hf.parse(f"hf://o/r@{NEW}") == ("o/r", NEW)
    assert hf.is_hf_name("hf://o/r") and not hf.is_hf_name("runs/x/best.pt") and not hf.is_hf_name(None)
    for bad in ("hf://onlyowner", "hf://o/r/extra", "hf://o/r@", "hf:///r"):
        with pytest.raises(ShareError, match="is not a Hub name; expected hf://OWNER/REPO or hf://OWNER/REPO@REVISION"):
            hf.parse(bad)


def test_a_name_resolves_offline_and_a_revision_pins_its_files(offline, folders):
    old = _publish(offline, folders[1], OLD, refs=("v1",))
    new = _publish(offline, folders[0], NEW)  # main moved on
    assert hf.download("hf://someone/tiny-parser") == new
    assert hf.download("hf://someone/tiny-parser@v1") == old
    assert hf.download(f"hf://someone/tiny-parser@{OLD}") == old
    pinned, _ = load_model("hf://someone/tiny-parser@v1")
    direct, _ = load_model(folders[1])
    latest, _ = load_model("hf://someone/tiny-parser")
    key = "decoder.conv4.weight"
    assert torch.equal(pinned.state_dict()[key], direct.state_dict()[key])
    assert not torch.equal(pinned.state_dict()[key], latest.state_dict()[key])


def test_offline_without_the_files_and_without_the_extra_is_one_line(offline, folders, monkeypatch):
    with pytest.raises(ShareError) as e:
        hf.download("hf://someone/never-fetched")
    msg = str(e.value)
    assert msg.startswith("hf://someone/never-fetched: config.json is not in the Hugging Face cache")
    assert "HF_HUB_OFFLINE=1" in msg and offline in msg and "\n" not in msg
    _publish(offline, folders[0], NEW)
    with pytest.raises(ShareError, match="someone/tiny-parser@v9: config.json is not in the Hugging Face cache"):
        load_model("hf://someone/tiny-parser@v9")  # an unknown revision offline: not cached either
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import huggingface_hub -> ImportError
    with pytest.raises(ShareError) as e:
        load_model("hf://someone/tiny-parser")
    assert str(e.value) == ("loading or sharing through the Hugging Face Hub needs huggingface_hub: "
                            "pip install 'dml_csr[hf]'")


def test_the_registry_names_a_hub_model_and_may_pin_its_hash(offline, folders, monkeypatch):
    _publish(offline, folders[0], NEW)
    digest = folder.sha256_of_file(os.path.join(folders[0], "model.safetensors"))
    entry = Weights("test_hub_model", "unused", kind="dml_csr", description="a Hub model", source="hf",
                    url=f"hf://someone/tiny-parser@{NEW}", sha256=digest)
    monkeypatch.setitem(hub.WEIGHTS, entry.name, entry)
    assert hub.resolve("test_hub_model", kind="dml_csr") == os.path.join(offline, "models--someone--tiny-parser",
                                                                         "snapshots", NEW)
    model, meta = load_model("test_hub_model")
    assert meta["dataset"] == "synthetic" and model.num_classes == 11
    monkeypatch.setitem(hub.WEIGHTS, entry.name, Weights(**{**entry.__dict__, "sha256": "0" * 64}))
    with pytest.raises(ShareError, match=f"has sha256 {digest}; the registry entry of hf://someone/tiny-parser@"
                                         f"{NEW} pins 0{{64}}: not the published file, refused"):
        load_model("test_hub_model")
    with pytest.raises(ValueError, match="source hf needs a url hf://OWNER/REPO"):
        Weights("bad", "x", kind="dml_csr", description="", source="hf", url="https://huggingface.co/o/r")


def test_model_pretrained_takes_a_hub_name_for_the_backbone(offline, folders):
    from dml_csr.data.labels import get_spec
    from dml_csr.distributed import DistInfo
    from dml_csr.training.trainer import _build_model

    _publish(offline, folders[0], NEW)
    cfg = load_config(None, TINY + ["data.dataset=synthetic", "data.root=unused",
                                    "model.pretrained=hf://someone/tiny-parser"])
    model = _build_model(cfg, get_spec("synthetic"), torch.device("cpu"), DistInfo(), None)
    shared, _ = load_model(folders[0])
    want = {k[len("backbone."):]: v for k, v in shared.state_dict().items() if k.startswith("backbone.")}
    got = model.backbone.state_dict()
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in got)


def test_push_uploads_the_folder_with_the_libraries_own_login(folders, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    FakeApi.calls = []
    url = hf.push(folders[0], "someone/tiny-parser", revision="v2")
    assert url == f"https://huggingface.co/someone/tiny-parser/commit/{COMMIT}"
    (c1, r1, k1), (c2, r2, k2), (c3, r3, k3) = FakeApi.calls
    assert (c1, r1, k1) == ("create_repo", "someone/tiny-parser", {"repo_type": "model", "private": False,
                                                                    "exist_ok": True})
    assert (c2, k2["branch"]) == ("create_branch", "v2")
    assert c3 == "upload_folder" and k3["revision"] == "v2" and k3["folder_path"] == folders[0]
    assert k3["files"] == ["README.md", "config.json", "model.safetensors"]
    assert not any("token" in kw for _, _, kw in FakeApi.calls)  # the token is huggingface_hub's own
    with pytest.raises(ShareError, match="--push 'not a repo': expected a repository id OWNER/NAME"):
        hf.push(folders[0], "not a repo")
