"""Exact batch-norm re-estimation (paper sec. 3.3): after the self-ensemble averages weights, every norm layer's running
statistics are replaced by the mean and variance of its input over the whole training set.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Iterable, Mapping, Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm, _NormBase

from ..data.transforms import batch_input

__all__ = ["norm_layers", "reestimate_bn"]

log = logging.getLogger(__name__)


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
    """Per-channel shifted sums of one norm layer's input: count, sum(x - s), sum((x - s)^2), in float64.

    A forward pre-hook, so it sees the input before any in-place normalisation."""

    def __init__(self, shift: Tensor) -> None:
        self.shift = shift
        self.count = torch.zeros((), dtype=shift.dtype, device=shift.device)
        self.sum = torch.zeros_like(shift)
        self.sumsq = torch.zeros_like(shift)

    def __call__(self, module: nn.Module, inputs: tuple) -> None:
        x = inputs[0].detach()
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
    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    moments = _watch(layers, distributed)
    batches = _forward_all(model, loader, forward_fn or _default_forward, torch.device(device), moments,
                           max_batches)
    if distributed:
        _all_reduce(list(moments.values()))
    _write_statistics(layers, moments)
    log.info("reestimate_bn: re-estimated the norm layers over %d batches", batches)
    return batches


def _watch(layers: list[tuple[str, nn.Module]], distributed: bool) -> dict[nn.Module, _Moments]:
    """A :class:`_Moments` per layer, shifted by its running mean (the same shift on every process)."""
    moments = {}
    for _, m in layers:
        acc_dtype = torch.float32 if m.running_mean.device.type == "mps" else torch.float64
        shift = m.running_mean.detach().to(acc_dtype).clone()
        if distributed:
            dist.broadcast(shift, src=0)  # so that the sums of all processes add up
        moments[m] = _Moments(shift)
    return moments


def _forward_all(model: nn.Module, loader: Iterable, forward_fn: Callable, device: torch.device,
                 moments: dict[nn.Module, _Moments], max_batches: Optional[int]) -> int:
    """Forward ``loader`` in train mode with the hooks attached; restores modes, momenta and counters."""
    modes = {m: m.training for m in model.modules()}
    saved = {m: (getattr(m, "momentum", None), getattr(m, "num_batches_tracked", None)) for m in moments}
    saved = {m: (mom, t.clone() if t is not None else None) for m, (mom, t) in saved.items()}
    hooks = []
    for m, mo in moments.items():
        if hasattr(m, "momentum"):
            m.momentum = 0.0  # running stats untouched during the pass (they are overwritten afterwards)
        hooks.append(m.register_forward_pre_hook(mo))
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
        for m, (momentum, tracked) in saved.items():
            if hasattr(m, "momentum"):
                m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)
    return batches


def _all_reduce(moments: list[_Moments]) -> None:
    """Sum every layer's count and sums over the processes, in one all-reduce."""
    flat = torch.cat([torch.cat([mo.count.view(1), mo.sum, mo.sumsq]) for mo in moments])
    dist.all_reduce(flat)
    offset = 0
    for mo in moments:
        c = mo.sum.numel()
        mo.count, mo.sum = flat[offset], flat[offset + 1:offset + 1 + c]
        mo.sumsq = flat[offset + 1 + c:offset + 1 + 2 * c]
        offset += 1 + 2 * c


def _write_statistics(layers: list[tuple[str, nn.Module]], moments: dict[nn.Module, _Moments]) -> None:
    """running_mean = the mean, running_var = the unbiased variance; a layer that saw nothing keeps its own."""
    unseen = []
    for name, m in layers:
        mo = moments[m]
        n = float(mo.count)
        if n == 0:
            unseen.append(name)
            continue
        mean_shifted = mo.sum / n
        var = (mo.sumsq - mo.sum * mean_shifted) / max(n - 1.0, 1.0)
        m.running_mean.copy_((mo.shift + mean_shifted).to(m.running_mean.dtype))
        m.running_var.copy_(var.clamp_min(0).to(m.running_var.dtype))
    if unseen:
        log.warning("reestimate_bn: %d norm layer(s) saw no input and keep their statistics: %s", len(unseen),
                    ", ".join(unseen[:10]))
