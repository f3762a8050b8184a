"""dml_csr.hub: the registry, the cache, downloads from a local HTTP server (good, wrong, cut off, missing, offline),
checks of cached files, Google Drive through gdown, and the hooks: load_model(NAME), model.pretrained: NAME and
torch.hub.load on hubconf.py. Nothing here connects anywhere but 127.0.0.1."""
from __future__ import annotations

import collections
import hashlib
import http.server
import importlib.util
import io
import json
import logging
import os
import socket
import sys
import threading
import types

import pytest
import torch
from helpers import FIXTURES, ROOT
from helpers.tiny_checkpoint import TINY, one_thread, write_tiny_checkpoint  # noqa: F401 (fixture)

from dml_csr import hub, load_model
from dml_csr import distributed as du
from dml_csr.config import load_config
from dml_csr.data.labels import get_spec
from dml_csr.hub import HubError, Weights
from dml_csr.training.trainer import _build_model, resolve_pretrained

pytestmark = pytest.mark.usefixtures("one_thread")


class LocalServer:
    """Serves ``files[path] = (body, declared Content-Length)`` on 127.0.0.1 and counts the requests per path."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, int]] = {}
        self.hits: collections.Counter = collections.Counter()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.hits[self.path] += 1
                if self.path not in server.files:
                    self.send_error(404, "File not found")
                    return
                body, length = server.files[self.path]
                self.send_response(200)
                self.send_header("Content-Length", str(length))
                self.end_headers()
                self.wfile.write(body)  # a body shorter than Content-Length: the connection closes early

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def add(self, path: str, body: bytes, length: int | None = None) -> str:
        self.files[path] = (body, len(body) if length is None else length)
        return self.url(path)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"


@pytest.fixture(scope="module")
def server():
    s = LocalServer()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """A fresh cache under tmp_path, no mirror, and no connection to any host but 127.0.0.1."""
    monkeypatch.setenv("DML_CSR_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("DML_CSR_MIRROR", raising=False)
    real = socket.getaddrinfo

    def local_only(host, *args, **kwargs):
        if host not in ("127.0.0.1", "localhost"):
            raise AssertionError(f"a test tried to reach {host}")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", local_only)
    return tmp_path / "cache" / "weights"


def _entry(monkeypatch, body: bytes = b"", *, name: str = "test_blob", url: str = "http://127.0.0.1:9/x",
           hashed: bool = True, **kw) -> Weights:
    """A registry entry for ``body`` (size and sha256 pinned unless ``hashed`` is False), registered for one test."""
    if hashed:
        kw.setdefault("size", len(body))
        kw.setdefault("sha256", hashlib.sha256(body).hexdigest())
    kw.setdefault("kind", "detector")
    w = Weights(name, kw.pop("filename", f"{name}.bin"), description="test file", url=url, **kw)
    monkeypatch.setitem(hub.WEIGHTS, name, w)
    return w


def _torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


STRUCTURE = (("head.weight", (3, 4)), ("body.0.weight", (5,)))


def _state(head=(3, 4), body=(5,)) -> dict:
    torch.manual_seed(0)
    return {"head.weight": torch.randn(*head), "body.0.weight": torch.randn(*body), "extra": torch.zeros(2)}


def test_the_registry_holds_what_the_authors_and_opencv_release():
    assert list(hub.WEIGHTS) == ["dml_csr_helen", "dml_csr_lapa", "dml_csr_celebamask_hq",
                                 "resnet101_deepstem_imagenet", "farl_vit_b16_ep16", "farl_vit_b16_ep64",
                                 "yunet_2023mar"]
    assert hub.list_weights() == list(hub.WEIGHTS.values())
    y = hub.WEIGHTS["yunet_2023mar"]
    assert (y.kind, y.filename, y.size) == ("detector", "face_detection_yunet_2023mar.onnx", 232589)
    assert y.sha256 == "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"
    assert y.url == ("https://github.com/opencv/opencv_zoo/raw/main/models/face_detection_yunet/"
                     "face_detection_yunet_2023mar.onnx")
    r = hub.WEIGHTS["resnet101_deepstem_imagenet"]
    assert (r.kind, r.source, r.drive_id) == ("backbone", "gdrive", "1rzLU-wK6rEorCNJfwrmIu5hY2wRMyKTK")
    for name, dataset, n in (("dml_csr_helen", "helen", 11), ("dml_csr_lapa", "lapa", 11),
                             ("dml_csr_celebamask_hq", "celebamask_hq", 19)):
        w = hub.WEIGHTS[name]
        assert (w.kind, w.dataset, w.classes) == ("dml_csr", dataset, get_spec(dataset).classes)
        assert len(w.classes) == n  # the input convention is not the entry's: load_model's meta has it (test_checkpoint)
        assert w.drive_folder == "1-PjUts1AMzXNyvw3VaJQmg43GJbfEpEQ" and not w.drive_id and w.sha256 is None
        assert dict(w.structure)["layer6.conv4.weight"] == (n, 256, 1, 1)
    for epochs in (16, 64):  # FaRL's releases, unhashed: checked by structure (tests/models/test_farl.py)
        w = hub.WEIGHTS[f"farl_vit_b16_ep{epochs}"]
        assert (w.kind, w.filename, w.sha256) == ("backbone", f"FaRL-Base-Patch16-LAIONFace20M-ep{epochs}.pth", None)
        assert w.url == ("https://github.com/FacePerceiver/FaRL/releases/download/pretrained_weights/"
                         f"FaRL-Base-Patch16-LAIONFace20M-ep{epochs}.pth")


def test_the_structures_match_the_authors_state_dict_listing():
    """Each unhashed entry of the authors' files has required keys that exist in the authors' model with those shapes
    (the class count aside)."""
    with open(os.path.join(FIXTURES, "official_dml_csr_state_dict.json")) as f:
        listing = {e["name"]: tuple(e["shape"]) for e in json.load(f)["entries"]}
    for w in hub.list_weights():
        if w.name.startswith("farl_"):  # FaRL's image tower, not the authors' model
            continue
        for key, shape in w.structure:
            want = listing[key]
            if key == "layer6.conv4.weight":
                want = (len(w.classes),) + want[1:]
            assert tuple(shape) == want, (w.name, key)
    assert len(hub.WEIGHTS["resnet101_deepstem_imagenet"].structure) >= 5


def test_an_entry_must_be_verifiable_and_well_formed():
    with pytest.raises(ValueError, match="'x': give a sha256 or a structure"):
        Weights("x", "x.bin", "detector", "d", url="http://127.0.0.1/x")
    with pytest.raises(ValueError, match="'x': kind 'model'; expected one of dml_csr, backbone, detector"):
        Weights("x", "x.bin", "model", "d", url="http://127.0.0.1/x", sha256="0" * 64)
    with pytest.raises(ValueError, match="'x': sha256 'ABC' is not 64 lowercase hex digits"):
        Weights("x", "x.bin", "detector", "d", url="http://127.0.0.1/x", sha256="ABC")


def test_register_refuses_to_replace_silently(monkeypatch):
    monkeypatch.setattr(hub, "WEIGHTS", dict(hub.WEIGHTS))
    w = Weights("mine", "mine.bin", "detector", "d", url="http://127.0.0.1/m", sha256="a" * 64)
    assert hub.register(w) is w and hub.is_name("mine") and hub.get_weights("mine") is w
    with pytest.raises(HubError, match="'mine' is already registered; pass replace=True"):
        hub.register(w)
    hub.register(Weights("mine", "other.bin", "detector", "d", url="http://127.0.0.1/m", sha256="b" * 64),
                 replace=True)
    assert hub.get_weights("mine").filename == "other.bin"


def test_the_cache_honours_dml_csr_home_and_defaults_to_the_home_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("DML_CSR_HOME", str(tmp_path / "elsewhere"))
    assert hub.cache_dir() == str(tmp_path / "elsewhere")
    assert hub.weights_path("yunet_2023mar") == str(tmp_path / "elsewhere" / "weights" /
                                                    "face_detection_yunet_2023mar.onnx")
    monkeypatch.delenv("DML_CSR_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert hub.cache_dir() == str(tmp_path / "home" / ".cache" / "dml_csr")


def test_a_good_file_is_fetched_once_and_then_served_from_the_cache(server, monkeypatch, isolated):
    body = os.urandom(5000)
    _entry(monkeypatch, body, url=server.add("/good.bin", body))
    path = hub.fetch("test_blob", progress=False)
    assert path == str(isolated / "test_blob.bin") and open(path, "rb").read() == body
    assert hub.fetch("test_blob", progress=False) == path and hub.resolve("test_blob") == path
    assert server.hits["/good.bin"] == 1
    hub.fetch("test_blob", progress=False, force=True)
    assert server.hits["/good.bin"] == 2 and sorted(os.listdir(isolated)) == ["test_blob.bin"]


def test_a_wrong_file_is_refused_and_nothing_is_left(server, monkeypatch, isolated):
    _entry(monkeypatch, b"the expected bytes", url=server.add("/wrong.bin", b"other bytes, same len"))
    with pytest.raises(HubError) as e:
        hub.fetch("test_blob", progress=False)
    msg = str(e.value)
    assert msg.startswith(f"test_blob: the file downloaded from {server.url('/wrong.bin')} has 21 bytes, expected "
                          f"18; deleted it; put the right file at '{isolated / 'test_blob.bin'}'") and "\n" not in msg
    assert os.listdir(isolated) == []
    _entry(monkeypatch, b"A" * 64, url=server.add("/same.bin", b"B" * 64))  # the right size, the wrong bytes
    with pytest.raises(HubError, match=f"has sha256 {hashlib.sha256(b'B' * 64).hexdigest()}, expected"):
        hub.fetch("test_blob", progress=False)
    assert os.listdir(isolated) == []


def test_an_unwritable_cache_is_one_line(monkeypatch, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("DML_CSR_HOME", str(tmp_path / "file"))
    _entry(monkeypatch, b"x")
    with pytest.raises(HubError, match=f"test_blob: cannot create the cache folder '{tmp_path}/file/weights' .*; "
                                       "set DML_CSR_HOME to a writable folder$"):
        hub.fetch("test_blob", progress=False)


def test_a_download_cut_off_half_way_is_refused(server, monkeypatch, isolated):
    body = os.urandom(4000)
    _entry(monkeypatch, body, url=server.add("/cut.bin", body[:2000], length=len(body)))
    with pytest.raises(HubError, match="test_blob: .* has 2000 bytes, expected 4000; deleted it"):
        hub.fetch("test_blob", progress=False)
    assert os.listdir(isolated) == []
    full = _torch_bytes(_state())  # unhashed: the structure check catches the short file
    _entry(monkeypatch, name="test_sd", hashed=False, structure=STRUCTURE, kind="backbone",
           url=server.add("/cut.pt", full[: len(full) // 2], length=len(full)))
    with pytest.raises(HubError, match=r"test_sd: .* cannot be loaded with torch.load\(weights_only=True\)"):
        hub.fetch("test_sd", progress=False)
    assert os.listdir(isolated) == []


def test_a_missing_file_is_one_line_naming_the_entry_the_url_and_where_to_put_it(server, monkeypatch, isolated):
    _entry(monkeypatch, b"x", url=server.url("/nowhere.bin"))
    with pytest.raises(HubError) as e:
        hub.fetch("test_blob", progress=False)
    msg = str(e.value)
    assert msg.startswith(f"test_blob: cannot download {server.url('/nowhere.bin')} (HTTP 404 ")
    assert f"put it at '{isolated / 'test_blob.bin'}'" in msg and "\n" not in msg
    assert not os.path.exists(isolated / "test_blob.bin") and os.listdir(isolated) == []


def test_offline_is_the_same_one_line_error(monkeypatch, isolated):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connection refused
    _entry(monkeypatch, b"x", url=f"http://127.0.0.1:{port}/f.bin")
    with pytest.raises(HubError) as e:
        hub.fetch("test_blob", progress=False)
    msg = str(e.value)
    assert msg.startswith(f"test_blob: cannot download http://127.0.0.1:{port}/f.bin (")
    assert "refused" in msg.lower() and f"'{isolated / 'test_blob.bin'}'" in msg and "\n" not in msg
    assert os.listdir(isolated) == []


def test_a_cached_file_that_fails_is_moved_aside(server, monkeypatch, isolated):
    body = os.urandom(300)
    _entry(monkeypatch, body, url=server.add("/aside.bin", body))
    path = hub.fetch("test_blob", progress=False)
    with open(path, "r+b") as f:
        f.write(b"\0" * 10)  # same size, other bytes
    with pytest.raises(HubError, match="test_blob: cached file .* has sha256 .* moved it to .*rejected'"):
        hub.fetch("test_blob", progress=False)
    assert not os.path.exists(path) and os.path.exists(path + ".rejected")
    assert open(hub.fetch("test_blob", progress=False), "rb").read() == body and server.hits["/aside.bin"] == 2


def test_an_unhashed_torch_file_is_checked_by_structure_and_its_hash_logged(server, monkeypatch, caplog):
    wrapped = {"state_dict": {f"module.{k}": v for k, v in _state().items()}}
    body = _torch_bytes(wrapped)
    _entry(monkeypatch, name="test_sd", hashed=False, structure=STRUCTURE, kind="backbone",
           url=server.add("/sd.pt", body))
    caplog.set_level(logging.INFO, logger="dml_csr.hub")
    path = hub.fetch("test_sd", progress=False)
    logged = [r for r in caplog.records if hashlib.sha256(body).hexdigest() in r.getMessage()]
    assert len(logged) == 1 and logged[0].levelno == logging.WARNING
    assert logged[0].getMessage().startswith(f"test_sd: {path} has no pinned sha256")
    caplog.clear()
    assert hub.fetch("test_sd", progress=False) == path  # checked again on use, by structure, but not re-hashed
    assert not any(hashlib.sha256(body).hexdigest() in r.getMessage() for r in caplog.records)
    assert torch.equal(torch.load(path, weights_only=True)["state_dict"]["module.head.weight"], _state()["head.weight"])


@pytest.mark.parametrize("state,problem", [
    (_state(head=(4, 3)), r"has 'head.weight' of shape \(4, 3\), expected \(3, 4\)"),
    ({"head.weight": torch.zeros(3, 4)}, r"has no entry 'body.0.weight' \(expected shape \(5,\)\)"),
    ([torch.zeros(3)], "holds a list, expected a state_dict"),
])
def test_an_unhashed_file_of_the_wrong_structure_is_refused(server, monkeypatch, isolated, state, problem):
    url = server.add(f"/bad{len(server.files)}.pt", _torch_bytes(state))
    _entry(monkeypatch, name="test_sd", hashed=False, structure=STRUCTURE, kind="backbone", url=url)
    with pytest.raises(HubError, match=f"test_sd: the file downloaded from {url} {problem}; deleted it"):
        hub.fetch("test_sd", progress=False)
    assert os.listdir(isolated) == []


def test_a_file_put_in_the_cache_by_hand_is_checked_like_a_download(official_file, isolated):
    """The offline route for the authors' files: a file at the cache path, checked against the real entries."""
    os.makedirs(isolated)
    os.symlink(official_file, isolated / "dml_csr_lapa.pth")
    model, meta = load_model("dml_csr_lapa")
    assert (meta["dataset"], meta["num_classes"], meta["channel_order"]) == ("lapa", 11, "BGR")
    assert meta["classes"] == list(get_spec("lapa").classes) and model.num_classes == 11
    os.symlink(official_file, isolated / "dml_csr_celebamask_hq.pth")  # an 11-class file where 19 are expected
    with pytest.raises(HubError, match=r"dml_csr_celebamask_hq: cached file .* has 'layer6.conv4.weight' of shape "
                                       r"\(11, 256, 1, 1\), expected \(19, 256, 1, 1\); moved it"):
        load_model("dml_csr_celebamask_hq")
    assert sorted(os.listdir(isolated)) == ["dml_csr_celebamask_hq.pth.rejected", "dml_csr_lapa.pth"]


