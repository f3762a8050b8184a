"""A model as a folder anyone can read, what ``scripts/export.py --format hf`` writes and the Hugging Face Hub serves:

- ``model.safetensors``: the inference weights (edge heads dropped), read without pickle;
- ``config.json``: ``{"format", "meta", "config", "weights": {"file", "bytes", "sha256"}}``, the checkpoint's
  metadata and its resolved config (enough to rebuild the network) and the size and hash of the weights file;
- ``README.md``: the model card (:mod:`dml_csr.photos.card`).

:func:`read_folder` returns a checkpoint in our schema (``{"format", "model", "meta", "config"}``) after checking the
weights file against ``config.json``: a file that is not a safetensors file (a pickle put in its place) or whose size
or sha256 differs (changed, cut off) is refused in one line, before a byte of it is used.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from ..files import write_bytes, write_json

__all__ = ["ShareError", "WEIGHTS_FILE", "CONFIG_FILE", "CARD_FILE", "is_model_folder", "folder_of", "weights_file",
           "write_folder", "read_folder", "check_pin", "sha256_of_file", "one_line"]

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "README.md"


class ShareError(OSError):
    """A shared model (a folder, a Hub name, the authors' share) that cannot be fetched or read; one line naming it
    and what is wrong (an OSError: the scripts report it as one line, as any file they cannot read)."""


def is_model_folder(path: Any) -> bool:
    """Whether ``path`` is a folder holding a ``config.json`` (a model folder, or meant as one)."""
    return isinstance(path, (str, os.PathLike)) and os.path.isfile(os.path.join(path, CONFIG_FILE))


def folder_of(path: str) -> str:
    """The model folder of ``path``: the folder itself, or the folder of its ``model.safetensors``."""
    return os.path.dirname(os.path.abspath(path)) if str(path).endswith(".safetensors") else str(path)


def weights_file(path: str) -> str:
    """The file that holds the weights of ``path``: a model folder's ``model.safetensors``, else ``path``."""
    return os.path.join(path, WEIGHTS_FILE) if os.path.isdir(path) else path


def sha256_of_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _safetensors():
    try:
        import safetensors.torch
    except ImportError:
        raise ShareError("model folders (model.safetensors) need the safetensors package: pip install "
                         "'dml_csr[hf]'") from None
    return safetensors.torch


def write_folder(out: str, state: dict, record: dict, card: str) -> list[str]:
    """Write ``state`` (name -> tensor) as ``out/model.safetensors``, ``record`` (``format``, ``meta``, ``config``)
    with the weights' size and sha256 as ``out/config.json`` and ``card`` as ``out/README.md``, each atomically;
    returns the three paths."""
    st = _safetensors()
    data = st.save({k: v.detach().cpu().contiguous() for k, v in state.items()}, metadata={"format": "pt"})
    paths = [os.path.join(out, f) for f in (WEIGHTS_FILE, CONFIG_FILE, CARD_FILE)]
    write_bytes(paths[0], data)
    weights = {"file": WEIGHTS_FILE, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    write_json(paths[1], {**record, "weights": weights}, indent=1)
    write_bytes(paths[2], card.encode())
    return paths


def read_folder(path: str) -> dict:
    """The checkpoint (``format``, ``model``, ``meta``, ``config``) held by the model folder ``path`` (or its
    ``model.safetensors``), the weights checked against ``config.json``. Raises :class:`ShareError` in one line
    naming the file and what is wrong."""
    folder = folder_of(path)
    record = _read_config(folder)
    weights = os.path.join(folder, WEIGHTS_FILE)
    if not os.path.isfile(weights):
        raise ShareError(f"model folder '{folder}' has no {WEIGHTS_FILE} beside its {CONFIG_FILE}")
    _check_weights(weights, record["weights"])
    st = _safetensors()
    try:
        state = st.load_file(weights, device="cpu")
    except Exception as e:  # safetensors' own error: a header that lies about its offsets or dtypes
        raise ShareError(f"'{weights}' cannot be read as safetensors ({one_line(e)})") from None
    return {"format": record["format"], "model": state, "meta": record["meta"], "config": record["config"]}


def _read_config(folder: str) -> dict:
    path = os.path.join(folder, CONFIG_FILE)
    if not os.path.isfile(path):
        raise ShareError(f"'{folder}' has no {CONFIG_FILE}: not a model folder (scripts/export.py --format hf "
                         "writes one)")
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ShareError(f"'{path}' is not readable JSON ({one_line(e)})") from None
    if not isinstance(record, dict):
        raise ShareError(f"'{path}' holds a JSON {type(record).__name__}; expected an object")
    missing = [k for k in ("format", "meta", "config", "weights") if not isinstance(record.get(k), (dict, str))]
    w = record.get("weights")
    if not missing and not (isinstance(w, dict) and isinstance(w.get("sha256"), str)
                            and isinstance(w.get("bytes"), int)):
        missing = ["weights.sha256", "weights.bytes"]
    if missing:
        raise ShareError(f"'{path}' lacks {', '.join(missing)}; expected what scripts/export.py --format hf writes "
                         "(format, meta, config, weights: file, bytes, sha256)")
    return record


def _check_weights(path: str, expected: dict) -> None:
    """Refuse ``path`` unless it is a safetensors file of the size and sha256 ``config.json`` records."""
    with open(path, "rb") as f:
        head = f.read(9)
    n = int.from_bytes(head[:8], "little") if len(head) == 9 else -1
    if not (0 < n <= os.path.getsize(path) - 8 and head[8:9] == b"{"):
        kind = "a zip archive (a torch.save pickle?)" if head[:2] == b"PK" else \
            "a pickle" if head[:1] == b"\x80" else "not a safetensors header"
        raise ShareError(f"'{path}' is not a safetensors file ({kind}); refusing it: a model folder's weights are "
                         "read without pickle, from safetensors only")
    size, digest = os.path.getsize(path), sha256_of_file(path)
    if size != expected["bytes"] or digest != expected["sha256"]:
        raise ShareError(f"'{path}' has {size} bytes and sha256 {digest}; its {CONFIG_FILE} records "
                         f"{expected['bytes']} bytes and sha256 {expected['sha256']}: a changed or damaged file, "
                         "refused")


def check_pin(path: str, sha256: str, who: str) -> None:
    """Refuse the weights of ``path`` (a model folder or a weights file) unless their sha256 is ``sha256``, which
    ``who`` pins (a registry entry)."""
    weights = weights_file(path)
    digest = sha256_of_file(weights) if os.path.isfile(weights) else "(no file)"
    if digest != sha256:
        raise ShareError(f"'{weights}' has sha256 {digest}; {who} pins {sha256}: not the published file, refused")


def one_line(e: BaseException) -> str:
    """The first line of an error's message (at most 200 characters), or its type's name."""
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__
