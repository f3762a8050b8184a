"""One training epoch; no file I/O here (the trainer does that)."""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Callable, Iterable, Optional

import torch

from ..data.transforms import batch_input
from ..distributed import unwrap_model
from ..models.precision import autocast_context

log = logging.getLogger(__name__)

__all__ = ["NonFiniteLossError", "StepContext", "EpochPlan", "grad_scaler", "train_one_epoch", "to_device",
           "model_targets"]


class NonFiniteLossError(FloatingPointError):
    """Raised when a loss term is NaN or infinite; names the iteration and the bad terms."""


TARGETS = ("label", "edge", "semantic_edge")


def to_device(batch: dict, device: torch.device, channels_last: bool = False) -> dict:
    """Move a batch's tensors to ``device``. There the uint8 images become the normalised float input
    (:func:`~dml_csr.data.transforms.batch_input`) and the uint8 target maps (:data:`TARGETS`) become int64."""
    out = {}
    for k, v in batch.items():
        if k == "image":
            v = batch_input(batch, device, channels_last)
        elif isinstance(v, torch.Tensor):
            v = v.to(device, non_blocking=True)
            if k in TARGETS:
                v = v.long()
        out[k] = v
    return out


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """The run's one gradient scaler: it scales only under fp16 and otherwise passes the loss and the optimiser step
    through unchanged, so every step calls it the same way (``scale``, ``step``, ``update``)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


@dataclasses.dataclass
class StepContext:
    """How a run takes an optimiser step: the same for every epoch.

    Attributes:
        criterion: ``criterion(outputs, batch, teacher_outputs, cycle=k) -> {"total": ..., term: ...}``.
        optimizer: its learning rate is set from ``lr_at`` before every step.
        scaler: :func:`grad_scaler` of the run's precision.
        device: where batches go.
        lr_at: learning rate as a function of the global optimiser step.
        precision: "fp32", "bf16", "fp16" (autocast) or "fp64" (a float64 model: no autocast).
        channels_last: batches in channels_last memory format.
        grad_accum: batches per optimiser step.
    """
    criterion: Callable[..., dict]
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    device: torch.device
    lr_at: Callable[[int], float]
    precision: str = "fp32"
    channels_last: bool = False
    grad_accum: int = 1


@dataclasses.dataclass
class EpochPlan:
    """Where one epoch starts, what it distils from, and what watches it.

    Attributes:
        start_step: global optimiser step at the start of the epoch.
        cycle: the self-regulation cycle of the epoch (0: the first phase), handed to the criterion.
        teacher: when given, its outputs (no grad) are passed to the criterion for self-distillation.
        skip_batches: batches of this epoch already done before a resume; the loader must already skip them.
        sums: ``{"loss": {term: sum}, "steps": n}`` of the part of the epoch done before a resume (the mean then
            covers the whole epoch).
        seed_batch: called with each batch's index in the epoch before the batch runs (the trainer reseeds every
            RNG from it, so what a step draws does not depend on where a run was resumed).
        on_step: called after each optimiser step with (global step, detached loss terms).
        should_stop: polled after each step (e.g. a signal arrived); the epoch ends early when it returns True.
        progress: a tqdm bar advanced once a step, or None.
    """
    start_step: int = 0
    cycle: int = 0
    teacher: Optional[torch.nn.Module] = None
    skip_batches: int = 0
    sums: Optional[dict] = None
    seed_batch: Optional[Callable[[int], None]] = None
    on_step: Optional[Callable[[int, dict], None]] = None
    should_stop: Callable[[], bool] = lambda: False
    progress: Any = None


def train_one_epoch(model: torch.nn.Module, loader: Iterable, ctx: StepContext,
                    plan: Optional[EpochPlan] = None) -> dict:
    """Train ``model`` for one pass over ``loader``: each batch's loss through ``ctx.scaler`` and, every
    ``ctx.grad_accum`` batches, an optimiser step at ``ctx.lr_at(step)``.

    A model whose class sets ``wants_targets = True`` (the two-stage RNN-G, which crops from the ground truth while
    training) is called as ``model(image, label=..., keypoints=...)`` with the batch's entries that exist
    (see :func:`model_targets`); every other model as ``model(image)``.
    Returns:
        {"step": global step reached, "batches": batches done this epoch incl. skipped, "loss": mean terms over the
         epoch's steps, "sums": the running sums (for a stop checkpoint), "stopped": bool, "seconds": float}
    """
    plan = EpochPlan() if plan is None else plan
    model.train()
    totals, count = dict((plan.sums or {}).get("loss", {})), int((plan.sums or {}).get("steps", 0))
    step, batches = plan.start_step, plan.skip_batches
    ctx.optimizer.zero_grad(set_to_none=True)
    t0, stopped = time.time(), False
    for i, batch in enumerate(loader):
        if plan.seed_batch is not None:
            plan.seed_batch(batches)
        terms = _forward_loss(model, to_device(batch, ctx.device, ctx.channels_last), ctx, plan,
                              f"iteration {step} (epoch batch {batches})")
        ctx.scaler.scale(terms["total"] / ctx.grad_accum).backward()
        batches += 1
        if (i + 1) % ctx.grad_accum:
            continue
        _optimizer_step(ctx, ctx.lr_at(step))
        step += 1
        detached = {k: float(v.detach()) for k, v in terms.items()}
        for k, v in detached.items():
            totals[k] = totals.get(k, 0.0) + v
        count += 1
        _report(plan, step, detached, ctx.optimizer)
        if plan.should_stop():
            stopped = True
            break
    return {"step": step, "batches": batches, "loss": {k: v / max(count, 1) for k, v in totals.items()},
            "sums": {"loss": totals, "steps": count}, "stopped": stopped, "seconds": time.time() - t0}


def _forward_loss(model, batch: dict, ctx: StepContext, plan: EpochPlan, where: str) -> dict:
    """The loss terms of one batch (the teacher's outputs under no_grad); raises naming ``where`` and the bad terms
    when one is not finite."""
    with autocast_context(batch["image"].device, "fp32" if ctx.precision == "fp64" else ctx.precision):
        outputs = model(batch["image"], **model_targets(model, batch))
        teacher_out = None
        if plan.teacher is not None:
            with torch.no_grad():
                teacher_out = plan.teacher(batch["image"])
    terms = ctx.criterion(_float(outputs), batch, _float(teacher_out) if teacher_out is not None else None,
                          cycle=plan.cycle)
    bad = [k for k, v in terms.items() if not torch.isfinite(v).all()]
    if bad:
        raise NonFiniteLossError(f"non-finite loss at {where}: " + ", ".join(f"{k}={terms[k].item()}" for k in bad))
    return terms


def _optimizer_step(ctx: StepContext, lr: float) -> None:
    for g in ctx.optimizer.param_groups:
        g["lr"] = lr
    ctx.scaler.step(ctx.optimizer)  # the plain optimizer.step() unless the scaler is enabled (fp16)
    ctx.scaler.update()
    ctx.optimizer.zero_grad(set_to_none=True)


def _report(plan: EpochPlan, step: int, terms: dict, optimizer: torch.optim.Optimizer) -> None:
    """A finished step to the plan's watchers: the step callback and the progress bar."""
    if plan.on_step is not None:
        plan.on_step(step, terms)
    if plan.progress is not None:
        plan.progress.set_postfix(loss=f"{terms['total']:.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}",
                                  refresh=False)
        plan.progress.update(1)


def model_targets(model: torch.nn.Module, batch: dict) -> dict:
    """Keyword arguments of a training forward pass: ``label`` (B, H, W) and ``keypoints`` (B, K, 2) from
    ``batch`` when present, for models (unwrapped from DDP / torch.compile) with ``wants_targets = True``."""
    if not getattr(unwrap_model(model), "wants_targets", False):
        return {}
    return {k: batch[k] for k in ("label", "keypoints") if isinstance(batch.get(k), torch.Tensor)}


def _float(outputs: Optional[dict]) -> Optional[dict]:
    """Losses are computed in fp32 whatever the autocast dtype (fp64 outputs stay fp64)."""
    if outputs is None:
        return None
    return {k: v.float() if isinstance(v, torch.Tensor) and v.dtype in (torch.float16, torch.bfloat16) else v
            for k, v in outputs.items()}
