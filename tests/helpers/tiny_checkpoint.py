"""A tiny DML-CSR checkpoint in our schema (random weights, seeded), for the API, CLI, export and notebook tests."""
from __future__ import annotations

import os

import pytest
import torch

from dml_csr.checkpoint import make_meta, save_checkpoint
from dml_csr.config import config_to_dict, load_config
from dml_csr.models import build_model

TINY = ["model.backbone=resnet18", "model.output_stride=16", "model.context_channels=32",
        "model.decoder_channels=32", "model.edge_channels=16", "data.input_size=[64,64]", "data.workers=0",
        "eval.batch_size=2"]


def write_config(path: str, root: str, dataset: str = "synthetic") -> str:
    """A YAML config for a tiny model on the dataset at ``root``."""
    lines = ["name: tiny", f"data:\n  dataset: {dataset}\n  root: {root}\n  input_size: [64, 64]\n  workers: 0",
             "model:\n  backbone: resnet18\n  output_stride: 16\n  context_channels: 32\n  decoder_channels: 32\n"
             "  edge_channels: 16",
             "eval:\n  batch_size: 2"]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def write_tiny_checkpoint(path: str, dataset: str = "synthetic", seed: int = 0, root: str = "unused",
                          overrides: tuple = ()) -> str:
    """Save a seeded tiny DML-CSR (with edge heads, as training writes them) for ``dataset``'s classes; ``overrides``:
    more config settings (KEY=VALUE), e.g. the input convention its meta records."""
    cfg = load_config(None, [f"data.dataset={dataset}", f"data.root={root}"] + TINY + list(overrides))
    torch.manual_seed(seed)
    model = build_model(cfg.model, make_meta(cfg)["num_classes"])
    # make the untrained parsing head decisive, so labels are not a coin toss between near-equal logits
    with torch.no_grad():
        model.decoder.conv4.weight.mul_(10.0)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_checkpoint(path, model.state_dict(), make_meta(cfg), config_to_dict(cfg))
    return path


@pytest.fixture(scope="module", autouse=False)
def one_thread():
    """Run a module's tiny models on one thread: on shared CI cores, thread oversubscription makes a 64x64 forward
    pass tens of times slower than single-threaded."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def subprocess_env() -> dict:
    """Environment for CLI subprocesses: one thread each (see :func:`one_thread`)."""
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")

