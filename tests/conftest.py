"""Shared fixtures: a tiny synthetic dataset, a micro DML-CSR config that trains in seconds on the CPU, and the
authors' state_dict."""
from __future__ import annotations

import os
import shutil
import tempfile

import pytest
import torch
from helpers.micro import MICRO
from helpers.official_weights import official_state_dict

from dml_csr.config import load_config
from dml_csr.data.synthetic import write_dataset

# The suite writes about 14 GB of checkpoints; on a VM disk that is a minute or more of waiting for writeback. Its
# temporary folders go to RAM (/dev/shm) when that has room, unless TMPDIR or --basetemp says where they go.
SHM, SHM_NEEDS = "/dev/shm", 8 << 30


def pytest_configure(config):
    if config.option.basetemp or os.environ.get("TMPDIR") or not os.access(SHM, os.W_OK):
        return
    if shutil.disk_usage(SHM).free >= SHM_NEEDS:
        tempfile.tempdir = SHM  # pytest's basetemp (pytest-of-USER/pytest-N) follows tempfile.gettempdir()


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


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A tiny DML-CSR checkpoint per test module (seeded random weights; see helpers.tiny_checkpoint)."""
    from helpers.tiny_checkpoint import write_tiny_checkpoint

    return write_tiny_checkpoint(str(tmp_path_factory.mktemp("ckpt") / "tiny.pt"))


@pytest.fixture(scope="module")
def parser(ckpt):
    """A FaceParser of ``ckpt`` on the CPU."""
    from dml_csr import FaceParser

    return FaceParser.from_checkpoint(ckpt, device="cpu")

