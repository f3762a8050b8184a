"""dml_csr.sharing.drive through dml_csr.hub.fetch: the authors' share served by a mocked gdown, as an archive (zip,
tar: the checkpoint asked for extracted, the others cached on the way, unsafe members refused) or as a folder
listing (the file fetched by its own id); what arrives is verified by structure and its hash logged."""
from __future__ import annotations

import collections
import io
import logging
import os
import socket
import sys
import tarfile
import types
import zipfile

import pytest
import torch

from dml_csr import hub
from dml_csr.hub import HubError
from dml_csr.sharing import drive

SHARE = "1-PjUts1AMzXNyvw3VaJQmg43GJbfEpEQ"
Listed = collections.namedtuple("GoogleDriveFileToDownload", ("id", "path", "local_path"))  # gdown's own


def _authors_file(name: str, classes: int = 0) -> bytes:
    """A file with the structure the registry checks for ``name`` (stride-0 tensors: a few bytes for 40M values);
    ``classes`` changes the classifier's class count."""
    sd = {k: torch.zeros(1).expand(*shape) for k, shape in hub.WEIGHTS[name].structure}
    if classes:
        sd["layer6.conv4.weight"] = torch.zeros(1).expand(classes, 256, 1, 1)
    buf = io.BytesIO()
    torch.save(sd, buf)
    return buf.getvalue()


MEMBERS = {"DML_CSR/README.txt": b"the authors' notes",
           "DML_CSR/DML_CSR_helen.pth": _authors_file("dml_csr_helen"),
           "DML_CSR/DML_CSR_lapa.pth": _authors_file("dml_csr_lapa"),
           "DML_CSR/DML_CSR_celebamask_hq.pth": _authors_file("dml_csr_celebamask_hq")}


