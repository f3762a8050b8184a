"""Shared fixtures: a tiny synthetic dataset, a micro DML-CSR config that trains in seconds on the CPU, and the
authors' state_dict."""
from __future__ import annotations

import os

import pytest
import torch
from helpers.official_weights import official_state_dict

from dml_csr.config import load_config
from dml_csr.data.synthetic import write_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MICRO = [
    "data.dataset=synthetic", "data.input_size=[64, 64]", "data.batch_size=4", "data.workers=0",
    "model.backbone=resnet18", "model.output_stride=32", "model.context_channels=16",
    "model.decoder_channels=16", "model.edge_channels=8", "model.channel_order=BGR",
    "train.device=cpu", "train.lr=0.01", "train.log_every=1", "train.image_log_every=0", "eval.batch_size=4",
]


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory) -> str:
    """12 train / 4 val / 4 test synthetic faces at 64x64 (written once per session)."""
    root = str(tmp_path_factory.mktemp("synthetic"))
    write_dataset(root, {"train": 12, "val": 4, "test": 4}, seed=1, size=(64, 64))
    return root


@pytest.fixture
def micro_cfg(tiny_synthetic, tmp_path):
    """A factory: ``micro_cfg("train.epochs=2", ...)`` -> a validated Config writing under tmp_path."""
    def make(*overrides: str):
        return load_config(None, MICRO + [f"data.root={tiny_synthetic}", f"output_dir={tmp_path / 'runs'}",
                                          *overrides])
    return make


@pytest.fixture(scope="session")
def official_sd():
    """The authors' 11-class state_dict (edge heads included) with the golden recipe's values; built once (a few
    seconds), shared read-only: copy it before changing an entry."""
    return official_state_dict(11)


@pytest.fixture(scope="session")
def official_file(tmp_path_factory, official_sd):
    """:func:`official_sd` saved as the authors save it: a raw state_dict, no wrapper."""
    path = tmp_path_factory.mktemp("official") / "helen_official.pth"
    torch.save(official_sd, path)
    return path
