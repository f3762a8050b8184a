"""The authors' norm layer: batch norm scaled by |gamma| + eps, then an activation (inplace_abn's ABN semantics).

``ABN`` is a pure-PyTorch subclass of ``torch.nn.modules.batchnorm._BatchNorm`` (running statistics, eps 1e-5,
momentum 0.1), so batch-norm utilities (``torch.optim.swa_utils.update_bn``, BN re-estimation) find it. It computes

    y = act((x - mean) / sqrt(var + eps) * (|gamma| + eps) + beta)

with act = LeakyReLU(0.01) by default (inplace_abn's default), ``"relu"`` or ``"identity"``. ``abs_weight=False``
gives plain batch-norm semantics, used when :func:`convert_sync_abn` takes over ordinary ``BatchNorm`` layers.

Under DistributedDataParallel call :func:`convert_sync_abn` (NOT ``torch.nn.SyncBatchNorm.convert_sync_batchnorm``,
which would replace ABN by plain batch norm and lose the |gamma| semantics and the activation). Synchronised layers
all-reduce the per-channel mean and mean of squares (autograd-aware), so the gradient flows through the statistics of
every process exactly as with ``SyncBatchNorm``.

``norm: inplace_abn`` in the config selects the inplace_abn package's kernels (:func:`make_norm`); those modules are
not ``_BatchNorm`` subclasses.
"""
from __future__ import annotations

import logging
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["ABN", "NormFactory", "make_norm", "convert_sync_abn", "inplace_abn_available"]

log = logging.getLogger(__name__)

ACTIVATIONS = ("leaky_relu", "relu", "identity")

# (num_features, activation) -> norm module
NormFactory = Callable[..., nn.Module]


class ABN(_BatchNorm):
    """Activated batch norm with inplace_abn's arithmetic; input (B, C, *) -> same shape.

    Args:
        num_features: channels C.
        activation: "leaky_relu" (default, slope ``activation_param``), "relu" or "identity".
        activation_param: negative slope of the leaky ReLU (0.01 as in inplace_abn).
        eps: added to the variance and to |gamma|.
        momentum: running-statistics momentum (0.1).
        abs_weight: scale by |gamma| + eps (inplace_abn) when True, by gamma (plain batch norm) when False.
    """

    def __init__(self, num_features: int, activation: str = "leaky_relu", activation_param: float = 0.01,
                 eps: float = 1e-5, momentum: float = 0.1, abs_weight: bool = True) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum, affine=True, track_running_stats=True)
        if activation not in ACTIVATIONS:
            raise ValueError(f"ABN activation '{activation}' is unknown; expected one of {', '.join(ACTIVATIONS)}")
        self.activation = activation
        self.activation_param = activation_param
        self.abs_weight = abs_weight
        self.sync = False  # set by convert_sync_abn
        self.process_group = None

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"ABN expects input of shape (B, C, *), got {tuple(input.shape)}")

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, activation={self.activation}, slope={self.activation_param}, "
                f"abs_weight={self.abs_weight}, sync={self.sync}")

    def effective_weight(self) -> torch.Tensor:
        """The scale actually applied: |gamma| + eps (inplace_abn) or gamma."""
        return self.weight.abs() + self.eps if self.abs_weight else self.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        weight = self.effective_weight()
        if self.training:
            self.num_batches_tracked.add_(1)
        if self.training and self.sync and _world_size(self.process_group) > 1:
            y = _sync_batch_norm(x, self, weight)
        else:
            y = F.batch_norm(x, self.running_mean, self.running_var, weight, self.bias,
                             self.training, self.momentum, self.eps)
        return _activate(y, self.activation, self.activation_param)


def _activate(y: torch.Tensor, activation: str, slope: float) -> torch.Tensor:
    if activation == "leaky_relu":
        return F.leaky_relu(y, slope)
    if activation == "relu":
        return F.relu(y)
    return y