def _zip(members: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _tar(members: dict, link: str = "") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        if link:
            info = tarfile.TarInfo(link)
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            t.addfile(info)
    return buf.getvalue()


class FakeGdown:
    """gdown's download and download_folder: ``files`` maps a Drive id to its bytes (an id missing: gdown's error for
    a folder id); ``folders`` maps a folder id to its listing."""

    def __init__(self, files: dict, folders: dict = None):
        self.files, self.folders, self.calls = files, folders or {}, []

    def download(self, id=None, output=None, quiet=False):
        self.calls.append(("download", id))
        if id not in self.files:
            raise RuntimeError("Cannot retrieve the public link of the file. You may need to change the permission")
        with open(output, "wb") as f:
            f.write(self.files[id])
        return output

    def download_folder(self, id=None, skip_download=False, quiet=False):
        self.calls.append(("download_folder", id, skip_download))
        assert skip_download  # a listing only: the files are fetched one by one
        return [Listed(i, p, f"/nowhere/{p}") for p, i in self.folders[id].items()]


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("DML_CSR_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("DML_CSR_MIRROR", raising=False)

    def no_network(host, *args, **kwargs):
        raise AssertionError(f"a test tried to reach {host}")
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    return tmp_path / "cache" / "weights"


def _gdown(monkeypatch, files: dict, folders: dict = None) -> FakeGdown:
    fake = FakeGdown(files, folders)
    monkeypatch.setitem(sys.modules, "gdown", types.SimpleNamespace(download=fake.download,
                                                                   download_folder=fake.download_folder))
    return fake


@pytest.mark.parametrize("pack", [_zip, _tar], ids=["zip", "tar"])
def test_an_archive_yields_the_checkpoint_and_caches_the_others(monkeypatch, isolated, caplog, pack):
    fake = _gdown(monkeypatch, {SHARE: pack(MEMBERS)})
    with caplog.at_level(logging.INFO):
        path = hub.fetch("dml_csr_lapa", progress=False)
    assert path == str(isolated / "dml_csr_lapa.pth")
    assert open(path, "rb").read() == MEMBERS["DML_CSR/DML_CSR_lapa.pth"]
    for name, member in (("dml_csr_helen", "DML_CSR_helen.pth"), ("dml_csr_celebamask_hq", "DML_CSR_celebamask_hq.pth")):
        assert open(hub.weights_path(name), "rb").read() == MEMBERS[f"DML_CSR/{member}"]  # one download, three files
    assert sorted(os.listdir(isolated)) == ["dml_csr_celebamask_hq.pth", "dml_csr_helen.pth", "dml_csr_lapa.pth"]
    assert "has no pinned sha256" in caplog.text and hub.sha256_of(path) in caplog.text  # logged on arrival
    assert hub.fetch("dml_csr_helen", progress=False) == hub.weights_path("dml_csr_helen")
    assert fake.calls == [("download", SHARE)]  # the others came from the cache


@pytest.mark.parametrize("archive,bad", [
    (_zip({**MEMBERS, "../evil.pth": b"x"}), "../evil.pth"),
    (_zip({**MEMBERS, "/etc/evil.pth": b"x"}), "/etc/evil.pth"),
    (_tar(MEMBERS, link="DML_CSR/link.pth"), "DML_CSR/link.pth"),
], ids=["dotdot", "absolute", "symlink"])
def test_an_archive_with_an_unsafe_member_is_refused_whole(monkeypatch, isolated, tmp_path, archive, bad):
    _gdown(monkeypatch, {SHARE: archive})
    with pytest.raises(HubError) as e:
        hub.fetch("dml_csr_helen", progress=False)
    msg = str(e.value)
    assert f"holds member '{bad}'" in msg and "refusing to extract anything from it" in msg and "\n" not in msg
    assert f"put the helen file at '{isolated / 'dml_csr_helen.pth'}'" in msg  # the manual route stays
    assert os.listdir(isolated) == [] and not (tmp_path / "evil.pth").exists()


def test_a_folder_is_listed_and_the_file_fetched_by_its_own_id(monkeypatch, isolated):
    listing = {"DML-CSR/helen/DML_CSR_helen.pth": "id-helen", "DML-CSR/lapa/DML_CSR_lapa.pth": "id-lapa",
               "DML-CSR/README.md": "id-readme"}
    fake = _gdown(monkeypatch, {"id-helen": MEMBERS["DML_CSR/DML_CSR_helen.pth"]}, {SHARE: listing})
    path = hub.fetch("dml_csr_helen", progress=False)
    assert open(path, "rb").read() == MEMBERS["DML_CSR/DML_CSR_helen.pth"]
    assert fake.calls == [("download", SHARE), ("download_folder", SHARE, True), ("download", "id-helen")]
    assert os.listdir(isolated) == ["dml_csr_helen.pth"]


def test_what_arrives_is_verified_and_a_missing_member_named(monkeypatch, isolated):
    wrong = {**MEMBERS, "DML_CSR/DML_CSR_helen.pth": _authors_file("dml_csr_helen", classes=19)}
    _gdown(monkeypatch, {SHARE: _zip(wrong)})
    with pytest.raises(HubError, match=r"has 'layer6.conv4.weight' of shape \(19, 256, 1, 1\), expected "
                                       r"\(11, 256, 1, 1\)"):
        hub.fetch("dml_csr_helen", progress=False)
    # each file is verified on its own: the wrong one is refused, the good ones that came with it are cached
    assert sorted(os.listdir(isolated)) == ["dml_csr_celebamask_hq.pth", "dml_csr_lapa.pth"]
    os.remove(hub.weights_path("dml_csr_lapa"))
    _gdown(monkeypatch, {SHARE: _zip({"DML_CSR/DML_CSR_helen.pth": MEMBERS["DML_CSR/DML_CSR_helen.pth"]})})
    with pytest.raises(HubError) as e:
        hub.fetch("dml_csr_lapa", progress=False)
    assert "the authors' archive holds no lapa checkpoint (its files: DML_CSR/DML_CSR_helen.pth)" in str(e.value)
    assert "gdown --folder 1-PjUts1AMzXNyvw3VaJQmg43GJbfEpEQ" in str(e.value)


def test_member_names_and_matching():
    assert drive.member_for(["a/DML_CSR_Helen.pth", "a/lapa.pth", "notes.txt"], "helen") == "a/DML_CSR_Helen.pth"
    assert drive.member_for(["x/CelebA.pth"], "celebamask_hq") == "x/CelebA.pth"
    assert drive.member_for(["helen.txt"], "helen") is None
    with pytest.raises(OSError, match="several helen checkpoints"):
        drive.member_for(["a/helen.pth", "b/helen_v2.pth"], "helen")
    assert all(drive.safe_member_name(n) for n in ("a/b.pth", "b.pth", "a/..b/c.pth"))
    assert not any(drive.safe_member_name(n) for n in ("../b.pth", "/b.pth", "a/../../b.pth", "C:/b.pth", "a\\..\\b"))
