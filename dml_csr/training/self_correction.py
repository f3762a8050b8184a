"""Cyclical self-regulation (paper sec. 3.3): the state a run carries through its cycles, and the self-ensemble of
eq. 6.

:class:`SelfRegulation` holds the best first-phase weights, the running sum of the current cycle's epoch-end models
and the teacher; the trainer asks it for the teacher of an epoch, hands it each epoch's student, and at a cycle's end
it forms the aggregate, has its norm statistics re-estimated and makes it the next teacher. The student keeps its own
weights throughout.

Index conventions:
    * Epochs are 0-based. The first phase is epochs ``0 .. E-1``; cycle ``k`` (1-based, as in the paper,
      ``1 <= k <= K``) is epochs ``E + (k-1) N .. E + k N - 1`` with N epochs per cycle
      (:func:`dml_csr.config.cycle_position`, the schedule's one statement).
    * :func:`self_ensemble` at the end of cycle k uses that same k: ``M = k/(k+1) M_best + 1/((k+1) N) sum_n M_n``,
      with the N epoch-end models of cycle k accumulated in a :class:`RunningSum`. So after the first cycle the best
      model and the cycle's mean weigh 1/2 each, after the fifth 5/6 and 1/6.
"""
from __future__ import annotations

import copy
import logging
from typing import Any, Callable, Mapping, Optional

import torch
from torch import Tensor, nn

from ..config import cycle_position
from ..distributed import unwrap_model

__all__ = ["SelfRegulation", "RunningSum", "self_ensemble", "cycle_position"]

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


def self_ensemble(best_state: Mapping[str, Tensor], running_sum: RunningSum, k: int) -> dict[str, Tensor]:
    """Eq. 6: ``M = k/(k+1) * M_best + 1/((k+1) N) * sum_n M_n``.

    Args:
        best_state: state dict of the best model so far.
        running_sum: the :class:`RunningSum` of the cycle's N models (N = its ``count``).
        k: the 1-based index of the cycle that just ended (``k = 0`` gives the plain mean of the cycle's models).
    Returns:
        a new state dict with ``best_state``'s keys, dtypes and devices. Integer tensors (``num_batches_tracked``)
        come from the latest model of the running sum; batch-norm statistics are averaged like weights and should be
        re-estimated afterwards (:func:`reestimate_bn`).
    """
    n, sums, last = running_sum.count, running_sum.sums, running_sum.last
    if n < 1:
        raise ValueError("self_ensemble: the running sum holds no model; expected the cycle's models (>= 1)")
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


# ------------------------------------------------------------------------------------------------ the run's state
def model_state(model: nn.Module) -> dict[str, Tensor]:
    """A detached copy of the bare network's ``state_dict()`` (DDP / compile wrappers unwrapped)."""
    return {k: v.detach().clone() for k, v in unwrap_model(model).state_dict().items()}


class SelfRegulation:
    """What cyclical self-regulation carries from epoch to epoch, and its three moments.

    * :meth:`teacher_for_epoch`: None in the first phase; in cycle k the frozen teacher ``T_{k-1}`` (``M_best``, the
      best first-phase student on the validation split, for k = 1).
    * :meth:`after_epoch`: during a cycle, the epoch-end student joins the cycle's running sum.
    * :meth:`end_of_cycle`: after a cycle's last epoch, eq. 6 aggregates the current teacher with the cycle's
      students, ``reestimate`` gives the aggregate its norm statistics, and it becomes the next teacher.

    :meth:`observe` keeps the best first-phase student; :meth:`state_dict` / :meth:`load_state_dict` round-trip
    everything through a checkpoint (tensors and numbers only, for ``weights_only`` loads).

    Args:
        first_phase_epochs: E, the epochs before the first cycle.
        cycle_epochs: N, the epochs of one cycle.
    """

    def __init__(self, first_phase_epochs: int, cycle_epochs: int) -> None:
        self.first_phase_epochs = first_phase_epochs
        self.cycle_epochs = cycle_epochs
        self.best_state: Optional[dict[str, Tensor]] = None  # best first-phase student
        self.phase1_best: Optional[float] = None  # its validation score
        self.teacher_state: Optional[dict[str, Tensor]] = None  # M_best during cycle 1, then the aggregate M_k
        self.running = RunningSum(device="cpu")  # the current cycle's epoch-end students
        self._teacher: Optional[nn.Module] = None  # teacher_state in a frozen copy of the network

    def position(self, epoch: int) -> tuple[int, int]:
        """``(cycle k, epoch within it)`` of a 0-based epoch (k = 0: the first phase); see :func:`cycle_position`."""
        return cycle_position(epoch, self.first_phase_epochs, self.cycle_epochs)

    def ends_cycle(self, epoch: int) -> bool:
        """Whether ``epoch`` is the last of a cycle (the self-ensemble follows it)."""
        k, e = self.position(epoch)
        return k > 0 and e == self.cycle_epochs - 1

    def observe(self, epoch: int, score: float, student: nn.Module) -> None:
        """A validation score of the student after ``epoch``: the first phase's best is kept (ties keep the first)."""
        if self.position(epoch)[0] == 0 and score > (-float("inf") if self.phase1_best is None else self.phase1_best):
            self.phase1_best = float(score)
            self.best_state = model_state(student)

    def teacher_for_epoch(self, epoch: int, student: nn.Module) -> Optional[nn.Module]:
        """The frozen teacher of ``epoch``'s cycle, or None in the first phase."""
        if self.position(epoch)[0] == 0:
            return None
        if self.teacher_state is None:  # the cycles begin: the best first-phase student teaches cycle 1
            self.teacher_state = self.best_state if self.best_state is not None else model_state(student)
        if self._teacher is None:
            self._teacher = self._frozen(student, self.teacher_state)
        return self._teacher

    def after_epoch(self, epoch: int, student: nn.Module) -> None:
        """In a cycle, add the epoch-end student to the cycle's running sum."""
        if self.position(epoch)[0] > 0:
            self.running.add(unwrap_model(student).state_dict())

    def end_of_cycle(self, epoch: int, student: nn.Module,
                     reestimate: Callable[[nn.Module], Any]) -> Optional[nn.Module]:
        """After the last epoch of cycle k: ``M_k`` of eq. 6 (``M_best`` or ``M_{k-1}`` with this cycle's sum),
        with norm statistics from ``reestimate(model)``, becomes the teacher; returns it (None on other epochs)."""
        if not self.ends_cycle(epoch):
            return None
        k = self.position(epoch)[0]
        base = self.teacher_state if self.teacher_state is not None else model_state(student)
        teacher = self._frozen(student, self_ensemble(base, self.running, k))
        reestimate(teacher)
        teacher.eval().requires_grad_(False)
        self.teacher_state = model_state(teacher)
        self._teacher = teacher
        self.running.reset()
        return teacher

    @staticmethod
    def _frozen(student: nn.Module, state: Mapping[str, Tensor]) -> nn.Module:
        m = copy.deepcopy(unwrap_model(student))
        m.load_state_dict(state)
        return m.eval().requires_grad_(False)

    def state_dict(self) -> dict[str, Any]:
        return {"best_state": self.best_state, "phase1_best": self.phase1_best, "teacher_state": self.teacher_state,
                "running_sum": self.running.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best_state, self.teacher_state = state.get("best_state"), state.get("teacher_state")
        self.phase1_best = state.get("phase1_best")
        self.running.reset()
        if state.get("running_sum") is not None:
            self.running.load_state_dict(state["running_sum"])
        self._teacher = None  # rebuilt from teacher_state when an epoch asks for it
