"""The training run: first phase, then cyclical self-regulation (CSR), with checkpoints that resume exactly.

Schedule (epochs are 0-based): epochs ``[0, E)`` are the first phase; then ``K = train.cycles`` cycles of
``N = train.cycle_epochs`` epochs each. During cycle ``k`` (1-based) the student distils from the teacher
``T_{k-1}``; at its end the self-ensemble of the paper's eq. 6 is formed::

    M_k = k/(k+1) * M_best + 1/((k+1) N) * sum of the cycle's N epoch-end student weights

where ``M_best`` is the best-on-val model of the first phase for ``k = 1`` and the previous aggregate ``M_{k-1}``
afterwards (a cumulative average, as in SCHP; ``train.self_ensemble: moving_average``: the authors' running average,
:mod:`~dml_csr.training.self_correction`). Its norm statistics are re-estimated over the training set, and it becomes
the next teacher; the student keeps its own weights. The teacher of cycle 1 is ``M_best``. best.pt: best on *val*.

:func:`train` is the recipe, one named step a line. The parts live in their own modules: the schedule's epochs
(:func:`dml_csr.training.schedule.epoch_position`), the learning rate of every step (:mod:`dml_csr.training.lr`), the
self-regulation state (:mod:`dml_csr.training.self_correction`), the loaders (:mod:`dml_csr.data.loader`), the metrics
log (:mod:`dml_csr.training.run_log`), the checkpoint format and the run directory (:mod:`dml_csr.checkpoint`), one
epoch of steps (:mod:`dml_csr.training.engine`: a :class:`StepContext` built once, an :class:`EpochPlan` an epoch) and
the evaluation pass (:mod:`dml_csr.evaluation.protocol`).
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import os
from typing import Any, Optional

import torch
from torch import nn

from .. import distributed as du
from ..checkpoint import RunPaths, make_meta, save_checkpoint
from ..config import Config, ModelConfig, config_to_dict, save_config
from .schedule import epoch_position, total_epochs
from ..data.dataset import FaceParsingDataset, build_dataset, inverse_frequency_weights
from ..data.face_template import training_crop
from ..data.class_map import label_spec
from ..data.labels import LabelSpec
from ..data.loader import build_loader, build_norm_loader
from ..data.mixture import build_training_set, training_histogram
from ..evaluation.metrics import selection_score
from ..evaluation.protocol import evaluate
from ..hub import HubError, resolve
from ..losses import build_criterion
from ..models import build_model, convert_sync_abn
from ..progress import progress
from .engine import EpochPlan, StepContext, grad_scaler, train_one_epoch
from .faults import StopSignal, check_weights
from .lr import learning_rate
from .run_guard import record_changes, resume_checkpoint, run_lock
from .norm_stats import reestimate_bn
from .run_log import RunLog
from .seeding import rng_state, seed_batch, seed_epoch
from .stages import enter_rnn_stage
from .self_correction import SelfRegulation, model_state
from .warm_start import load_initial_weights

log = logging.getLogger(__name__)

__all__ = ["train", "TrainState", "resolve_class_weights", "resolve_pretrained"]


def train(cfg: Config, *, resume: Optional[str] = None, max_epochs: Optional[int] = None,
          progress: bool = True, allow_changes: bool = False) -> dict:
    """Run (or continue) the training that ``cfg`` describes, holding the run directory's lock; returns a summary.

    Args:
        resume: a checkpoint file or run directory to continue from. Without it the run directory must not hold
            checkpoints yet (nothing is overwritten by accident).
        max_epochs: stop (with a checkpoint) after this many epochs of *this* call -- for tests and time slices.
        progress: a progress bar per epoch (main process only).
        allow_changes: resume with data or schedule settings other than the checkpoint's (see
            :mod:`dml_csr.training.run_guard`, which also holds the lock).
    """
    with run_lock(cfg.run_dir, enabled=du.env_int("RANK", 0) == 0):
        return _train(cfg, resume, max_epochs, progress, allow_changes)


def _train(cfg: Config, resume: Optional[str], max_epochs: Optional[int], progress: bool, allow_changes: bool) -> dict:
    run = _start(cfg, resume, allow_changes)
    end = run.total_epochs if max_epochs is None else min(run.total_epochs, run.state.epoch + max_epochs)
    summary: dict[str, Any] = {"run_dir": run.paths.root, "stopped": False}
    with StopSignal() as stop:
        for epoch in range(run.state.epoch, end):
            cycle, _ = epoch_position(run.cfg.train, epoch)
            enter_rnn_stage(run.cfg, epoch, run.model, run.steps.criterion, run.dist.enabled)
            teacher = run.csr.teacher_for_epoch(epoch, run.model)
            result = _train_epoch(run, epoch, teacher, stop, progress)
            if result["stopped"]:
                run.state.epoch_sums = result["sums"]  # so that the epoch's record covers all of it
                _save(run, epoch, result["batches"])
                _report_stop(summary, run, stop.signal, epoch, result["batches"])
                break
            run.state.epoch_sums = None
            run.log.epoch(epoch, cycle=cycle, step=run.state.step, lr=run.steps.optimizer.param_groups[0]["lr"],
                          loss=result["loss"], seconds=result["seconds"])
            run.csr.after_epoch(epoch, run.model)
            if _validation_due(run, epoch):
                scores = _validate(run, run.model, "student", epoch)
                run.csr.observe(epoch, selection_score(scores, run.cfg.eval.select_metric), run.model)
                _keep_if_best(run, scores, model_state(run.model), epoch, "student")
                run.log.images(epoch, run.model, run.val_ds, run.spec, run.device)
            ensemble = run.csr.end_of_cycle(epoch, run.model, functools.partial(_reestimate_bn, run, cycle))
            if ensemble is not None:
                scores = _validate(run, ensemble, f"ensemble_{cycle}", epoch)
                _keep_if_best(run, scores, run.csr.teacher_state, epoch, f"ensemble_{cycle}")
            _save(run, epoch + 1, 0)
            run.log.flush()
            if epoch + 1 < end and du.any_rank(stop()):
                # a signal during validation, the self-ensemble or the checkpoint: this epoch's checkpoint is the stop
                _report_stop(summary, run, stop.signal, epoch, None)
                break
    run.log.close()
    summary.update(select_metric=run.cfg.eval.select_metric, best_val_score=run.state.best_score,
                   best_val_mean_f1=run.state.best_mean_f1, best_epoch=run.state.best_epoch, best=run.paths.best,
                   phase1_best=run.csr.phase1_best, epochs_done=run.state.epoch)
    return summary


@dataclasses.dataclass
class TrainState:
    """Where a run stands: a checkpoint's ``train_state``."""
    epoch: int = 0  # epochs done: the next epoch to run (0-based)
    step: int = 0  # optimiser steps done
    batches_done: int = 0  # batches of epoch ``epoch`` done before a stop (a resume skips them)
    best_score: float = -1.0  # best validation score (eval.select_metric) so far: best.pt
    best_mean_f1: float = -1.0  # that model's mean F1
    best_epoch: int = -1  # its epoch, counted from 1
    epoch_sums: Optional[dict] = None  # loss sums of the batches done, in a stop checkpoint

    @classmethod
    def from_dict(cls, d: dict) -> "TrainState":
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


