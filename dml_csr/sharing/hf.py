"""Models on the Hugging Face Hub by name: ``hf://OWNER/REPO`` (the default branch) or ``hf://OWNER/REPO@REVISION``
(a branch, a tag or a commit: a commit pins the exact files).

Files come through ``huggingface_hub`` (optional: ``pip install 'dml_csr[hf]'``), so its cache (``HF_HUB_CACHE``,
default ``~/.cache/huggingface/hub``), its offline mode (``HF_HUB_OFFLINE=1``: the cache only) and its login (``hf
auth login``: the token of a private repository or of an upload) apply as for any Hub model; this package keeps no
token. What the name resolves to is a model folder (:mod:`.folder`), checked before use like a local one.
"""
from __future__ import annotations

import os
import re
from typing import Optional, Sequence

from .folder import CONFIG_FILE, WEIGHTS_FILE, ShareError, check_pin, one_line

__all__ = ["PREFIX", "is_hf_name", "parse", "resolve", "download", "push"]

PREFIX = "hf://"
_NAME = re.compile(r"hf://([A-Za-z0-9][\w.-]*)/([A-Za-z0-9][\w.-]*)(?:@([\w./-]+))?")
INSTALL = "pip install 'dml_csr[hf]'"


def is_hf_name(s: object) -> bool:
    """Whether ``s`` is meant as a Hub name (starts with ``hf://``; :func:`parse` checks the rest)."""
    return isinstance(s, str) and s.startswith(PREFIX)


def parse(name: str) -> tuple[str, Optional[str]]:
    """``hf://OWNER/REPO[@REVISION]`` -> (``OWNER/REPO``, revision or None)."""
    m = _NAME.fullmatch(name)
    if m is None:
        raise ShareError(f"'{name}' is not a Hub name; expected hf://OWNER/REPO or hf://OWNER/REPO@REVISION")
    return f"{m.group(1)}/{m.group(2)}", m.group(3)


def _hub():
    try:
        import huggingface_hub
    except ImportError:
        raise ShareError(f"loading or sharing through the Hugging Face Hub needs huggingface_hub: {INSTALL}") from None
    return huggingface_hub


def resolve(name: str, kind: Optional[str] = None, sha256: Optional[str] = None) -> str:
    """What :func:`dml_csr.hub.resolve` gives for a Hub name: the model folder, or for ``kind="backbone"`` (an
    initialisation, ``model.pretrained``) its ``model.safetensors`` alone; ``sha256``: the weights' pinned hash."""
    files = (WEIGHTS_FILE,) if kind == "backbone" else (CONFIG_FILE, WEIGHTS_FILE)
    path = download(name, files)
    if sha256:
        check_pin(path, sha256, f"the registry entry of {name}")
    return os.path.join(path, WEIGHTS_FILE) if kind == "backbone" else path


def download(name: str, files: Sequence[str] = (CONFIG_FILE, WEIGHTS_FILE)) -> str:
    """The local folder (a snapshot in the Hub's cache) holding ``files`` of the model ``name``, downloaded where the
    cache lacks them. Raises :class:`ShareError` in one line: the extra missing, offline without the files in the
    cache, an unknown repository, revision or file."""
    repo, revision = parse(name)
    hub = _hub()
    try:
        import huggingface_hub.errors as errors
    except ImportError:  # huggingface_hub < 0.23 kept them in utils
        import huggingface_hub.utils as errors
    paths = []
    for f in files:
        try:
            paths.append(hub.hf_hub_download(repo, f, revision=revision))
        except errors.LocalEntryNotFoundError:
            raise ShareError(f"{name}: {f} is not in the Hugging Face cache ({_cache(hub)}) and the Hub cannot be "
                             "reached (HF_HUB_OFFLINE=1, or no connection); run once online, or pass the folder "
                             "written by scripts/export.py --format hf") from None
        except errors.RevisionNotFoundError:
            raise ShareError(f"{name}: repository {repo} has no revision '{revision}'") from None
        except errors.RepositoryNotFoundError:
            raise ShareError(f"{name}: no repository {repo} on the Hub (or a private one: log in with `hf auth "
                             "login`)") from None
        except errors.EntryNotFoundError:
            raise ShareError(f"{name}: the repository has no {f}: not a model written by scripts/export.py --format "
                             "hf") from None
        except (OSError, ValueError) as e:  # HTTP errors, refused connections, a malformed repo id
            raise ShareError(f"{name}: cannot fetch {f} ({one_line(e)})") from None
    folders = {os.path.dirname(p) for p in paths}
    if len(folders) != 1:
        raise ShareError(f"{name}: its files came from different snapshots ({', '.join(sorted(folders))})")
    return folders.pop()


def push(folder: str, repo: str, revision: Optional[str] = None, private: bool = False) -> str:
    """Upload the model folder ``folder`` to the Hub repository ``repo`` (created if missing), on branch
    ``revision`` (created from the default branch if missing) or the default branch; the token is
    ``huggingface_hub``'s own (``hf auth login`` or ``HF_TOKEN``). Returns the commit's URL."""
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*", repo):
        raise ShareError(f"--push '{repo}': expected a repository id OWNER/NAME")
    hub = _hub()
    api = hub.HfApi()
    try:
        api.create_repo(repo, repo_type="model", private=private, exist_ok=True)
        if revision:
            api.create_branch(repo, branch=revision, repo_type="model", exist_ok=True)
        info = api.upload_folder(folder_path=folder, repo_id=repo, repo_type="model", revision=revision,
                                 commit_message="Upload a dml_csr model (scripts/export.py --format hf)")
    except (OSError, ValueError) as e:  # not logged in, no write access, no connection
        raise ShareError(f"cannot upload '{folder}' to {repo} ({one_line(e)}); log in with `hf auth login`") \
            from None
    return str(getattr(info, "commit_url", info))


def _cache(hub) -> str:
    return getattr(getattr(hub, "constants", None), "HF_HUB_CACHE", "the Hub cache")

