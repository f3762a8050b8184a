"""Two-process DDP (gloo, CPU) matches one process with the same global batch."""
from __future__ import annotations

import os

import torch
import torch.multiprocessing as mp
from helpers.distributed import free_port, run_worker

from dml_csr.checkpoint import load_checkpoint
from dml_csr.trainer import RunPaths, train

# deterministic samples (no random crop/rotation/flip) and losses that decompose over processes: the mean CE over
# equally sized shards averages to the CE of the whole batch, which is what DDP's gradient averaging computes.
# float64: batch norm over the tiny deep feature maps of a micro model amplifies float32 rounding (different
# reduction orders) to ~1e-4 within a few steps; in float64 what remains is the semantics, which must agree.
DDP_SAFE = ("train.precision=fp64", "data.scale_range=[1.0, 1.0]", "data.rotation=0.0", "data.flip=false", "loss.lovasz=false",
            "model.edge_heads=false", "train.epochs=2", "train.iters_per_epoch=2", "train.val_every=2",
            "train.image_log_every=0", "train.dist_timeout_s=60", "model.sync_bn=true")


def _worker(rank: int, world: int, port: int, cfg) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    run_worker(lambda: train(cfg, progress=False))


def test_two_process_gloo_matches_single_process(micro_cfg):
    single = micro_cfg(*DDP_SAFE, "data.batch_size=4", "name=single")
    train(single, progress=False)
    double = micro_cfg(*DDP_SAFE, "data.batch_size=2", "name=ddp")
    mp.spawn(_worker, args=(2, free_port(), double), nprocs=2, join=True)

    a = load_checkpoint(RunPaths(single.run_dir).checkpoints()[-1])
    b = load_checkpoint(RunPaths(double.run_dir).checkpoints()[-1])
    assert a["train_state"]["step"] == b["train_state"]["step"] == 4
    worst, worst_key = 0.0, None
    for key, va in a["model"].items():
        vb = b["model"][key]
        assert va.shape == vb.shape, key
        if va.is_floating_point():
            # relative to the tensor's scale (running variances reach O(10); weights are O(0.1))
            err = (va - vb).abs().max().item() / max(1.0, va.abs().max().item())
            if err > worst:
                worst, worst_key = err, key
        else:
            assert torch.equal(va, vb), key
    assert worst < 1e-5, (worst, worst_key)
    # and training really moved the weights (the comparison is not between two untouched initialisations)
    from dml_csr.models import build_model
    torch.manual_seed(single.seed)
    fresh = build_model(single.model, 11).state_dict()
    moved = max((a["model"][k] - fresh[k]).abs().max().item() for k in fresh if fresh[k].is_floating_point())
    assert moved > 1e-3