@dataclasses.dataclass
class _Run:
    """Everything one call of :func:`train` holds; the steps below read it and advance ``state`` and ``csr``."""
    cfg: Config
    dist: du.DistInfo
    device: torch.device
    paths: RunPaths
    spec: LabelSpec
    model: nn.Module  # the bare network: what checkpoints hold and evaluation runs
    net: nn.Module  # what a training step calls: the model, or its DDP / compiled wrapper
    steps: StepContext  # the criterion, optimiser, gradient scaler and learning rate of every step
    train_ds: FaceParsingDataset
    val_ds: FaceParsingDataset
    val_loader: Any
    log: RunLog
    state: TrainState
    csr: SelfRegulation
    meta: dict
    batches_per_epoch: int  # per process

    @property
    def total_epochs(self) -> int:
        return total_epochs(self.cfg.train)


def _start(cfg: Config, resume: Optional[str], allow_changes: bool = False) -> _Run:
    """Join the process group and build, or restore from the checkpoint to resume, everything the run holds."""
    t = cfg.train
    dist = du.init_distributed(du.resolve_device(t.device).type, timeout_s=t.dist_timeout_s)
    device = du.resolve_device(t.device, dist.local_rank)
    paths = RunPaths(cfg.run_dir)
    ckpt = resume_checkpoint(cfg, paths, resume, allow_changes)
    spec = label_spec(cfg)
    if cfg.eval.select_metric == "overall_f1" and "overall" not in spec.groups:
        raise ValueError(f"eval.select_metric = overall_f1, but data.dataset '{spec.name}' has no 'overall' group; "
                         f"use mean_f1 or miou")
    model = _build_model(cfg, spec, device, dist, ckpt)
    optimizer = _sgd(model, cfg, device)
    scaler = grad_scaler(device, t.precision)
    state, csr = TrainState(), SelfRegulation(t.epochs, t.cycle_epochs, t.self_ensemble, t.cycles)
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        state = TrainState.from_dict(ckpt["train_state"])
        csr.load_state_dict(ckpt["csr"])
    train_ds = build_training_set(cfg, spec)  # data.root's train split, or every root of data.roots
    val_ds = build_dataset(cfg, cfg.data.val_split, train=False, spec=spec)
    val_loader = build_loader(val_ds, batch_size=cfg.eval.batch_size, workers=cfg.data.workers, seed=cfg.seed,
                              train=False, rank=dist.rank, world=dist.world_size)
    if dist.is_main:
        os.makedirs(paths.ckpt_dir, exist_ok=True)
        paths.remove_partial_writes()  # what a killed checkpoint write left behind
        record_changes(paths, ckpt or {})  # before config.yaml is replaced
        save_config(cfg, paths.config)
    batches = _batches_per_epoch(cfg, len(train_ds), dist.world_size)
    steps = StepContext(criterion=build_criterion(cfg, spec.classes, resolve_class_weights(cfg, spec)),
                        optimizer=optimizer, scaler=scaler, device=device,
                        lr_at=functools.partial(learning_rate, train=t, steps_per_epoch=batches // t.grad_accum),
                        precision=t.precision, channels_last=t.channels_last, grad_accum=t.grad_accum)
    return _Run(cfg=cfg, dist=dist, device=device, paths=paths, spec=spec, model=model,
                net=_wrap(model, cfg, dist, device), steps=steps, train_ds=train_ds, val_ds=val_ds,
                val_loader=val_loader,
                log=RunLog(paths, enabled=dist.is_main, log_every=t.log_every, image_every=t.image_log_every,
                           resume=(state.epoch, state.step) if ckpt is not None else None),
                state=state, csr=csr, meta=_meta(cfg, spec), batches_per_epoch=batches)


def _meta(cfg: Config, spec: Optional[LabelSpec] = None) -> dict:
    """Checkpoint metadata (:func:`dml_csr.checkpoint.make_meta`) with the crop convention of the training faces."""
    return make_meta(cfg, spec, crop=training_crop(cfg.data))


def resolve_class_weights(cfg: Config, spec: LabelSpec) -> Optional[list[float]]:
    """``loss.class_weights`` -> the values the loss takes (its one reader): a list as it is, ``inverse_frequency``
    from the train split's class histogram (``info.json``), null -> None (all ones)."""
    setting = cfg.loss.class_weights
    if setting != "inverse_frequency":
        return None if setting is None else [float(w) for w in setting]
    weights = inverse_frequency_weights(training_histogram(cfg, spec))
    log.info("loss.class_weights (inverse frequency): %s", ", ".join(f"{c} {w:.3g}" for c, w in
                                                                     zip(spec.classes, weights)))
    return weights


def _sgd(model: nn.Module, cfg: Config, device: torch.device) -> torch.optim.SGD:
    """SGD with momentum. On CPU and CUDA the fused kernel: one pass over each tensor instead of one per term of the
    update (3x faster on a CPU for a ResNet-18's 11M weights), the same values as the loop on the CPU, bit for bit."""
    t = cfg.train
    return torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay,
                           fused=device.type in ("cpu", "cuda"))


