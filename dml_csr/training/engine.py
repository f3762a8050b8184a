"""One training epoch; no file I/O here (the trainer does that)."""
from __future__ import annotations

import logging
import time
from typing import Callable, Iterable, Optional

import torch

from ..data.transforms import batch_input
from ..distributed import unwrap_model
from ..models.precision import autocast_context

log = logging.getLogger(__name__)

__all__ = ["NonFiniteLossError", "train_one_epoch", "to_device", "model_targets"]


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


def train_one_epoch(model: torch.nn.Module, loader: Iterable, criterion: Callable[..., dict],
                    optimizer: torch.optim.Optimizer, *, device: torch.device, lr_at: Callable[[int], float],
                    start_step: int, precision: str = "fp32", scaler: Optional[torch.amp.GradScaler] = None,
                    channels_last: bool = False, grad_accum: int = 1, teacher: Optional[torch.nn.Module] = None,
                    on_step: Optional[Callable[[int, dict], None]] = None,
                    should_stop: Callable[[], bool] = lambda: False, skip_batches: int = 0,
                    seed_batch: Optional[Callable[[int], None]] = None, sums: Optional[dict] = None,
                    progress=None) -> dict:
    """Train for one pass over ``loader``.

    Args:
        criterion: ``criterion(outputs, batch, teacher_outputs) -> {"total": ..., term: ...}`` (the trainer binds
            the cycle).
        lr_at: learning rate as a function of the global optimiser step.
        start_step: global optimiser step at the start of the epoch.
        teacher: when given, its outputs (no grad) are passed to the criterion for self-distillation.
        on_step: called after each optimiser step with (global step, detached loss terms).
        should_stop: polled after each step (e.g. a signal arrived); the epoch ends early when it returns True.
        skip_batches: batches of this epoch already done before a resume; the loader must already skip them.
        seed_batch: called with each batch's index in the epoch before the batch runs (the trainer reseeds every
            RNG from it, so what a step draws does not depend on where a run was resumed).
        sums: ``{"loss": {term: sum}, "steps": n}`` of the part of the epoch done before a resume (the mean then
            covers the whole epoch).

    A model whose class sets ``wants_targets = True`` (the two-stage RNN-G, which crops from the ground truth while
    training) is called as ``model(image, label=..., keypoints=...)`` with the batch's entries that exist
    (see :func:`model_targets`); every other model as ``model(image)``.
    Returns:
        {"step": global step reached, "batches": batches done this epoch incl. skipped, "loss": mean terms over the
         epoch's steps, "sums": the running sums (for a stop checkpoint), "stopped": bool, "seconds": float}
    """
    model.train()
    totals, count = dict((sums or {}).get("loss", {})), int((sums or {}).get("steps", 0))
    step, batches = start_step, skip_batches
    optimizer.zero_grad(set_to_none=True)
    t0, stopped = time.time(), False
    for i, batch in enumerate(loader):
        if seed_batch is not None:
            seed_batch(batches)
        terms = _forward_loss(model, teacher, criterion, to_device(batch, device, channels_last), precision,
                              f"iteration {step} (epoch batch {batches})")
        loss = terms["total"] / grad_accum
        (scaler.scale(loss) if scaler is not None else loss).backward()
        batches += 1
        if (i + 1) % grad_accum:
            continue
        _optimizer_step(optimizer, scaler, lr_at(step))
        step += 1
        detached = {k: float(v.detach()) for k, v in terms.items()}
        for k, v in detached.items():
            totals[k] = totals.get(k, 0.0) + v
        count += 1
        if on_step is not None:
            on_step(step, detached)
        if progress is not None:
            progress.set_postfix(loss=f"{detached['total']:.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}",
                                 refresh=False)
            progress.update(1)
        if should_stop():
            stopped = True
            break
    return {"step": step, "batches": batches, "loss": {k: v / max(count, 1) for k, v in totals.items()},
            "sums": {"loss": totals, "steps": count}, "stopped": stopped, "seconds": time.time() - t0}


def _forward_loss(model, teacher, criterion, batch: dict, precision: str, where: str) -> dict:
    """The loss terms of one batch (the teacher's outputs under no_grad); raises naming ``where`` and the bad terms
    when one is not finite."""
    with autocast_context(batch["image"].device, "fp32" if precision == "fp64" else precision):
        outputs = model(batch["image"], **model_targets(model, batch))
        teacher_out = None
        if teacher is not None:
            with torch.no_grad():
                teacher_out = teacher(batch["image"])
    terms = criterion(_float(outputs), batch, _float(teacher_out) if teacher_out is not None else None)
    bad = [k for k, v in terms.items() if not torch.isfinite(v).all()]
    if bad:
        raise NonFiniteLossError(f"non-finite loss at {where}: " + ", ".join(f"{k}={terms[k].item()}" for k in bad))
    return terms


def _optimizer_step(optimizer: torch.optim.Optimizer, scaler: Optional[torch.amp.GradScaler], lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


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
