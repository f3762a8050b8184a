"""A checkpoint as a model folder ready for the Hugging Face Hub (``scripts/export.py --format hf``), and its upload.

:func:`export_hf` writes ``model.safetensors`` (the inference weights: edge heads dropped), ``config.json`` (the
checkpoint's metadata and resolved config, with the weights' size and sha256) and ``README.md`` (the model card of
:mod:`dml_csr.photos.card`, with the test metrics of the run). The metrics are the ``metrics.json`` files of
``scripts/evaluate.py`` that scored this very file (their ``checkpoint_sha256`` is its sha256): by default those in
the checkpoint's folder (``runs/NAME/eval_*/metrics.json``), or the files given. The folder loads as it is
(``FaceParser.from_pretrained(DIR)``, ``--checkpoint DIR``) and, once pushed, by name (``hf://OWNER/REPO``).
"""
from __future__ import annotations

import glob
import json
import logging
import os
from typing import Optional, Sequence

from ..checkpoint import FORMAT, load_checkpoint, load_model, official_config
from ..config import config_to_dict
from ..hub import is_name, resolve, sha256_of
from ..sharing import folder, hf
from .card import model_card

__all__ = ["export_hf", "run_metrics"]

log = logging.getLogger(__name__)


def _source(checkpoint: str) -> str:
    """The local file or folder behind ``checkpoint`` (a path, a registry name or a Hub name)."""
    return resolve(checkpoint, kind="dml_csr") if is_name(checkpoint) or hf.is_hf_name(checkpoint) else checkpoint


def _config(source: str, meta: dict) -> dict:
    """The resolved config of the model at ``source``, as the folder's ``config.json`` records it."""
    if meta.get("source") == "official":
        config = config_to_dict(official_config(meta["dataset"]))
    elif str(source).endswith(".safetensors") or folder.is_model_folder(source):
        config = folder.read_folder(source)["config"]
    else:
        config = load_checkpoint(source)["config"]
    model = dict(config.get("model", {}), edge_heads=False, pretrained="")  # the weights are the inference model's
    return {**config, "model": model}


def run_metrics(source: str, given: Optional[Sequence[str]] = None) -> list[dict]:
    """The ``metrics.json`` records that scored the file at ``source`` (its sha256, a folder's weights file's):
    ``given`` files (each must have scored it), else those found in its folder's ``eval_*/``."""
    digest = sha256_of(folder.weights_file(source))
    paths = list(given) if given is not None else sorted(
        glob.glob(os.path.join(os.path.dirname(os.path.abspath(folder.weights_file(source))), "eval_*",
                               "metrics.json")))
    records = []
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                record = json.load(f)
            scored = record["protocol"].get("checkpoint_sha256")
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"--metrics '{path}': not a metrics.json of scripts/evaluate.py ({e})") from None
        if scored == digest:
            records.append(record)
        elif given is not None:
            raise ValueError(f"--metrics '{path}' scored a checkpoint of sha256 {scored}, not '{source}' "
                             f"({digest}); give the metrics of this file")
        else:
            log.info("%s scored another file (sha256 %s); left out of the card", path, scored)
    return records


def export_hf(checkpoint: str, out: str, metrics: Optional[Sequence[str]] = None, repo: str = "") -> dict:
    """Write the model folder of ``checkpoint`` (our checkpoint, an authors' file, a registry or Hub name, a model
    folder) into ``out``; ``metrics``: the ``metrics.json`` files to report (default: found beside it); ``repo``: the
    Hub repository named in the card. Returns {"paths", "metrics": the records' folders, "meta"}."""
    source = _source(checkpoint)
    model, meta = load_model(source)
    if hasattr(model, "drop_edge_heads"):
        model.drop_edge_heads()
    config = _config(source, meta)
    records = run_metrics(source, metrics)
    record = {"format": FORMAT, "library": "dml_csr", "meta": meta, "config": config}
    paths = folder.write_folder(out, model.state_dict(), record, model_card(meta, config, records, repo))
    return {"paths": paths, "metrics": [r["protocol"].get("split") for r in records], "meta": meta}

