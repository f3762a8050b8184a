"""train.init_from: a run that starts from another run's weights (fine-tuning after a pretraining), and the one-line
errors of a checkpoint that cannot start it."""
import pytest
import torch

from dml_csr.checkpoint import CheckpointError, RunPaths, load_checkpoint
from dml_csr.models import build_model
from dml_csr.training.trainer import train
from dml_csr.training.warm_start import load_initial_weights


def test_a_run_starts_from_the_weights_of_another(micro_cfg):
    first = micro_cfg("train.epochs=1", "train.iters_per_epoch=2", "name=pretrain")
    best = train(first, progress=False)["best"]
    # with a learning rate of 0 the fine-tuning run's weights stay where they started: the other run's
    tuned = micro_cfg("train.epochs=1", "train.iters_per_epoch=1", "train.lr=0", f"train.init_from={best}",
                      "name=finetune")
    train(tuned, progress=False)
    start, end = load_checkpoint(best)["model"], load_checkpoint(RunPaths(tuned.run_dir).checkpoints()[-1])["model"]
    params = dict(build_model(tuned.model, 11).named_parameters())
    assert all(torch.equal(start[k], end[k]) for k in params)
    fresh = micro_cfg("train.epochs=1", "train.iters_per_epoch=1", "train.lr=0", "name=fresh")
    train(fresh, progress=False)
    other = load_checkpoint(RunPaths(fresh.run_dir).checkpoints()[-1])["model"]
    assert not all(torch.equal(start[k], other[k]) for k in params)  # without it: the seed's initialisation


def test_a_checkpoint_that_cannot_start_the_run_is_named(micro_cfg, tmp_path):
    cfg = micro_cfg()
    model = build_model(cfg.model, 11)
    path = tmp_path / "other.pt"
    torch.save({"format": "dml_csr/1", "model": model.state_dict(), "meta": {"classes": ["a", "b"]}}, path)
    with pytest.raises(CheckpointError, match=rf"train.init_from: '{path}' predicts the classes \['a', 'b'\]"):
        load_initial_weights(model, str(path), [f"c{i}" for i in range(11)])
    classes = [f"c{i}" for i in range(11)]
    torch.save({"format": "dml_csr/1", "model": {"x": torch.zeros(1)}, "meta": {"classes": classes}}, path)
    with pytest.raises(CheckpointError, match=r"holds another model \(") as e:
        load_initial_weights(model, str(path), classes)
    assert "\n" not in str(e.value)
