"""The Hugging Face Hub without a network: a cache laid out by hand, as ``huggingface_hub`` keeps one
(``models--OWNER--REPO/blobs``, ``snapshots/<commit>/<file>`` links into the blobs, ``refs/<branch or tag>``
holding the commit), so that Hub names resolve offline (``HF_HUB_OFFLINE=1``), and an ``HfApi`` that records an
upload instead of making it."""
from __future__ import annotations

import hashlib
import os


def lay_out(cache: str, repo: str, files: dict[str, str], commit: str, refs: tuple[str, ...] = ("main",)) -> str:
    """Put ``files`` (name in the repository -> a local file) into ``cache`` as revision ``commit`` of ``repo``, with
    each of ``refs`` pointing at it; returns the snapshot folder."""
    base = os.path.join(cache, "models--" + repo.replace("/", "--"))
    snapshot = os.path.join(base, "snapshots", commit)
    os.makedirs(os.path.join(base, "blobs"), exist_ok=True)
    os.makedirs(snapshot, exist_ok=True)
    os.makedirs(os.path.join(base, "refs"), exist_ok=True)
    for name, src in files.items():
        data = open(src, "rb").read()
        blob = os.path.join(base, "blobs", hashlib.sha256(data).hexdigest())
        with open(blob, "wb") as f:
            f.write(data)
        link = os.path.join(snapshot, name)
        if os.path.lexists(link):
            os.remove(link)
        os.symlink(os.path.relpath(blob, snapshot), link)
    for ref in refs:
        with open(os.path.join(base, "refs", ref), "w") as f:
            f.write(commit)
    return snapshot


COMMIT = "c" * 40


class FakeApi:
    """huggingface_hub.HfApi as far as an upload goes: records the calls and what the folder held."""
    calls: list = []

    def create_repo(self, repo_id, **kw):
        self.calls.append(("create_repo", repo_id, kw))

    def create_branch(self, repo_id, **kw):
        self.calls.append(("create_branch", repo_id, kw))

    def upload_folder(self, **kw):
        self.calls.append(("upload_folder", kw["repo_id"], {**kw, "files": sorted(os.listdir(kw["folder_path"]))}))
        return type("CommitInfo", (), {"commit_url": f"https://huggingface.co/{kw['repo_id']}/commit/{COMMIT}"})()


def go_offline(monkeypatch, cache: str) -> None:
    """huggingface_hub's cache at ``cache`` and its offline mode on for one test: the environment variables, and the
    constants it read from them when it was imported."""
    import huggingface_hub.constants as constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", cache)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", cache)