def _build_model(cfg: Config, spec: LabelSpec, device: torch.device, dist: du.DistInfo,
                 ckpt: Optional[dict]) -> nn.Module:
    torch.manual_seed(cfg.seed)
    if (ckpt is None and cfg.model.name == "dml_csr" and cfg.model.pretrained == "" and not cfg.train.init_from
            and cfg.model.backbone.startswith("resnet101")):  # RNN-G has no backbone to initialise
        log.warning("%s\nmodel.pretrained is unset: the %s starts from RANDOM weights. The paper's numbers need the "
                    "ImageNet initialisation: model.pretrained: resnet101_deepstem_imagenet (README, 'Weights by "
                    "name') or a path to the file\n%s", "=" * 100, cfg.model.backbone, "=" * 100)
    if ckpt is not None:  # a resume loads trained weights: no initialisation to fetch or read
        mcfg = dataclasses.replace(cfg.model, pretrained="")
    else:
        if dist.enabled and not dist.is_main:
            du.barrier()  # rank 0 downloads a registry name into the cache first, the others then find it there
        mcfg = resolve_pretrained(cfg.model)
        if dist.enabled and dist.is_main:
            du.barrier()
    model = build_model(mcfg, spec.num_classes, spec.classes)
    if ckpt is None and cfg.train.init_from:
        load_initial_weights(model, cfg.train.init_from, spec.classes)
    if cfg.train.precision == "fp64":  # numerical checks: float64 weights (before a resume loads float64 values)
        model.double()
        model.register_forward_pre_hook(_inputs_to_double)  # inputs cast on the way in
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
    model.to(device)
    if dist.enabled and cfg.model.sync_bn:
        model = convert_sync_abn(model)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def resolve_pretrained(mcfg: ModelConfig) -> ModelConfig:
    """``model.pretrained: NAME`` (a :mod:`dml_csr.hub` backbone entry) -> a copy naming the fetched, verified file;
    "", "imagenet", "timm", "timm:<tag>" (timm downloads those itself) and existing paths are kept as they are."""
    if mcfg.pretrained in ("", "imagenet", "timm") or mcfg.pretrained.startswith("timm:"):
        return mcfg
    try:
        path = resolve(mcfg.pretrained, kind="backbone")
    except HubError as e:
        raise HubError(f"model.pretrained: {e}") from None
    return mcfg if path == mcfg.pretrained else dataclasses.replace(mcfg, pretrained=path)


