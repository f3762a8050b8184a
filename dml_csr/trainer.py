"""The training run: first phase, then cyclical self-regulation (CSR), with checkpoints that resume exactly.

Schedule (epochs are 0-based): epochs ``[0, E)`` are the first phase (poly learning rate over its iterations);
then ``K = train.cycles`` cycles of ``N = train.cycle_epochs`` epochs each (cosine learning rate per epoch, restarting
at ``train.lr``). During cycle ``k`` (1-based) the student distils from the teacher ``T_{k-1}``; at its end the
self-ensemble of the paper's eq. 6 is formed::

    M_k = k/(k+1) * M_best + 1/((k+1) N) * sum of the cycle's N epoch-end student weights

where ``M_best`` is the best-on-val model of the first phase for ``k = 1`` and the previous aggregate ``M_{k-1}``
afterwards (so ``M_k`` is a cumulative average, as in SCHP). Its norm statistics are then re-estimated over the whole
training set, and it becomes the next teacher. The student itself keeps training from its own weights. The teacher
of cycle 1 is ``M_best``. The checkpoint chosen for evaluation is the best on the *validation* split.
"""
from __future__ import annotations

import copy
import glob
import json
import logging
import os
import random
import re
import signal
import time
from typing import Optional

import numpy as np
import torch

from . import distributed as du
from .checkpoint import CheckpointError, atomic_torch_save, load_checkpoint, make_meta
from .config import Config, config_to_dict, save_config
from .data.dataset import FaceParsingDataset, SkipCountingLoader, build_dataset, collate_samples, seed_worker
from .data.labels import flip_permutation, get_spec
from .data.transforms import batch_input
from .engine import evaluate, train_one_epoch
from .losses import build_criterion
from .models import build_model, convert_sync_abn
from .self_correction import RunningSum, cosine_lr, poly_lr, reestimate_bn, self_ensemble

log = logging.getLogger(__name__)

__all__ = ["train", "resolve_device", "RunPaths", "find_resume_checkpoint"]


class RunPaths:
    """``runs/<name>/``: config.yaml, metrics.jsonl, tb/, checkpoints/epoch_NNNN.pt, best.pt."""

    def __init__(self, run_dir: str):
        self.root = run_dir
        self.config = os.path.join(run_dir, "config.yaml")
        self.metrics = os.path.join(run_dir, "metrics.jsonl")
        self.tb = os.path.join(run_dir, "tb")
        self.ckpt_dir = os.path.join(run_dir, "checkpoints")
        self.best = os.path.join(run_dir, "best.pt")

    def epoch_ckpt(self, epoch: int) -> str:
        return os.path.join(self.ckpt_dir, f"epoch_{epoch:04d}.pt")

    def checkpoints(self) -> list[str]:
        files = glob.glob(os.path.join(self.ckpt_dir, "epoch_*.pt"))
        return sorted(files, key=lambda p: int(re.findall(r"epoch_(\d+)", p)[-1]))


def find_resume_checkpoint(target: str) -> str:
    """A checkpoint file, or the newest epoch checkpoint of a run directory."""
    if os.path.isfile(target):
        return target
    if os.path.isdir(target):
        ckpts = RunPaths(target).checkpoints()
        if ckpts:
            return ckpts[-1]
        raise CheckpointError(f"run directory '{target}' has no checkpoints/epoch_*.pt to resume from")
    raise CheckpointError(f"--resume '{target}' is neither a checkpoint file nor a run directory")


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{local_rank}"
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"train.device = '{name}' but CUDA is not available on this machine; use cpu or auto")
    return dev