def test_the_mirror_replaces_the_host_and_keeps_the_path(server, monkeypatch, isolated):
    body = b"mirrored"
    server.add("/m/some/path/blob.bin", body)
    _entry(monkeypatch, body, url="https://example.invalid/some/path/blob.bin")
    monkeypatch.setenv("DML_CSR_MIRROR", server.url("/m/"))
    assert open(hub.fetch("test_blob", progress=False), "rb").read() == body
    # the real YuNet entry, mirrored: a wrong file is refused in its name
    server.add("/m/opencv/opencv_zoo/raw/main/models/face_detection_yunet/face_detection_yunet_2023mar.onnx", b"no")
    with pytest.raises(HubError, match="yunet_2023mar: the file downloaded from .*/m/opencv/opencv_zoo/raw/main/"
                                       ".* has 2 bytes, expected 232589"):
        hub.fetch("yunet_2023mar", progress=False)
    assert os.listdir(isolated) == ["test_blob.bin"]


def test_a_url_argument_overrides_the_source(server, monkeypatch):
    body = b"override"
    _entry(monkeypatch, body, url="https://example.invalid/blob.bin")
    path = hub.fetch("test_blob", progress=False, url=server.add("/override.bin", body))
    assert open(path, "rb").read() == body and server.hits["/override.bin"] == 1