def _inputs_to_double(module: nn.Module, args: tuple) -> tuple:
    return tuple(a.double() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)


def _wrap(model: nn.Module, cfg: Config, dist: du.DistInfo, device: torch.device) -> nn.Module:
    net = model
    if dist.enabled:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.train.compile:
        net = torch.compile(net)
    return net


def _batches_per_epoch(cfg: Config, n_train: int, world: int) -> int:
    per_epoch = n_train // world // cfg.data.batch_size
    if cfg.train.iters_per_epoch > 0:
        per_epoch = min(per_epoch, cfg.train.iters_per_epoch)
    if per_epoch == 0:
        raise ValueError(f"train split of '{cfg.data.root}' has {n_train} samples: fewer than one batch of "
                         f"data.batch_size={cfg.data.batch_size} per process ({world} processes)")
    return per_epoch


def _train_epoch(run: _Run, epoch: int, teacher: Optional[nn.Module], stop: "StopSignal", progress: bool) -> dict:
    """One epoch of training, or what remains of it after a resume part-way; see :func:`train_one_epoch`."""
    cfg, dist = run.cfg, run.dist
    cycle, _ = epoch_position(cfg.train, epoch)
    skip = run.state.batches_done
    seed_epoch(cfg.seed, epoch, dist.rank)  # the draws outside the steps (a step reseeds from its own position)
    loader = build_loader(run.train_ds, batch_size=cfg.data.batch_size, workers=cfg.data.workers, seed=cfg.seed,
                          train=True, epoch=epoch, rank=dist.rank, world=dist.world_size, skip_batches=skip,
                          limit_batches=run.batches_per_epoch)
    bar = _progress_bar(run, epoch, cycle, skip) if progress and dist.is_main else None
    plan = EpochPlan(start_step=run.state.step, cycle=cycle, teacher=teacher, skip_batches=skip,
                     sums=run.state.epoch_sums if skip else None,
                     seed_batch=functools.partial(seed_batch, cfg.seed, epoch, dist.rank),
                     on_step=lambda step, terms: run.log.step(step, terms, run.steps.optimizer.param_groups[0]["lr"]),
                     should_stop=lambda: du.any_rank(stop()), progress=bar)
    result = train_one_epoch(run.net, loader, run.steps, plan)
    if bar is not None:
        bar.close()
    run.state.step = result["step"]
    return result