class _Sampler(torch.utils.data.Sampler):
    """Shuffled indices that depend only on (seed, epoch); split across ranks; can start part-way (resume)."""

    def __init__(self, n: int, batch_size: int, seed: int, epoch: int, rank: int, world: int, skip_batches: int = 0,
                 limit_batches: int = 0):
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        perm = torch.randperm(n, generator=g).tolist()
        per_rank = n // world
        # interleaved equal shares: global batch i of W processes is exactly batch i of one process with W times the
        # batch size (what DDP equivalence needs); the remainder is dropped
        mine = perm[rank:per_rank * world:world]
        usable = (len(mine) // batch_size) * batch_size
        if limit_batches > 0:
            usable = min(usable, limit_batches * batch_size)
        self.indices = mine[skip_batches * batch_size:usable]

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class _Shard(torch.utils.data.Sampler):
    """Every ``world``-th index from ``rank``: disjoint, covering evaluation shards (no padding duplicates)."""

    def __init__(self, n: int, rank: int, world: int):
        self.indices = list(range(rank, n, world))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _loader(ds, sampler, batch_size: int, workers: int, seed: int, drop_last: bool):
    g = torch.Generator().manual_seed(seed)
    # SkipCountingLoader: with data.skip_bad, names skipped in worker processes come back and a summary is logged
    return SkipCountingLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=workers,
                                       collate_fn=collate_samples, drop_last=drop_last, generator=g,
                                       pin_memory=torch.cuda.is_available(),
                                       worker_init_fn=seed_worker)


def _seed_epoch(seed: int, epoch: int, rank: int) -> None:
    """Every random draw of an epoch follows from (seed, epoch, rank): resuming at an epoch boundary is exact."""
    s = (seed * 1_000_003 + epoch * 7919 + rank) % 2 ** 31
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


