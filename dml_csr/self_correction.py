"""Cyclical self-regulation building blocks (paper sec. 3.3): the self-ensemble of eq. 6, exact batch-norm
re-estimation, soft targets, and the learning-rate schedules of both phases.

Index conventions:
    * Epochs are 0-based. The first phase is epochs ``0 .. E-1``; cycle ``k`` (1-based, as in the paper,
      ``1 <= k <= K``) is epochs ``E + (k-1) L .. E + k L - 1`` with L epochs per cycle (:func:`cycle_position`).
    * :func:`self_ensemble` at the end of cycle k uses that same k: ``M = k/(k+1) M_best + 1/((k+1) N) sum_n M_n``,
      with the N epoch-end models of cycle k accumulated in a :class:`RunningSum`. So after the first cycle the best
      model and the cycle's mean weigh 1/2 each, after the fifth 5/6 and 1/6.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Callable, Iterable, Mapping, Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm, _NormBase

from .data.transforms import batch_input

__all__ = ["RunningSum", "self_ensemble", "norm_layers", "reestimate_bn", "soft_targets", "cosine_lr", "poly_lr",
           "cycle_position"]

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------- self-ensemble
class RunningSum:
    """Running sum of model state dicts (the N epoch-end models of one cycle), one accumulator per tensor.

    Floating tensors are summed in ``dtype`` (default float32, or the tensor's own dtype when wider); integer
    tensors (e.g. ``num_batches_tracked``) are not summed: the latest value is kept.

    Args:
        dtype: accumulation dtype of floating tensors (``torch.float64`` for a bit-exact-ish sum at twice the memory).
        device: where the sums live (default: the device of each added tensor; pass "cpu" to spare GPU memory).
    """

    def __init__(self, dtype: torch.dtype = torch.float32, device: Optional[torch.device | str] = None) -> None:
        self.dtype = dtype
        self.device = torch.device(device) if device is not None else None
        self.count = 0
        self.sums: dict[str, Tensor] = {}
        self.last: dict[str, Tensor] = {}

    def _acc_dtype(self, t: Tensor) -> torch.dtype:
        return torch.promote_types(t.dtype, self.dtype)

    def add(self, state: Mapping[str, Tensor]) -> None:
        """Add one model's ``state_dict()`` (tensors are copied, the model may keep training)."""
        if self.count:
            known = set(self.sums) | set(self.last)
            if set(state) != known:
                missing, extra = sorted(known - set(state)), sorted(set(state) - known)
                raise KeyError(f"RunningSum.add: state keys differ from the first model's (missing {missing[:5]}, "
                               f"unexpected {extra[:5]}); add state dicts of the same architecture")
        for name, t in state.items():
            t = t.detach()
            dev = self.device or t.device
            if t.is_floating_point():
                v = t.to(dev, self._acc_dtype(t))
                if name in self.sums:
                    self.sums[name].add_(v)
                else:
                    self.sums[name] = v.clone()
            else:
                self.last[name] = t.to(dev).clone()
        self.count += 1

    def reset(self) -> None:
        """Forget every model (start of a new cycle)."""
        self.count = 0
        self.sums = {}
        self.last = {}

    def mean(self) -> dict[str, Tensor]:
        """The plain average of the added models (floating tensors), latest value of the others."""
        if not self.count:
            raise ValueError("RunningSum.mean: no model was added")
        return {**{k: v / self.count for k, v in self.sums.items()}, **self.last}

    def state_dict(self) -> dict[str, Any]:
        """Checkpointable state (tensors and an int; loads with ``torch.load(weights_only=True)``)."""
        return {"count": self.count, "sums": dict(self.sums), "last": dict(self.last)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        try:
            count, sums, last = int(state["count"]), dict(state["sums"]), dict(state["last"])
        except KeyError as e:
            raise KeyError(f"RunningSum.load_state_dict: missing key {e}; expected 'count', 'sums', 'last'") from None
        dev = self.device
        self.count = count
        self.sums = {k: v.to(dev) if dev is not None else v for k, v in sums.items()}
        self.last = {k: v.to(dev) if dev is not None else v for k, v in last.items()}


def self_ensemble(best_state: Mapping[str, Tensor], running_sum: RunningSum | Mapping[str, Tensor],
                  n_models: Optional[int], k: int) -> dict[str, Tensor]:
    """Eq. 6: ``M = k/(k+1) * M_best + 1/((k+1) N) * sum_n M_n``.

    Args:
        best_state: state dict of the best model so far.
        running_sum: a :class:`RunningSum` of the cycle's N models, or a mapping of already-summed tensors.
        n_models: N; None takes ``running_sum.count``.
        k: the 1-based index of the cycle that just ended (``k = 0`` gives the plain mean of the cycle's models).
    Returns:
        a new state dict with ``best_state``'s keys, dtypes and devices. Integer tensors (``num_batches_tracked``)
        come from the latest model of the running sum when it has them, else from ``best_state``; batch-norm
        statistics are averaged like weights and should be re-estimated afterwards (:func:`reestimate_bn`).
    """
    if isinstance(running_sum, RunningSum):
        sums, last = running_sum.sums, running_sum.last
        n = running_sum.count if n_models is None else n_models
    else:
        sums, last = running_sum, {}
        n = n_models
    if n is None or n < 1:
        raise ValueError(f"self_ensemble: n_models = {n}; expected the number of models summed (>= 1)")
    if k < 0:
        raise ValueError(f"self_ensemble: k = {k}; expected the 1-based cycle index (>= 0)")
    missing = [name for name, t in best_state.items() if t.is_floating_point() and name not in sums]
    if missing:
        raise KeyError(f"self_ensemble: the running sum lacks {missing[:5]}; sum state dicts of the best model's "
                       f"architecture")
    a, b = k / (k + 1), 1.0 / ((k + 1) * n)
    out: dict[str, Tensor] = {}
    for name, best in best_state.items():
        if best.is_floating_point():
            s = sums[name]
            m = a * best.to(s.device, s.dtype) + b * s
            out[name] = m.to(best.device, best.dtype)
        else:
            out[name] = last.get(name, best).to(best.device).clone()
    return out


# ----------------------------------------------------------------------------------------- batch-norm re-estimation
def norm_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Norm layers with running statistics: every ``_BatchNorm`` subclass (BatchNorm1d/2d/3d, SyncBatchNorm, our ABN)
    tracking running stats, and any other module with ``running_mean``/``running_var`` tensors that is not a
    ``torch.nn`` norm (e.g. the inplace_abn package's layers). Instance norms are left out (per-instance statistics)."""
    layers = []
    for name, m in model.named_modules():
        if isinstance(m, _BatchNorm):
            ok = m.track_running_stats and m.running_mean is not None
        else:
            ok = (not isinstance(m, _NormBase) and isinstance(getattr(m, "running_mean", None), Tensor)
                  and isinstance(getattr(m, "running_var", None), Tensor))
        if ok:
            layers.append((name, m))
    return layers


def _default_forward(model: nn.Module, batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Mapping):
        return model(batch_input(batch, device))  # uint8 images are normalised on the device
    if isinstance(batch, (tuple, list)):
        x = batch[0]
    else:
        x = batch
    return model(x.to(device))


class _Moments:
    """Per-channel shifted sums of one norm layer's input: count, sum(x - s), sum((x - s)^2), in float64."""

    def __init__(self, shift: Tensor) -> None:
        self.shift = shift
        self.count = torch.zeros((), dtype=shift.dtype, device=shift.device)
        self.sum = torch.zeros_like(shift)
        self.sumsq = torch.zeros_like(shift)

    def __call__(self, module: nn.Module, inputs: tuple) -> None:  # forward pre-hook: sees the input before any
        x = inputs[0].detach()  # in-place normalisation
        c = x.shape[1]
        dims = [0] + list(range(2, x.dim()))
        xs = x.to(self.shift.dtype) - self.shift.to(x.device).view(1, c, *([1] * (x.dim() - 2)))
        self.count += x.numel() // c
        self.sum += xs.sum(dims).to(self.sum.device)
        self.sumsq += (xs * xs).sum(dims).to(self.sum.device)


@torch.no_grad()
def reestimate_bn(model: nn.Module, loader: Iterable, forward_fn: Optional[Callable[[nn.Module, Any, torch.device],
                  Any]] = None, device: Optional[torch.device | str] = None,
                  max_batches: Optional[int] = None) -> int:
    """Replace the running statistics of every norm layer by the exact statistics of its input over ``loader``.

    The model runs in train mode (so every norm layer normalises with its batch statistics, as during training, and
    the layers after it see what they see in training; dropout, if any, is active as in ``swa_utils.update_bn``).
    Forward pre-hooks accumulate, per channel, the count, sum and sum of squares of each layer's input (float64,
    shifted by the layer's previous running mean against cancellation). Afterwards ``running_mean`` is the mean and
    ``running_var`` the unbiased variance over ALL elements seen (not a moving average of per-batch values). When
    ``torch.distributed`` is initialised the sums are all-reduced, so every process gets the statistics of the whole
    (sharded) set; with synchronised norm layers (SyncBatchNorm, ABN ``sync``) each forward is itself a collective, so
    every process must then forward the same number of batches (a padded distributed sampler, or ``max_batches``).
    Momentum, ``num_batches_tracked`` and each module's train/eval mode are restored.

    Args:
        model: the network (a DDP wrapper works too).
        loader: yields batches; ``forward_fn`` turns one into a forward pass.
        forward_fn: ``forward_fn(model, batch, device)``; default: the model on the batch's normalised images (or
            ``batch[0]`` for tuples). Put autocast/channels_last here if training used them.
        device: passed to ``forward_fn`` (default: the device of the model's first parameter or buffer).
        max_batches: stop after this many batches (default: the whole loader).
    Returns:
        the number of batches forwarded.
    """
    layers = norm_layers(model)
    if not layers:
        log.warning("reestimate_bn: the model has no norm layer with running statistics; nothing to do")
        return 0
    if device is None:
        first = next(iter(model.parameters()), None)
        device = first.device if first is not None else layers[0][1].running_mean.device
    device = torch.device(device)
    forward_fn = forward_fn or _default_forward
    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1

    modes = {m: m.training for m in model.modules()}
    saved = []
    hooks = []
    for _, m in layers:
        acc_dtype = torch.float32 if m.running_mean.device.type == "mps" else torch.float64
        shift = m.running_mean.detach().to(acc_dtype).clone()
        if distributed:
            dist.broadcast(shift, src=0)  # the same shift on every process, so the sums add up
        moments = _Moments(shift)
        tracked = getattr(m, "num_batches_tracked", None)
        saved.append((m, moments, getattr(m, "momentum", None), tracked.clone() if tracked is not None else None))
        if hasattr(m, "momentum"):
            m.momentum = 0.0  # running stats untouched during the pass (we overwrite them anyway)
        hooks.append(m.register_forward_pre_hook(moments))
    batches = 0
    try:
        model.train()
        for batch in loader:
            if max_batches is not None and batches >= max_batches:
                break
            forward_fn(model, batch, device)
            batches += 1
    finally:
        for h in hooks:
            h.remove()
        for m, training in modes.items():
            m.train(training)
        for m, _, momentum, tracked in saved:
            if hasattr(m, "momentum"):
                m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)

    if distributed:
        flat = torch.cat([torch.cat([mo.count.view(1), mo.sum, mo.sumsq]) for _, mo, _, _ in saved])
        dist.all_reduce(flat)
        offset = 0
        for _, mo, _, _ in saved:
            c = mo.sum.numel()
            mo.count, mo.sum, mo.sumsq = flat[offset], flat[offset + 1:offset + 1 + c], flat[offset + 1 + c:offset + 1 + 2 * c]
            offset += 1 + 2 * c
    names = {m: n for n, m in layers}
    unseen = []
    for m, mo, _, _ in saved:
        n = float(mo.count)
        if n == 0:
            unseen.append(names[m])
            continue
        mean_shifted = mo.sum / n
        var = (mo.sumsq - mo.sum * mean_shifted) / max(n - 1.0, 1.0)
        m.running_mean.copy_((mo.shift + mean_shifted).to(m.running_mean.dtype))
        m.running_var.copy_(var.clamp_min(0).to(m.running_var.dtype))
    if unseen:
        log.warning("reestimate_bn: %d norm layer(s) saw no input and keep their statistics: %s", len(unseen),
                    ", ".join(unseen[:10]))
    log.info("reestimate_bn: re-estimated %d norm layers over %d batches", len(layers) - len(unseen), batches)
    return batches


# ------------------------------------------------------------------------------------------------ soft targets, LR
@torch.no_grad()
def soft_targets(teacher_outputs: Mapping[str, Tensor], temperature: float = 1.0) -> dict[str, Tensor]:
    """The teacher's soft labels: ``softmax(logits / T)`` over channels, per head, detached, float32.

    Args:
        teacher_outputs: {head: (B, K, h, w) logits}.
    Returns:
        {head: (B, K, h, w) probabilities}.
    """
    if temperature <= 0:
        raise ValueError(f"soft_targets: temperature must be > 0, got {temperature}")
    return {k: torch.softmax(v.detach().float() / temperature, dim=1) for k, v in teacher_outputs.items()}


def cosine_lr(epoch_in_cycle: int, cycle_epochs: int, lr_max: float, lr_min: float) -> float:
    """Per-epoch cosine annealing within a cycle: ``lr_min + (lr_max - lr_min) (1 + cos(pi e / L)) / 2``.

    Epoch ``e = 0`` (a cycle's first) gets ``lr_max``, and the rate decreases towards ``lr_min`` at ``e = L``
    (the first epoch of the next cycle, which restarts at ``lr_max``).
    """
    if cycle_epochs < 1 or not 0 <= epoch_in_cycle <= cycle_epochs:
        raise ValueError(f"cosine_lr: epoch_in_cycle = {epoch_in_cycle}, cycle_epochs = {cycle_epochs}; expected "
                         f"0 <= epoch_in_cycle <= cycle_epochs and cycle_epochs >= 1")
    return lr_min + (lr_max - lr_min) * 0.5 * (1.0 + math.cos(math.pi * epoch_in_cycle / cycle_epochs))


def poly_lr(step: int, total: int, base: float, power: float = 0.9, warmup_steps: int = 0) -> float:
    """Polynomial decay with an optional linear warm-up, as a function of the 0-based optimiser step.

    ``step < warmup_steps``: ``base * (step + 1) / warmup_steps``; then
    ``base * (1 - (step - warmup_steps) / (total - warmup_steps)) ** power``, and 0 from ``step >= total`` on.
    """
    if total < 1 or warmup_steps < 0 or (warmup_steps > 0 and warmup_steps >= total):
        raise ValueError(f"poly_lr: total = {total}, warmup_steps = {warmup_steps}; expected total >= 1 and "
                         f"0 <= warmup_steps < total")
    if step < warmup_steps:
        return base * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / (total - warmup_steps)
    return base * max(0.0, 1.0 - progress) ** power


def cycle_position(epoch: int, first_phase_epochs: int, cycle_epochs: int) -> tuple[int, int]:
    """``(k, epoch_in_cycle)`` of a 0-based epoch: ``k = 0`` in the first phase (epoch_in_cycle = epoch), else the
    1-based cycle index. The cycle ends (self-ensemble time) after the epoch with ``epoch_in_cycle == cycle_epochs-1``."""
    if epoch < first_phase_epochs:
        return 0, epoch
    if cycle_epochs < 1:
        raise ValueError(f"cycle_position: cycle_epochs = {cycle_epochs}; expected >= 1")
    k, e = divmod(epoch - first_phase_epochs, cycle_epochs)
    return k + 1, e