def test_google_drive_needs_gdown_or_a_file_put_in_place(monkeypatch, isolated):
    monkeypatch.setitem(sys.modules, "gdown", None)  # import gdown -> ImportError
    with pytest.raises(HubError) as e:
        hub.fetch("resnet101_deepstem_imagenet", progress=False)
    msg = str(e.value)
    assert msg.startswith("resnet101_deepstem_imagenet: downloading https://drive.google.com/uc?id=1rzLU-wK6rEorCNJf")
    assert "pip install gdown" in msg and f"'{isolated / 'resnet101-imagenet.pth'}'" in msg and "\n" not in msg
    with pytest.raises(HubError) as e:  # no per-file id: the user is told what to fetch and where to put it
        hub.fetch("dml_csr_helen", progress=False)
    msg = str(e.value)
    assert "no per-file Google Drive id" in msg and "gdown --folder 1-PjUts1AMzXNyvw3VaJQmg43GJbfEpEQ" in msg
    assert f"put the helen file at '{isolated / 'dml_csr_helen.pth'}'" in msg and "\n" not in msg


def test_google_drive_goes_through_gdown_and_is_checked(monkeypatch, isolated):
    shapes = dict(hub.WEIGHTS["resnet101_deepstem_imagenet"].structure)
    good = {k: torch.zeros(s) for k, s in shapes.items()}
    calls = []

    def download(id=None, output=None, quiet=False):
        calls.append((id, os.path.dirname(output), quiet))
        torch.save(sd, output)
        return output

    monkeypatch.setitem(sys.modules, "gdown", types.SimpleNamespace(download=download))
    sd = {**good, "conv1.weight": torch.zeros(64, 3, 7, 7)}  # torchvision's stem: not the deep-stem init
    with pytest.raises(HubError, match=r"has 'conv1.weight' of shape \(64, 3, 7, 7\), expected \(64, 3, 3, 3\)"):
        hub.fetch("resnet101_deepstem_imagenet", progress=False)
    assert os.listdir(isolated) == []
    sd = good
    path = hub.fetch("resnet101_deepstem_imagenet", progress=False)
    assert path == str(isolated / "resnet101-imagenet.pth") and set(torch.load(path, weights_only=True)) == set(good)
    assert calls == [("1rzLU-wK6rEorCNJfwrmIu5hY2wRMyKTK", str(isolated), True)] * 2


