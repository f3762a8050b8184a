"""``load_model(path)``: our checkpoints and the authors' released DML-CSR files, one call.

Our checkpoints (:mod:`dml_csr.checkpoint`) carry the config that rebuilds the model and the metadata (classes,
input convention). The authors' files are raw state_dicts: the model is their architecture and the input their
convention (BGR images normalised with the RGB ImageNet mean and std, 473x473), both the config's defaults
(:func:`official_config`); the class count comes from ``layer6.conv4.weight``.
"""
from __future__ import annotations

import copy
import logging
from typing import Optional, Union

import torch
from torch import nn

from .checkpoint import FORMAT, CheckpointError, load_checkpoint, make_meta
from .config import Config, DataConfig, ModelConfig, config_from_dict
from .data.labels import LabelSpec, get_spec
from .hub import get_weights, is_name, resolve
from .models import build_model
from .models.official import (StateDictMismatch, convert_official_state_dict, is_official_state_dict,
                              load_state_dict_strict, official_num_classes, ours_to_official, unwrap_state_dict)

__all__ = ["load_model", "official_meta", "official_config", "build_from_official"]

log = logging.getLogger(__name__)

# the authors' class count -> our label registry entry (Helen and LaPa share the 11-class layout)
OFFICIAL_DATASETS = {11: "helen", 19: "celebamask_hq"}


def official_config(dataset: str, edge_heads: bool = False) -> Config:
    """The config of an authors' model for the class layout ``dataset``: the defaults, which are their architecture
    and their input convention (:mod:`dml_csr.conventions`)."""
    return Config(name=f"official_{dataset}", data=DataConfig(dataset=dataset, root=""),
                  model=ModelConfig(edge_heads=edge_heads))


def official_meta(num_classes: int, dataset: Optional[str] = None) -> dict:
    """Metadata of an authors' file (:func:`dml_csr.checkpoint.make_meta` of :func:`official_config`): the classes of
    ``dataset``, by default the layout of their class count (``class_<i>`` for an unknown one), their input
    convention, and ``source: official``."""
    dataset = dataset or OFFICIAL_DATASETS.get(num_classes)
    if dataset is not None:
        spec = get_spec(dataset)
    else:
        log.warning("authors' file with %d classes: no known class names, using class_<i>", num_classes)
        spec = LabelSpec("unknown", tuple(f"class_{i}" for i in range(num_classes)))
    return make_meta(official_config(spec.name), spec, source="official")


def build_from_official(sd: dict, source: str, edge_heads: bool = False, norm: str = "abn") -> nn.Module:
    """Build the authors' architecture for ``sd``'s class count and load ``sd`` (their names) strictly."""
    sd = unwrap_state_dict(sd, source)
    num_classes = official_num_classes(sd, source)
    cfg = ModelConfig(edge_heads=edge_heads, norm=norm)
    with torch.device("meta"):
        model = build_model(cfg, num_classes)
    model = model.to_empty(device="cpu")
    _reset_counters(model)
    ours = convert_official_state_dict(sd, source)
    load_state_dict_strict(model, ours, source, display=_official_name)
    return model


def _official_name(ours: str) -> str:
    try:
        return ours_to_official(ours)
    except KeyError:
        return ours


def _reset_counters(model: nn.Module) -> None:
    """Buffers that a file may omit (num_batches_tracked) must not hold uninitialised memory after to_empty."""
    for name, buf in model.named_buffers():
        if name.endswith("num_batches_tracked"):
            buf.zero_()


def _build_ours(ckpt: dict, source: str, edge_heads: bool) -> tuple[nn.Module, dict]:
    meta = dict(ckpt.get("meta") or {})
    if not ckpt.get("config"):
        raise CheckpointError(f"{source}: checkpoint has no 'config'; it cannot rebuild its model")
    cfg = config_from_dict(ckpt["config"])
    mcfg = copy.deepcopy(cfg.model)
    mcfg.pretrained = ""  # the checkpoint's weights replace any ImageNet initialisation
    mcfg.edge_heads = edge_heads
    state = ckpt["model"]
    num_classes = meta.get("num_classes")
    if num_classes is None:
        raise CheckpointError(f"{source}: checkpoint meta has no 'num_classes'")
    file_classes = state.get("decoder.conv4.weight")
    if file_classes is not None and file_classes.shape[0] != num_classes:
        raise StateDictMismatch(f"{source}: meta says {num_classes} classes but 'decoder.conv4.weight' has "
                                f"{file_classes.shape[0]}")
    if "classes" in meta and len(meta["classes"]) != num_classes:
        raise StateDictMismatch(f"{source}: meta lists {len(meta['classes'])} class names for {num_classes} classes")
    with torch.device("meta"):
        model = build_model(mcfg, num_classes, meta.get("classes"))
    model = model.to_empty(device="cpu")
    _reset_counters(model)
    load_state_dict_strict(model, state, source)
    return model, meta


def load_model(path: str, device: Union[str, torch.device] = "cpu", edge_heads: bool = False
               ) -> tuple[nn.Module, dict]:
    """Load a model from our checkpoint or an authors' DML-CSR file; returns (model in eval mode, meta).

    Args:
        path: a checkpoint in our format (``{"format": "dml_csr/1", ...}``), an authors' state_dict (raw, in a
            ``state_dict`` wrapper, with or without ``module.``/``edge_layer.*``/``num_batches_tracked``), or a
            :mod:`dml_csr.hub` registry name (``dml_csr_helen``: fetched into the cache and verified first).
        device: where the model goes.
        edge_heads: keep the edge heads (training model); the file must then contain them.

    ``meta`` holds ``classes``, ``num_classes``, ``channel_order``, ``mean``, ``std``, ``input_size``: what every
    consumer needs to feed the model. Mismatching names, shapes or class counts raise an error naming them.
    """
    entry = get_weights(path) if is_name(path) else None
    if entry is not None:
        path = resolve(path, kind="dml_csr")
    obj = load_checkpoint(path)
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        model, meta = _build_ours(obj, path, edge_heads)
    elif isinstance(obj, dict) and obj.get("format") is not None:
        raise CheckpointError(f"{path}: checkpoint format '{obj.get('format')}' is not supported; expected {FORMAT}")
    else:
        sd = unwrap_state_dict(obj, path)
        if not is_official_state_dict(sd):
            raise CheckpointError(f"{path}: neither a dml_csr checkpoint (no 'format' key) nor an authors' DML-CSR "
                                  "state_dict (no 'layer6.conv4.weight')")
        model = build_from_official(sd, path, edge_heads=edge_heads)
        # Helen and LaPa share a class count: a registry entry names which of them the file is
        named = entry is not None and entry.dataset and len(entry.classes) == model.num_classes
        meta = official_meta(model.num_classes, entry.dataset if named else None)
    model.to(device).eval()
    return model, meta
