"""Several processes: two-process DDP (gloo, CPU) matches one process with the same global batch; scripts/train.py
under torchrun stops every rank at the same step on a signal, with a checkpoint that resumes to the straight run's
weights, and a rank that fails ends the job promptly, leaving the last epoch's checkpoint to resume from; the helpers
that place a process (its device, the wrappers around its model, deciding together)."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.multiprocessing as mp
from helpers.distributed import free_port, run_worker
from helpers.tiny_checkpoint import subprocess_env

from dml_csr import distributed as du
from dml_csr.checkpoint import RunPaths, load_checkpoint
from dml_csr.config import save_config
from dml_csr.training.trainer import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

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


# torchrun: as DDP_SAFE, 4 steps an epoch, in float32: these runs are compared with runs of the same two processes,
# whose arithmetic is the same (float64 is for the comparison of one process with two, above)
DDP = ("train.precision=fp32", "data.scale_range=[1.0, 1.0]", "data.rotation=0.0", "data.flip=false",
       "loss.lovasz=false", "model.edge_heads=false", "train.iters_per_epoch=4", "train.val_every=100",
       "train.image_log_every=0", "train.dist_timeout_s=60", "data.batch_size=1", "train.keep_last=100")
# imported by every Python process that has it on its path: makes rank 1 fail as its second epoch starts
FAIL_RANK1 = '''
import os
if os.environ.get("RANK") == "1" and os.environ.get("DML_CSR_TEST_FAIL"):
    import dml_csr.training.trainer as t
    _orig, _calls = t.train_one_epoch, []
    def _failing(*args, **kwargs):
        _calls.append(1)
        if len(_calls) == 2:
            import time
            raise RuntimeError(f"injected failure on rank 1 at {time.time():.3f}")
        return _orig(*args, **kwargs)
    t.train_one_epoch = _failing
'''


_RUNNING: list = []


def _torchrun(cfg_path, *extra, env=None):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), os.path.join(ROOT, "scripts", "train.py"), "--config", str(cfg_path),
           "--no-progress", *extra]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                         env=env or subprocess_env())
    _RUNNING.append(p)
    return p


@pytest.fixture(autouse=True)
def _no_leftover_jobs():
    """A failed assertion must not leave a torchrun job (and its workers, in sessions of their own) running."""
    yield
    while _RUNNING:
        p = _RUNNING.pop()
        if p.poll() is None:
            p.terminate()  # torchrun stops its workers on SIGTERM
            try:
                p.wait(45)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _config(micro_cfg, tmp_path, name, *overrides):
    path = tmp_path / f"{name}.yaml"
    cfg = micro_cfg(*DDP, f"name={name}", *overrides)
    save_config(cfg, str(path))
    return path, cfg.run_dir


def _wait_for(proc, cond, what, limit=240.0):
    t0 = time.time()
    while not cond():
        assert proc.poll() is None, f"exited ({proc.returncode}) before {what}:\n{proc.stdout.read()}"
        assert time.time() - t0 < limit, f"no {what} after {limit} s"
        time.sleep(0.1)


def test_sigterm_stops_all_ranks_together_and_resume_matches_the_straight_run(micro_cfg, tmp_path):
    straight_cfg, straight_dir = _config(micro_cfg, tmp_path, "straight", "train.epochs=6")
    p = _torchrun(straight_cfg)
    out, _ = p.communicate(timeout=300)
    assert p.returncode == 0, out

    # a loader worker per rank: torchrun passes the SIGTERM on to each rank's whole process group
    cfg, run_dir = _config(micro_cfg, tmp_path, "stopped", "train.epochs=6", "data.workers=1")
    p = _torchrun(cfg)
    _wait_for(p, lambda: RunPaths(run_dir).checkpoints(), "the first checkpoint")
    p.send_signal(signal.SIGTERM)  # torchrun passes it on to both workers, which see it at different steps
    out, _ = p.communicate(timeout=120)
    assert p.returncode != 0 and "resume with --resume" in out, out
    last = load_checkpoint(RunPaths(run_dir).checkpoints()[-1])
    assert last["train_state"]["epoch"] < 6, "stopped too late to test"

    p = _torchrun(cfg, "--resume")
    out, _ = p.communicate(timeout=300)
    assert p.returncode == 0, out
    a = load_checkpoint(RunPaths(straight_dir).checkpoints()[-1])
    b = load_checkpoint(RunPaths(run_dir).checkpoints()[-1])
    assert a["train_state"]["step"] == b["train_state"]["step"] == 24
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


def test_a_failing_rank_ends_the_job_and_the_last_epoch_resumes(micro_cfg, tmp_path):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(FAIL_RANK1)
    env = subprocess_env()
    env.update(DML_CSR_TEST_FAIL="1", PYTHONPATH=os.pathsep.join([str(hook), ROOT, env.get("PYTHONPATH", "")]))
    cfg, run_dir = _config(micro_cfg, tmp_path, "failing", "train.epochs=2", "train.dist_timeout_s=300")
    p = _torchrun(cfg, env=env)
    out, _ = p.communicate(timeout=600)
    ended = time.time()
    assert p.returncode != 0 and "injected failure on rank 1" in out, out
    failed_at = float(re.search(r"injected failure on rank 1 at ([0-9.]+)", out).group(1))
    # the job ended soon after the failure, not after train.dist_timeout_s (300 s) of rank 0 waiting for rank 1
    assert ended - failed_at < 60, (ended - failed_at, out)
    ckpts = RunPaths(run_dir).checkpoints()
    assert [load_checkpoint(c)["train_state"]["epoch"] for c in ckpts] == [1], out  # epoch 1 only, intact

    p = _torchrun(cfg, "--resume")  # the cause is gone: the run finishes from there
    out, _ = p.communicate(timeout=300)
    assert p.returncode == 0, out
    assert load_checkpoint(RunPaths(run_dir).checkpoints()[-1])["train_state"]["step"] == 8


# ---------------------------------------------------------------------------------------------------------- helpers
def test_resolve_device_and_unwrap_model():
    assert du.resolve_device("cpu") == torch.device("cpu")
    assert du.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device 'cuda:1' asked for, but CUDA is not available"):
            du.resolve_device("cuda", local_rank=1)
    with pytest.raises(ValueError, match="device 'tpu'; expected auto, cpu, mps, cuda or cuda:N"):
        du.resolve_device("tpu")
    if torch.cuda.is_available():  # one index past the last GPU
        with pytest.raises(ValueError, match=f"this machine has {torch.cuda.device_count()} CUDA device"):
            du.resolve_device(f"cuda:{torch.cuda.device_count()}")
    if not torch.backends.mps.is_available():
        with pytest.raises(ValueError, match="device 'mps' asked for, but MPS is not available"):
            du.resolve_device("mps")
    net = torch.nn.Linear(2, 2)
    wrapped = torch.nn.Module()
    wrapped.module = net  # as DistributedDataParallel holds it
    assert du.unwrap_model(net) is net and du.unwrap_model(wrapped) is net
    assert du.unwrap_model(torch.compile(wrapped)) is net and du.unwrap_model(torch.compile(net)) is net


def test_one_process_needs_no_group():
    info = du.init_distributed("cpu")
    assert info.world_size == 1 and not info.enabled and info.is_main
    assert du.any_rank(True) and not du.any_rank(False)
    du.barrier()
    du.cleanup()  # nothing to leave


@pytest.mark.parametrize("env,expected", [
    ({"WORLD_SIZE": "2"}, "RANK is not set but WORLD_SIZE=2 is; launch with torchrun (it sets RANK, LOCAL_RANK and "
                          "WORLD_SIZE) or unset WORLD_SIZE"),
    ({"WORLD_SIZE": "2", "RANK": "one"}, "environment variable RANK='one'; expected a whole number >= 0"),
    ({"WORLD_SIZE": "-3"}, "environment variable WORLD_SIZE='-3'; expected a whole number >= 0"),
    ({"WORLD_SIZE": "2", "RANK": "2"}, "RANK=2 with WORLD_SIZE=2; expected a rank below the world size"),
])
def test_a_process_group_environment_that_is_incomplete_is_one_line(monkeypatch, env, expected):
    """WORLD_SIZE=2 without RANK was a bare KeyError."""
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError) as e:
        du.init_distributed()
    assert str(e.value) == expected