def test_a_mirror_serves_drive_files_by_id_and_filename(server, monkeypatch, isolated):
    sd = {k: torch.zeros(s) for k, s in hub.WEIGHTS["dml_csr_helen"].structure}
    server.add("/mirror/gdrive/1-PjUts1AMzXNyvw3VaJQmg43GJbfEpEQ/dml_csr_helen.pth", _torch_bytes(sd))
    monkeypatch.setenv("DML_CSR_MIRROR", server.url("/mirror"))
    assert hub.fetch("dml_csr_helen", progress=False) == str(isolated / "dml_csr_helen.pth")


def test_resolve_returns_paths_and_fetches_names_only(tmp_path):
    f = tmp_path / "mine.pt"
    f.write_bytes(b"x")
    assert hub.resolve(str(f)) == str(f)
    assert hub.is_name("yunet_2023mar") and not hub.is_name(str(f)) and not hub.is_name(None)
    with pytest.raises(HubError, match="'dml_csr_helem' is neither an existing file nor a weights name; expected a "
                                       "path or one of dml_csr_helen, dml_csr_lapa, dml_csr_celebamask_hq$"):
        hub.resolve("dml_csr_helem", kind="dml_csr")
    with pytest.raises(HubError, match="'yunet_2023mar' is a detector file; expected a backbone file: one of "
                                       "resnet101_deepstem_imagenet, farl_vit_b16_ep16, farl_vit_b16_ep64$"):
        hub.resolve("yunet_2023mar", kind="backbone")
    with pytest.raises(HubError, match="unknown weights name 'nope'; expected one of dml_csr_helen"):
        hub.fetch("nope")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny checkpoint in our format: (path, bytes)."""
    path = write_tiny_checkpoint(str(tmp_path_factory.mktemp("tiny") / "tiny.pt"))
    with open(path, "rb") as f:
        return path, f.read()


def test_load_model_takes_a_registry_name(server, monkeypatch, tiny):
    _entry(monkeypatch, tiny[1], name="test_parser", kind="dml_csr", url=server.add("/tiny.pt", tiny[1]))
    model, meta = load_model("test_parser")
    assert meta["classes"] == list(get_spec("synthetic").classes) and meta["input_size"] == [64, 64]
    state = torch.load(tiny[0], weights_only=True)["model"]
    ours = model.state_dict()
    assert len(ours) > 100 and all(torch.equal(ours[k], state[k]) for k in ours)
    with pytest.raises(HubError, match="'yunet_2023mar' is a detector file; expected a dml_csr file"):
        load_model("yunet_2023mar")


def test_model_pretrained_takes_a_backbone_name(server, monkeypatch, tiny):
    state = torch.load(tiny[0], weights_only=True)["model"]
    backbone = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    body = _torch_bytes(backbone)
    _entry(monkeypatch, name="test_r18", hashed=False, kind="backbone", url=server.add("/r18.pt", body),
           structure=(("conv1.weight", (64, 3, 7, 7)), ("layer4.1.conv2.weight", (512, 512, 3, 3))))
    cfg = load_config(None, TINY + ["data.dataset=synthetic", "data.root=unused", "model.pretrained=test_r18"])
    model = _build_model(cfg, get_spec("synthetic"), torch.device("cpu"), du.DistInfo(), None)
    got = model.backbone.state_dict()
    assert set(got) == set(backbone) and all(torch.equal(got[k], backbone[k]) for k in got)
    assert cfg.model.pretrained == "test_r18"  # the config keeps the name; only the built model sees the path
    assert resolve_pretrained(cfg.model).pretrained == hub.weights_path("test_r18")
    for kept in ("", "imagenet", tiny[0]):
        cfg.model.pretrained = kept
        assert resolve_pretrained(cfg.model) is cfg.model
    cfg.model.pretrained = "yunet_2023mar"
    with pytest.raises(HubError, match="^model.pretrained: weights 'yunet_2023mar' is a detector file; "
                                       "expected a backbone file"):
        resolve_pretrained(cfg.model)


def test_torch_hub_load_gives_a_face_parser(server, monkeypatch, tiny):
    from dml_csr.photos.parser import FaceParser

    _entry(monkeypatch, tiny[1], name="test_parser", kind="dml_csr", url=server.add("/hub.pt", tiny[1]))
    parser = torch.hub.load(ROOT, "dml_csr", source="local", name="test_parser", device="cpu")
    assert isinstance(parser, FaceParser) and parser.classes == list(get_spec("synthetic").classes)
    assert parser.transform.input_size == (64, 64) and server.hits["/hub.pt"] == 1
    spec = importlib.util.spec_from_file_location("hubconf_under_test", os.path.join(ROOT, "hubconf.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    entry_points = {n for n in dir(module) if callable(getattr(module, n)) and not n.startswith("_")}  # as hub.list
    assert entry_points == {"dml_csr", "dml_csr_helen", "dml_csr_lapa", "dml_csr_celebamask_hq"}


def test_a_local_file_named_like_an_entry_never_replaces_the_registry(server, monkeypatch, tiny, tmp_path, caplog):
    """./test_parser (another model) lies in the working folder: the bare name still loads the registry's checked
    file and says so; the local file loads only as a path (./test_parser), and the log says which was used."""
    _entry(monkeypatch, tiny[1], name="test_parser", kind="dml_csr", url=server.add("/tiny2.pt", tiny[1]))
    monkeypatch.chdir(tmp_path)
    write_tiny_checkpoint(str(tmp_path / "test_parser"), seed=1)
    other = torch.load(str(tmp_path / "test_parser"), weights_only=True)["model"]
    registry = torch.load(tiny[0], weights_only=True)["model"]
    key = "decoder.conv4.weight"
    assert not torch.equal(other[key], registry[key])
    with caplog.at_level(logging.INFO, logger="dml_csr.hub"):
        model, _ = load_model("test_parser")
    assert torch.equal(model.state_dict()[key], registry[key])
    assert ("'test_parser' is a weights name: the registry's checked file is used, not the local file of that name "
            "(pass ./test_parser to load that one)") in caplog.text
    assert "weights: 'test_parser' from the registry" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO):
        model, _ = load_model("./test_parser")
    assert torch.equal(model.state_dict()[key], other[key])
    assert "weights: the local file './test_parser'" in caplog.text


def test_a_bare_word_is_a_registry_name_never_a_local_file(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine").write_bytes(b"x")
    (tmp_path / "mine.pt").write_bytes(b"x")
    with pytest.raises(HubError) as e:
        hub.resolve("mine")
    assert str(e.value) == ("'mine' is not a weights name (expected one of " + ", ".join(hub.WEIGHTS) + "); to load "
                            "the local file of that name, pass it as a path: ./mine")
    assert hub.resolve("./mine") == "./mine" and hub.resolve("mine.pt") == "mine.pt"
    assert hub.resolve(str(tmp_path / "mine")) == str(tmp_path / "mine")
    assert [hub.is_path_like(s) for s in ("mine", "./mine", "../mine", "~/mine", "a/mine", "/abs", "m.pt", None)] == \
        [False, True, True, True, True, True, True, False]
