"""The authors' released DML-CSR files: name mapping to our modules and strict loading.

Their model (insightface parsing/dml_csr) names its parts ``conv1 bn1 conv2 bn2 conv3 bn3 layer1..layer4`` (backbone),
``context`` (DDGCN context), ``layer6`` (parsing decoder) and ``edge_layer`` (edges); inside those parts our modules use
their names. The mapping is the explicit prefix table :data:`OFFICIAL_PREFIXES`; loading is strict: names that map
to nothing, our names that nothing maps to, and shape differences are errors naming the keys and the file.

Their files are raw state_dicts saved from ``model.module``; we also accept a ``{"state_dict": ...}`` wrapper, a
``module.`` prefix, files with or without ``edge_layer.*`` and with or without the norms' ``num_batches_tracked``.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Mapping

import torch
from torch import nn

__all__ = ["OFFICIAL_PREFIXES", "official_to_ours", "ours_to_official", "unwrap_state_dict",
           "is_official_state_dict", "official_num_classes", "convert_official_state_dict",
           "load_state_dict_strict", "StateDictMismatch"]

log = logging.getLogger(__name__)

# authors' prefix -> ours (order matters only for readability; prefixes are disjoint)
OFFICIAL_PREFIXES: tuple[tuple[str, str], ...] = (
    ("conv1.", "backbone.conv1."),
    ("bn1.", "backbone.bn1."),
    ("conv2.", "backbone.conv2."),
    ("bn2.", "backbone.bn2."),
    ("conv3.", "backbone.conv3."),
    ("bn3.", "backbone.bn3."),
    ("layer1.", "backbone.layer1."),
    ("layer2.", "backbone.layer2."),
    ("layer3.", "backbone.layer3."),
    ("layer4.", "backbone.layer4."),
    ("context.", "context."),  # their DDualGCNHead attribute is "context" (not "layer5")
    ("layer6.", "decoder."),
    ("edge_layer.", "edges."),
)
CLASS_KEY = "layer6.conv4.weight"  # (num_classes, 256, 1, 1) in their files


class StateDictMismatch(KeyError):
    """A state_dict that does not fit the model; the message lists the names or the shapes that differ."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def official_to_ours(name: str) -> str:
    """``layer6.conv4.weight`` -> ``decoder.conv4.weight``; raises KeyError for a name outside their model."""
    for theirs, ours in OFFICIAL_PREFIXES:
        if name.startswith(theirs):
            return ours + name[len(theirs):]
    raise KeyError(name)


def ours_to_official(name: str) -> str:
    """The inverse of :func:`official_to_ours`."""
    for theirs, ours in OFFICIAL_PREFIXES:
        if name.startswith(ours):
            return theirs + name[len(ours):]
    raise KeyError(name)


def unwrap_state_dict(obj: object, source: str) -> "OrderedDict[str, torch.Tensor]":
    """A plain name->tensor dict from a raw state_dict, a ``{"state_dict": ...}`` wrapper, with ``module.`` removed."""
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise StateDictMismatch(f"{source}: expected a state_dict (names -> tensors) or a dict with 'state_dict'")
    out = OrderedDict()
    for k, v in obj.items():
        out[k[len("module."):] if k.startswith("module.") else k] = v
    return out


def is_official_state_dict(sd: Mapping[str, torch.Tensor]) -> bool:
    """Whether names look like the authors' (their decoder's class layer is present)."""
    return CLASS_KEY in sd


def official_num_classes(sd: Mapping[str, torch.Tensor], source: str) -> int:
    """Class count of an authors' state_dict, from ``layer6.conv4.weight``."""
    if CLASS_KEY not in sd:
        raise StateDictMismatch(f"{source}: no '{CLASS_KEY}' entry; this is not an authors' DML-CSR state_dict")
    return int(sd[CLASS_KEY].shape[0])


def convert_official_state_dict(sd: Mapping[str, torch.Tensor], source: str) -> "OrderedDict[str, torch.Tensor]":
    """Rename every entry to ours; names that map to nothing are an error listing them."""
    out, unknown = OrderedDict(), []
    for k, v in sd.items():
        try:
            out[official_to_ours(k)] = v
        except KeyError:
            unknown.append(k)
    if unknown:
        raise StateDictMismatch(f"{source}: {len(unknown)} entries are not part of the authors' DML-CSR model: "
                                f"{', '.join(unknown[:20])}{' ...' if len(unknown) > 20 else ''}")
    return out


def _fmt(names: list[str]) -> str:
    return ", ".join(names[:20]) + (f" ... ({len(names)} in all)" if len(names) > 20 else "")


def load_state_dict_strict(model: nn.Module, sd: Mapping[str, torch.Tensor], source: str,
                           display=lambda k: k) -> None:
    """Load ``sd`` (our names) into ``model`` strictly, with errors naming keys, shapes and ``source``.

    Tolerated: entries of the training-only heads (the model's ``training_only`` name prefixes: DML-CSR's
    ``edges.``, RNN-G's coarse and gate heads) when the model was built without them (they are dropped); missing
    ``num_batches_tracked`` (kept at the model's value). ``display`` maps our names to the file's for messages.
    """
    own = model.state_dict()
    heads = tuple(getattr(model, "training_only", ("edges.",)))
    has_edges = any(k.startswith(heads) for k in own)
    sd = OrderedDict((k, v) for k, v in sd.items() if has_edges or not k.startswith(heads))
    if has_edges and not any(k.startswith(heads) for k in sd):
        raise StateDictMismatch(f"{source}: the file has no edge-head entries but the model was built with edge "
                                "heads; load it with edge_heads=False (inference model)")
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    unknown = [k for k in sd if k not in own]
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing from the file: {_fmt([display(k) for k in missing])}")
        if unknown:
            parts.append(f"not in the model: {_fmt([display(k) for k in unknown])}")
        raise StateDictMismatch(f"{source}: state_dict does not match the model; " + "; ".join(parts))
    for k, v in sd.items():
        if own[k].shape != v.shape:
            hint = ""
            if k.startswith("decoder.conv4."):
                hint = f" (class count: {v.shape[0]} in the file, {own[k].shape[0]} in the model)"
            raise StateDictMismatch(f"{source}: '{display(k)}' has shape {tuple(v.shape)} in the file but "
                                    f"{tuple(own[k].shape)} in the model{hint}")
    model.load_state_dict(sd, strict=False)
