"""Deterministic weights laid out like the authors' DML-CSR state_dict (our re-implementation of the golden recipe).

``official_state_dict(num_classes)`` follows the recipe the golden outputs were made with: entry ``i`` of the JSON
listing (tests/fixtures/official_dml_csr_state_dict.json) draws from ``torch.Generator().manual_seed(1000 + i)``:
running means N(0,1)*0.1, running vars U(0,1)+0.5, graph residual scales 0.7, norm scales +-U(0.5,1) with a third
negative (damped x0.2 in bn3/downsample norms), biases N(0,1)*0.1, conv weights N(0, 2/fan_in). Class-dependent
shapes follow ``num_classes``.
"""
from __future__ import annotations

import json
import math
from collections import OrderedDict
from pathlib import Path

import torch

from dml_csr.models.official import official_to_ours

JSON_PATH = Path(__file__).resolve().parents[1] / "fixtures" / "official_dml_csr_state_dict.json"


def official_entries() -> list[dict]:
    """The listing: [{"name", "shape", "dtype"}, ...] for 11 classes with edge heads."""
    return json.loads(JSON_PATH.read_text())["entries"]


def _class_shape(name: str, shape: list[int], num_classes: int) -> list[int]:
    shape = list(shape)
    if name.startswith(("layer6.conv4.", "edge_layer.conv4.")) or (
            name.startswith("edge_layer.conv5.")):
        shape[0] = num_classes
    if name.startswith(("edge_layer.conv5.", "edge_layer.conv5_b.")) and name.endswith("weight"):
        shape[1] = 3 * num_classes
    return shape


def _value(name: str, shape: list[int], g: torch.Generator) -> torch.Tensor:
    if name.endswith("num_batches_tracked"):
        return torch.tensor(0, dtype=torch.long)
    if name.endswith("running_mean"):
        return torch.randn(shape, generator=g) * 0.1
    if name.endswith("running_var"):
        return torch.rand(shape, generator=g) + 0.5
    if name.endswith((".gamma", ".gamma1")):
        return torch.full(shape, 0.7)
    if len(shape) == 1 and name.endswith("weight"):
        negative = torch.rand(shape, generator=g) < 0.33
        sign = torch.where(negative, -1.0, 1.0)
        damp = 0.2 if (".bn3." in name or ".downsample.1." in name) else 1.0
        return sign * (0.5 + 0.5 * torch.rand(shape, generator=g)) * damp
    if len(shape) == 1:
        return torch.randn(shape, generator=g) * 0.1
    return torch.randn(shape, generator=g) * math.sqrt(2.0 / math.prod(shape[1:]))


def official_state_dict(num_classes: int = 11) -> "OrderedDict[str, torch.Tensor]":
    """Every entry of the authors' model (edge heads included) under their names, deterministic values."""
    sd = OrderedDict()
    for i, e in enumerate(official_entries()):
        shape = _class_shape(e["name"], e["shape"], num_classes)
        sd[e["name"]] = _value(e["name"], shape, torch.Generator().manual_seed(1000 + i))
    return sd


def check_same_tensors(model, sd, edges):
    """Every entry of the authors' ``sd`` equals the model's tensor under our name (edge entries only with edges)."""
    own = model.state_dict()
    for k, v in sd.items():
        if k.startswith("edge_layer.") and not edges:
            assert not any(n.startswith("edges.") for n in own)
            continue
        assert torch.equal(own[official_to_ours(k)], v), k