def _progress_bar(run: _Run, epoch: int, cycle: int, skip: int):
    """A bar on a terminal; in a log, one line when the epoch ends (:mod:`dml_csr.progress`)."""
    ga = run.cfg.train.grad_accum
    phase = f"cycle {cycle}/{run.cfg.train.cycles}" if cycle else "phase 1"
    return progress(run.batches_per_epoch // ga, f"epoch {epoch + 1}/{run.total_epochs} ({phase})", "it",
                    initial=skip // ga, every=1.0)


def _validation_due(run: _Run, epoch: int) -> bool:
    """Every ``train.val_every`` epochs, and after the first phase, every cycle and the run."""
    t = run.cfg.train
    return ((epoch + 1) % max(t.val_every, 1) == 0 or epoch == t.epochs - 1 or run.csr.ends_cycle(epoch)
            or epoch == run.total_epochs - 1)


def _validate(run: _Run, model: nn.Module, tag: str, epoch: int) -> dict:
    """Score ``model`` on the validation split and log it as ``tag``; returns the scores."""
    cm = evaluate(du.unwrap_model(model), run.val_loader, run.val_ds, run.spec.num_classes, device=run.device,
                  precision=run.cfg.eval.precision, channels_last=run.cfg.eval.channels_last)
    scores = cm.compute(run.spec.classes, run.spec.groups, run.spec.mean_f1_indices)
    run.log.validation(tag, epoch, scores)
    log.info("epoch %d %s: val mean F1 %.4f, mIoU %.4f", epoch + 1, tag, scores["mean_f1"], scores["miou"])
    return scores


def _keep_if_best(run: _Run, scores: dict, state: dict, epoch: int, tag: str) -> None:
    """``best.pt`` holds the run's best weights on the validation split by ``eval.select_metric``, student or
    ensemble."""
    metric = run.cfg.eval.select_metric
    score = selection_score(scores, metric)
    if score > run.state.best_score:
        run.state.best_score, run.state.best_epoch = float(score), epoch + 1
        run.state.best_mean_f1 = float(scores["mean_f1"])
        if run.dist.is_main:
            save_checkpoint(run.paths.best, state, run.meta, config_to_dict(run.cfg), epoch=epoch + 1, tag=tag,
                            select_metric=metric, val_score=float(score), val_mean_f1=float(scores["mean_f1"]))


def _reestimate_bn(run: _Run, cycle: int, model: nn.Module) -> None:
    """Exact norm statistics of ``model`` over every training image (batch remainders too), in an order of its own."""
    cfg = run.cfg
    loader = build_norm_loader(run.train_ds, batch_size=cfg.data.batch_size, workers=cfg.data.workers, seed=cfg.seed,
                               epoch=-1 - cycle, rank=run.dist.rank, world=run.dist.world_size)
    reestimate_bn(model, loader, device=run.device)


def _save(run: _Run, epoch_done: int, batches_done: int) -> None:
    """The epoch checkpoint (or, ``batches_done`` into the next epoch, a stop checkpoint of its own name): weights,
    optimiser, scaler, where the run stands and the self-regulation state. Diverged weights are not saved."""
    check_weights(run.model, run.paths, f"epoch {epoch_done + 1}" if batches_done else f"epoch {epoch_done}")
    run.state.epoch, run.state.batches_done = epoch_done, batches_done
    if run.dist.is_main:
        path = run.paths.stop_ckpt(epoch_done, batches_done) if batches_done else run.paths.epoch_ckpt(epoch_done)
        save_checkpoint(path, model_state(run.model), run.meta, config_to_dict(run.cfg),
                        optimizer=run.steps.optimizer.state_dict(), scaler=run.steps.scaler.state_dict(),
                        train_state=dataclasses.asdict(run.state), csr=run.csr.state_dict(), rng=rng_state())
        run.paths.prune(run.cfg.train.keep_last)
    du.barrier()


def _report_stop(summary: dict, run: _Run, signum: Optional[int], epoch: int, batch: Optional[int]) -> None:
    summary.update(stopped=True, signal=signum, epoch=epoch + 1)
    where = f"at epoch {epoch + 1}, batch {batch}" if batch is not None else f"after epoch {epoch + 1}"
    log.warning("stopped by signal %s %s; resume with --resume %s", signum, where, run.paths.root)