def _rng_state() -> dict:
    # informational (every epoch reseeds from (seed, epoch, rank)); tensors only, so weights_only loads work
    state = {"torch": torch.get_rng_state(), "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64))}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _inputs_to_double(module: torch.nn.Module, args: tuple) -> tuple:
    return tuple(a.double() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    model = getattr(model, "module", model)  # DDP
    return getattr(model, "_orig_mod", model)  # torch.compile


def _state(model: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in _unwrap(model).state_dict().items()}


class _Stop:
    """SIGINT/SIGTERM set a flag; the loop checkpoints after the current step and exits."""

    def __init__(self):
        self.signal: Optional[int] = None
        self._old = {}

    def __enter__(self):
        for s in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[s] = signal.signal(s, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        if self.signal is not None:  # a second signal: give up at once
            raise KeyboardInterrupt
        self.signal = signum
        log.warning("signal %d received: checkpointing after the current step", signum)

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)

    def __call__(self) -> bool:
        return self.signal is not None


def train(cfg: Config, *, resume: Optional[str] = None, max_epochs: Optional[int] = None,
          progress: bool = True) -> dict:
    """Run (or continue) the training that ``cfg`` describes; returns a summary dict.

    Args:
        resume: a checkpoint file or run directory to continue from. Without it the run directory must not hold
            checkpoints yet (nothing is overwritten by accident).
        max_epochs: stop (with a checkpoint) after this many epochs of *this* call -- for tests and time slices.
    """
    dist = du.init_distributed("cuda" if cfg.train.device.startswith("cuda") or
                               (cfg.train.device == "auto" and torch.cuda.is_available()) else "cpu",
                               timeout_s=cfg.train.dist_timeout_s)
    device = resolve_device(cfg.train.device, dist.local_rank)
    paths = RunPaths(cfg.run_dir)
    spec = get_spec(cfg.data.dataset)
    t, C = cfg.train, spec.num_classes

    if resume is None and paths.checkpoints():
        raise CheckpointError(f"run directory '{paths.root}' already holds checkpoints; pass --resume to continue it "
                              f"or choose another name (--set name=...)")
    ckpt = load_checkpoint(find_resume_checkpoint(resume), map_location="cpu") if resume else None
    if ckpt is not None and "train_state" not in ckpt:
        raise CheckpointError(f"'{resume}' holds no training state (an inference checkpoint?); resume needs one of "
                              f"{paths.ckpt_dir}/epoch_*.pt")

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, C)
    if t.precision == "fp64":  # numerical checks: float64 weights (before a resume loads float64 values into them)
        model.double()
        model.register_forward_pre_hook(_inputs_to_double)  # inputs cast on the way in
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
    model.to(device)
    if dist.enabled and cfg.model.sync_bn:
        model = convert_sync_abn(model)
    if t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=t.precision == "fp16")

    train_ds = build_dataset(cfg, cfg.data.train_split, train=True)
    val_ds = build_dataset(cfg, cfg.data.val_split, train=False)
    bs = cfg.data.batch_size
    per_epoch = len(train_ds) // dist.world_size // bs
    if t.iters_per_epoch > 0:
        per_epoch = min(per_epoch, t.iters_per_epoch)
    if per_epoch == 0:
        raise ValueError(f"train split of '{cfg.data.root}' has {len(train_ds)} samples: fewer than one batch of "
                         f"data.batch_size={bs} per process ({dist.world_size} processes)")
    steps_per_epoch = per_epoch // t.grad_accum
    phase1_steps = t.epochs * steps_per_epoch
    total_epochs = t.epochs + t.cycles * t.cycle_epochs

    st = {"epoch": 0, "step": 0, "batches_done": 0, "best_score": -1.0, "best_epoch": -1, "history": []}
    csr = {"best_state": None, "running_sum": None, "teacher_state": None, "phase1_best": None}
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        st.update(ckpt["train_state"])
        csr.update({k: ckpt["csr"].get(k) for k in csr})
    running = RunningSum(device="cpu")
    if csr["running_sum"] is not None:
        running.load_state_dict(csr["running_sum"])

    ddp_model = model
    if dist.enabled:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if t.compile:
        ddp_model = torch.compile(ddp_model)
    teacher = None

    def make_teacher(state: dict) -> torch.nn.Module:
        m = copy.deepcopy(_unwrap(model))
        m.load_state_dict(state)
        m.eval().requires_grad_(False)
        return m

    if csr["teacher_state"] is not None:
        teacher = make_teacher(csr["teacher_state"])

    writer = None
    if dist.is_main:
        os.makedirs(paths.ckpt_dir, exist_ok=True)
        save_config(cfg, paths.config)
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(paths.tb)
    meta = make_meta(cfg)
    val_loader = _loader(val_ds, _Shard(len(val_ds), dist.rank, dist.world_size), cfg.eval.batch_size,
                         cfg.data.workers, cfg.seed, drop_last=False)

    def log_metrics(record: dict) -> None:
        if not dist.is_main:
            return
        record = {"time": time.time(), **record}
        with open(paths.metrics, "a") as f:
            f.write(json.dumps(record) + "\n")

    def validate(m: torch.nn.Module, tag: str, epoch: int) -> float:
        cm = evaluate(_unwrap(m), val_loader, val_ds, C, device=device, precision=cfg.eval.precision,
                      channels_last=cfg.eval.channels_last)
        scores = cm.compute(spec.classes, spec.groups)
        log_metrics({"type": "val", "tag": tag, "epoch": epoch + 1, **{k: scores[k] for k in
                     ("mean_f1", "miou", "miou_fg", "pixel_accuracy", "groups", "per_class")}})
        if writer is not None:
            for k in ("mean_f1", "miou", "pixel_accuracy"):
                writer.add_scalar(f"val_{tag}/{k}", scores[k], epoch + 1)
            for c, v in scores["per_class"].items():
                writer.add_scalar(f"val_{tag}_f1/{c}", v["f1"], epoch + 1)
                writer.add_scalar(f"val_{tag}_iou/{c}", v["iou"], epoch + 1)
        log.info("epoch %d %s: val mean F1 %.4f, mIoU %.4f", epoch + 1, tag, scores["mean_f1"], scores["miou"])
        return scores["mean_f1"]

    def consider_best(score: float, state: dict, epoch: int, tag: str) -> None:
        if score > st["best_score"]:
            st["best_score"], st["best_epoch"] = float(score), epoch + 1
            if dist.is_main:
                atomic_torch_save({"format": "dml_csr/1", "model": state, "meta": meta,
                                   "config": config_to_dict(cfg), "epoch": epoch + 1, "tag": tag,
                                   "val_mean_f1": float(score)}, paths.best)

    def save(epoch_done: int, batches_done: int) -> None:
        st["epoch"], st["batches_done"] = epoch_done, batches_done
        csr["running_sum"] = running.state_dict()
        if dist.is_main:
            atomic_torch_save({"format": "dml_csr/1", "model": _state(model), "meta": meta,
                               "config": config_to_dict(cfg), "optimizer": optimizer.state_dict(),
                               "scaler": scaler.state_dict(), "train_state": dict(st), "csr": dict(csr),
                               "rng": _rng_state()}, paths.epoch_ckpt(epoch_done))
            for old in paths.checkpoints()[:-max(t.keep_last, 1)]:
                os.remove(old)
        du.barrier()

    criterion_cycle = {"k": 0}
    base_criterion = _build_criterion(cfg, C)

    def criterion(outputs, batch, teacher_out):
        return base_criterion(outputs, batch, teacher_out, criterion_cycle["k"])

    start_epoch = st["epoch"]
    end_epoch = total_epochs if max_epochs is None else min(total_epochs, start_epoch + max_epochs)
    summary = {"run_dir": paths.root, "stopped": False}
    with _Stop() as stop:
        for epoch in range(start_epoch, end_epoch):
            cycle = 0 if epoch < t.epochs else (epoch - t.epochs) // t.cycle_epochs + 1
            in_cycle = epoch - t.epochs - (cycle - 1) * t.cycle_epochs if cycle else -1
            criterion_cycle["k"] = cycle
            if cycle and in_cycle == 0 and teacher is None:
                # first epoch of CSR: the best first-phase model teaches cycle 1
                csr["phase1_best"] = st["best_score"]
                csr["teacher_state"] = csr["best_state"] if csr["best_state"] is not None else _state(model)
                teacher = make_teacher(csr["teacher_state"])
            if cycle:
                lr_max = t.cycle_lr or t.lr
                lr_epoch = cosine_lr(in_cycle, t.cycle_epochs, lr_max, lr_max * t.cycle_lr_min)

                def lr_at(step, _lr=lr_epoch):
                    return _lr
            else:
                def lr_at(step):
                    return poly_lr(step, phase1_steps, t.lr, t.poly_power, int(t.warmup_epochs * steps_per_epoch))
            skip = st["batches_done"] if epoch == start_epoch else 0
            _seed_epoch(cfg.seed, epoch, dist.rank)
            sampler = _Sampler(len(train_ds), bs, cfg.seed, epoch, dist.rank, dist.world_size, skip, per_epoch)
            loader = _loader(train_ds, sampler, bs, cfg.data.workers, cfg.seed * 7919 + epoch, drop_last=True)
            bar = None
            if progress and dist.is_main:
                from tqdm import tqdm
                phase = f"cycle {cycle}/{t.cycles}" if cycle else "phase 1"
                bar = tqdm(total=per_epoch // t.grad_accum, initial=skip // t.grad_accum,
                           desc=f"epoch {epoch + 1}/{total_epochs} ({phase})", unit="it", dynamic_ncols=True)

            def on_step(step, terms, _epoch=epoch):
                if writer is not None and step % max(t.log_every, 1) == 0:
                    for k, v in terms.items():
                        writer.add_scalar(f"loss/{k}", v, step)
                    writer.add_scalar("lr", optimizer.param_groups[0]["lr"], step)

            res = train_one_epoch(ddp_model, loader, criterion, optimizer, device=device, lr_at=lr_at,
                                  start_step=st["step"], precision=t.precision,
                                  scaler=scaler if t.precision == "fp16" else None, channels_last=t.channels_last,
                                  grad_accum=t.grad_accum, teacher=teacher, on_step=on_step,
                                  should_stop=lambda: du.any_rank(stop()),
                                  skip_batches=skip, progress=bar)
            if bar is not None:
                bar.close()
            st["step"] = res["step"]
            if res["stopped"]:
                save(epoch, res["batches"])
                summary.update(stopped=True, signal=stop.signal, epoch=epoch + 1)
                log.warning("stopped by signal %s at epoch %d, batch %d; resume with --resume %s",
                            stop.signal, epoch + 1, res["batches"], paths.root)
                break
            log_metrics({"type": "train", "epoch": epoch + 1, "cycle": cycle, "step": st["step"],
                         "lr": optimizer.param_groups[0]["lr"], "loss": res["loss"], "seconds": res["seconds"]})
            if cycle:
                running.add(_unwrap(model).state_dict())
            last_of_phase = epoch == t.epochs - 1
            last_of_cycle = cycle and in_cycle == t.cycle_epochs - 1
            if (epoch + 1) % max(t.val_every, 1) == 0 or last_of_phase or last_of_cycle or epoch == total_epochs - 1:
                score = validate(model, "student", epoch)
                if cycle == 0 and score > st["best_score"]:
                    csr["best_state"] = _state(model)
                consider_best(score, _state(model), epoch, "student")
                if writer is not None and t.image_log_every and (epoch + 1) % t.image_log_every == 0:
                    _log_images(writer, _unwrap(model), val_ds, spec, device, epoch + 1)
            if last_of_cycle:
                base = csr["best_state"] if cycle == 1 else csr["teacher_state"]
                if base is None:
                    base = _state(model)
                aggregate = self_ensemble(base, running, None, cycle)
                teacher = make_teacher(aggregate)
                bn_loader = _loader(train_ds, _Sampler(len(train_ds), bs, cfg.seed, -1 - cycle, dist.rank,
                                                       dist.world_size), bs, cfg.data.workers, cfg.seed, True)
                reestimate_bn(teacher, bn_loader, device=device)
                teacher.eval().requires_grad_(False)
                csr["teacher_state"] = _state(teacher)
                running.reset()
                score = validate(teacher, f"ensemble_{cycle}", epoch)
                consider_best(score, csr["teacher_state"], epoch, f"ensemble_{cycle}")
            save(epoch + 1, 0)
            if writer is not None:
                writer.flush()
            if epoch + 1 < end_epoch and du.any_rank(stop()):
                # a signal during validation, the self-ensemble or the checkpoint: this epoch's checkpoint is the stop
                summary.update(stopped=True, signal=stop.signal, epoch=epoch + 1)
                log.warning("stopped by signal %s after epoch %d; resume with --resume %s", stop.signal, epoch + 1,
                            paths.root)
                break
    if writer is not None:
        writer.close()
    summary.update(best_val_mean_f1=st["best_score"], best_epoch=st["best_epoch"], best=paths.best,
                   phase1_best=csr["phase1_best"], epochs_done=st["epoch"])
    return summary


