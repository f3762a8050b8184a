"""A small RNN-G run made by scripts/train.py, shared by the tests of the other scripts."""
import json
import os

import pytest
from helpers import ROOT
from helpers.scripts import run_script

from dml_csr.data.synthetic import write_dataset

CONFIG = os.path.join(ROOT, "configs", "synthetic_rnn_g.yaml")
# a narrow single-stage RNN-G at 64x64: one short epoch on a tiny synthetic set
TINY = ["data.input_size=[64, 64]", "data.batch_size=4", "model.rnn_channels=8", "model.two_stage=false",
        "train.epochs=1", "train.val_every=1", "train.log_every=1", "eval.batch_size=4"]


@pytest.fixture(scope="session")
def rnn_g_run(tmp_path_factory):
    """A one-epoch RNN-G run trained through scripts/train.py; returns (tmp folder, data root, overrides, best.pt)."""
    tmp = tmp_path_factory.mktemp("rnn_g_cli")
    root = str(tmp / "data")
    write_dataset(root, {"train": 8, "val": 4, "test": 3}, seed=2, size=(64, 64))
    sets = [f"data.root={root}", f"output_dir={tmp / 'runs'}", "name=rg", *TINY]
    r = run_script("train", "--config", CONFIG, "--no-progress", "--set", *sets)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout[r.stdout.index("{"):])
    assert summary["epochs_done"] == 1 and os.path.isfile(summary["best"])
    return tmp, root, sets, summary["best"]


@pytest.fixture(scope="session")
def demo_trained(tmp_path_factory):
    """The demo's model (configs/synthetic_dml_csr_tiny.yaml: ResNet-18 DML-CSR at 128x128) trained for 64 steps on
    faces prepared as `make demo` prepares them (256x256, the demo's face sizes): enough for labels of every class
    with trained margins, where random weights give near-constant labels. Returns (data root, best.pt)."""
    from dml_csr.config import load_config
    from dml_csr.training.trainer import train

    tmp = tmp_path_factory.mktemp("demo_trained")
    root = str(tmp / "data")
    write_dataset(root, {"train": 32, "val": 4, "test": 16}, seed=3, size=(256, 256))
    cfg = load_config(os.path.join(ROOT, "configs", "synthetic_dml_csr_tiny.yaml"), [
        f"data.root={root}", f"output_dir={tmp / 'runs'}", "name=demo", "train.epochs=16", "train.cycles=0",
        "train.warmup_epochs=0", "train.val_every=0", "train.image_log_every=0"])
    summary = train(cfg, progress=False)
    return root, summary["best"]