def _world_size(group) -> int:
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return 1
    return torch.distributed.get_world_size(group)


class _AllReduceSum(torch.autograd.Function):
    """Sum over the processes of ``group``, differentiable: every process's output depends on every input, so the
    gradient of an input is the sum of the output gradients of all processes (one more all-reduce)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group) -> torch.Tensor:  # type: ignore[override]
        ctx.group = group
        out = x.clone()
        torch.distributed.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        g = grad.contiguous().clone()
        torch.distributed.all_reduce(g, group=ctx.group)
        return g, None


def _sync_batch_norm(x: torch.Tensor, m: ABN, weight: torch.Tensor) -> torch.Tensor:
    """Training-mode batch norm with statistics pooled over every process of ``m.process_group``.

    Two passes, each one autograd-aware all-reduce: the element count and per-channel sums give the global mean,
    then the sums of squared deviations from that mean give the variance. No E[x^2] - E[x]^2 cancellation, so the
    statistics equal those of one process holding the whole batch to float rounding (shares may differ in size).
    Gradients reach every process's input through the shared mean and variance, as with
    ``torch.nn.SyncBatchNorm``. Running statistics get the unbiased pooled variance.
    """
    dims = [0] + list(range(2, x.dim()))
    xf = x if x.dtype == torch.float64 else x.float()  # half inputs: statistics in fp32
    c = x.size(1)
    shape = [1, c] + [1] * (x.dim() - 2)
    count = torch.full((1,), float(x.numel() // c), device=x.device, dtype=xf.dtype)
    sums = _AllReduceSum.apply(torch.cat([count, xf.sum(dims)]), m.process_group)
    n = sums[0]
    mean = sums[1:] / n
    dev = xf - mean.view(shape)
    var = (_AllReduceSum.apply((dev * dev).sum(dims), m.process_group) / n).clamp_min(0.0)
    with torch.no_grad():
        unbiased = var * (n / (n - 1).clamp_min(1.0))
        m.running_mean.mul_(1 - m.momentum).add_(mean.detach(), alpha=m.momentum)
        m.running_var.mul_(1 - m.momentum).add_(unbiased.detach(), alpha=m.momentum)
    scale = weight.to(xf.dtype) * torch.rsqrt(var + m.eps)
    shift = m.bias.to(xf.dtype) - mean * scale
    return (xf * scale.view(shape) + shift.view(shape)).to(x.dtype)


def inplace_abn_available() -> bool:
    """Whether the inplace_abn package can be imported."""
    try:
        import inplace_abn  # noqa: F401
    except Exception:
        return False
    return True


def make_norm(kind: str = "abn") -> NormFactory:
    """A factory ``f(num_features, activation="leaky_relu") -> module`` for the config's ``model.norm``.

    "abn" gives :class:`ABN`; "inplace_abn" gives ``inplace_abn.InPlaceABN`` (its CUDA/CPU kernels, same arithmetic),
    and raises naming the install command when the package is missing.
    """
    if kind == "abn":
        return lambda num_features, activation="leaky_relu": ABN(num_features, activation=activation)
    if kind == "inplace_abn":
        try:
            from inplace_abn import InPlaceABN
        except Exception as e:
            raise ImportError(
                f"model.norm='inplace_abn' but the inplace_abn package cannot be imported ({e}); install it "
                "(scripts/install_inplace_abn.sh builds it) or set model.norm=abn (same arithmetic)") from None
        return lambda num_features, activation="leaky_relu": InPlaceABN(
            num_features, activation=activation, activation_param=0.01)
    raise ValueError(f"unknown model.norm '{kind}'; expected 'abn' or 'inplace_abn'")


def convert_sync_abn(module: nn.Module, process_group: Optional[object] = None) -> nn.Module:
    """Make every norm layer of ``module`` synchronise batch statistics across processes; returns the module.

    ABN layers keep their class and semantics and only switch ``sync`` on; plain ``BatchNorm`` layers (torchvision
    backbones, the DDGCN's BatchNorm1d) become an ``ABN(abs_weight=False, activation="identity")`` with the same state,
    which is plain batch norm with the same synchronisation; timm's batch norm + activation layers (``BatchNormAct2d``)
    become the same followed by their own dropout and activation. Another ``_BatchNorm`` subclass is left as it is
    (with a warning): its forward is not known to be a batch norm. inplace_abn's ``InPlaceABN`` becomes
    its ``InPlaceABNSync`` on the process group (CUDA only: convert after moving the model to the GPU; on another
    device this raises, naming ``model.norm=abn``). Outside a distributed run, synchronised layers behave exactly as
    unsynchronised ones.
    """
    if isinstance(module, ABN):
        module.sync = True
        module.process_group = process_group
        return module
    if isinstance(module, _BatchNorm) and module.affine and module.track_running_stats:
        more = _more_than_batch_norm(module)
        if more is None:  # a batch norm whose forward does something else as well: left as it is
            log.warning("%s is not synchronised: its forward is more than a batch norm", type(module).__name__)
            return module
        new = (_ABNThen if more else ABN)(module.num_features, activation="identity", eps=module.eps,
                                          momentum=module.momentum if module.momentum is not None else 0.1,
                                          abs_weight=False)
        for name, child in more.items():
            new.add_module(name, child)
        # dtype and device first: loading float64 values into a fresh float32 module would round them
        new.to(device=module.weight.device, dtype=module.weight.dtype).load_state_dict(module.state_dict())
        new.train(module.training)
        new.requires_grad_(module.weight.requires_grad)
        new.sync = True
        new.process_group = process_group
        return new
    iabn = _inplace_abn_sync_replacement(module, process_group)
    if iabn is not None:
        return iabn
    for name, child in module.named_children():
        new_child = convert_sync_abn(child, process_group)
        if new_child is not child:
            setattr(module, name, new_child)
    return module


_PLAIN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def _more_than_batch_norm(module: _BatchNorm) -> Optional[dict[str, nn.Module]]:
    """{} for a plain batch norm; the children a norm+activation layer applies after the norm, in order (timm's
    ``BatchNormAct2d``: ``drop`` then ``act``); None for another subclass, whose forward is unknown."""
    if type(module) in _PLAIN:
        return {}
    children = dict(module.named_children())
    return children if list(children) == ["drop", "act"] else None


class _ABNThen(ABN):
    """A plain (``abs_weight=False``, identity) ABN followed by the replaced layer's ``drop`` and ``act`` children,
    kept under their names: the state_dict does not change."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(super().forward(x)))


def _inplace_abn_sync_replacement(module: nn.Module, process_group: Optional[object]) -> Optional[nn.Module]:
    if type(module).__name__ != "InPlaceABN" or not type(module).__module__.startswith("inplace_abn"):
        return None
    if module.weight.device.type != "cuda":
        raise ValueError(f"model.norm=inplace_abn with model.sync_bn=true on {module.weight.device.type}: inplace_abn "
                         f"synchronises CUDA tensors only (its statistics reduction is a CUDA kernel); use "
                         f"model.norm=abn (the same arithmetic, synchronised on any device) or model.sync_bn=false")
    from inplace_abn import InPlaceABNSync

    # the group is passed now: InPlaceABNSync's default is torch.distributed.group.WORLD as it was when inplace_abn
    # was imported, None when that was before init_process_group, and then it silently does not synchronise
    group = process_group
    if group is None and torch.distributed.is_available() and torch.distributed.is_initialized():
        group = torch.distributed.group.WORLD
    new = InPlaceABNSync(module.num_features, eps=module.eps, momentum=module.momentum,
                         activation=module.activation, activation_param=module.activation_param, group=group)
    new.to(device=module.weight.device, dtype=module.weight.dtype).load_state_dict(module.state_dict())
    new.train(module.training)
    return new