def _build_criterion(cfg: Config, num_classes: int):
    """``criterion(outputs, batch, teacher_outputs, cycle) -> {"total": ..., term: ...}`` for the model in ``cfg``."""
    if cfg.model.name == "rnn_g":
        from .losses.rnn_g import rnn_g_loss

        return lambda outputs, batch, teacher_outputs=None, cycle=0: rnn_g_loss(outputs, batch)
    return build_criterion(cfg.loss, num_classes)


def _log_images(writer, model, val_ds: FaceParsingDataset, spec, device, epoch: int, n: int = 4) -> None:
    """TensorBoard grid, one row per sample: input, ground truth, prediction, binary edge, category edge.

    Only the class maps named here are drawn (``parsing``, and DML-CSR's ``edge`` / ``semantic_edge`` when the model
    returns them); other outputs, such as RNN-G's one-channel boundary gate, are left out."""
    from torchvision.utils import make_grid

    batch = collate_samples([val_ds[i] for i in range(min(n, len(val_ds)))])
    model.eval()
    with torch.no_grad():
        out = model(batch_input(batch, device))
    size = batch["image"].shape[-2:]
    up = {k: torch.nn.functional.interpolate(v.float(), size=size, mode="bilinear", align_corners=True).cpu()
          for k, v in out.items() if k in ("parsing", "edge", "semantic_edge") and isinstance(v, torch.Tensor)
          and v.dim() == 4 and v.shape[1] >= 2}
    pal = torch.from_numpy(spec.palette).float() / 255
    tiles = []
    for j in range(batch["image"].shape[0]):
        img = batch["image"][j].flip(0).float() / 255  # the loader's uint8 BGR crop, shown in RGB
        gt = batch["label"][j].long()  # uint8 indices would be read as a mask
        gt[gt == 255] = 0
        tiles += [img, pal[gt].permute(2, 0, 1), pal[up["parsing"][j].argmax(0)].permute(2, 0, 1)]
        for key in ("edge", "semantic_edge"):
            if key in up:
                e = up[key][j].softmax(0)
                tiles.append((1 - e[0]).expand(3, -1, -1) if key == "edge" else pal[e.argmax(0)].permute(2, 0, 1))
    cols = len(tiles) // batch["image"].shape[0]
    writer.add_image("val/input_gt_pred_edges", make_grid(tiles, nrow=cols, padding=2), epoch)
