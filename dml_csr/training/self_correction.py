"""Cyclical self-regulation (paper sec. 3.3): the state a run carries through its cycles, and the self-ensemble in
its two forms: the paper's eq. 6 (:func:`self_ensemble`) and the authors' code's running average
(:func:`moving_average`, SCHP's ``moving_average(net1, net2, alpha)``: ``net1 = (1 - alpha) net1 + alpha net2``).

:class:`SelfRegulation` holds the best first-phase weights, the running sum of the current cycle's epoch-end models
and the teacher; the trainer asks it for the teacher of an epoch, hands it each epoch's student, and at a cycle's end
it forms the aggregate, has its norm statistics re-estimated and makes it the next teacher. The student keeps its own
weights throughout.

Index conventions:
    * Epochs are 0-based. The first phase is epochs ``0 .. E-1``; cycle ``k`` (1-based, as in the paper,
      ``1 <= k <= K``) is epochs ``E + (k-1) N .. E + k N - 1`` with N epochs per cycle
      (:func:`dml_csr.training.schedule.cycle_position`, the schedule's one statement).
    * :func:`self_ensemble` at the end of cycle k uses that same k: ``M = k/(k+1) M_best + 1/((k+1) N) sum_n M_n``,
      with the N epoch-end models of cycle k accumulated in a :class:`RunningSum`. So after the first cycle the best
      model and the cycle's mean weigh 1/2 each, after the fifth 5/6 and 1/6.
    * ``train.self_ensemble: moving_average`` (the official preset, the authors' ``train.py``): an aggregation after
      the first phase's last epoch and after every cycle's last one, ``A = (1 - a) A + a S`` with ``S`` the student
      and ``a = 1/(n+1)``, n the aggregations so far (n = k after cycle k). The first aggregate is the last
      first-phase student (not the best one), then a running mean of the end-of-cycle students: after cycle k,
      ``A = (S_E + S_1 + ... + S_k) / (k + 1)``. Each aggregate gets its norm statistics re-estimated and teaches
      the next cycle.
"""
from __future__ import annotations

import copy
import logging
from typing import Any, Callable, Mapping, Optional

import torch
from torch import Tensor, nn

from .schedule import cycle_position
from ..distributed import unwrap_model

__all__ = ["SelfRegulation", "RunningSum", "self_ensemble", "moving_average", "ENSEMBLES", "cycle_position"]

ENSEMBLES = ("eq6", "moving_average")

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


def moving_average(average: Optional[Mapping[str, Tensor]], new: Mapping[str, Tensor],
                   alpha: float) -> dict[str, Tensor]:
    """The authors' self-ensemble step (SCHP's ``moving_average``): ``(1 - alpha) average + alpha new`` for every
    floating tensor, computed in float64 and returned in ``new``'s dtypes and devices; integer tensors
    (``num_batches_tracked``) are ``new``'s. ``alpha = 1`` (the first aggregation, ``average`` may be None) returns a
    copy of ``new``. Norm statistics are averaged like weights and should be re-estimated afterwards."""
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"moving_average: alpha = {alpha}; expected 0 < alpha <= 1 (1/(n+1) after n aggregations)")
    if average is None or alpha == 1.0:
        return {name: t.detach().clone() for name, t in new.items()}
    missing = sorted(set(new) - set(average))
    if missing:
        raise KeyError(f"moving_average: the average lacks {missing[:5]}; average state dicts of one architecture")
    out: dict[str, Tensor] = {}
    for name, t in new.items():
        if t.is_floating_point():
            m = (1.0 - alpha) * average[name].to(t.device, torch.float64) + alpha * t.detach().double()
            out[name] = m.to(t.dtype)
        else:
            out[name] = t.detach().clone()
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

    With ``ensemble="moving_average"`` (the authors' code) the aggregations come after the first phase (when there
    are cycles) and after every cycle, by :func:`moving_average` of the teacher and the student; the running sum
    and ``M_best`` take no part.

    :meth:`observe` keeps the best first-phase student; :meth:`state_dict` / :meth:`load_state_dict` round-trip
    everything through a checkpoint (tensors and numbers only, for ``weights_only`` loads).

    Args:
        first_phase_epochs: E, the epochs before the first cycle.
        cycle_epochs: N, the epochs of one cycle.
        ensemble: "eq6" (the paper) or "moving_average" (the authors' code).
        cycles: K, the cycles of the run (the authors' code aggregates after the first phase only when K > 0).
    """

    def __init__(self, first_phase_epochs: int, cycle_epochs: int, ensemble: str = "eq6", cycles: int = 1) -> None:
        if ensemble not in ENSEMBLES:
            raise ValueError(f"SelfRegulation: ensemble = {ensemble!r}; expected one of {', '.join(ENSEMBLES)}")
        self.first_phase_epochs = first_phase_epochs
        self.cycle_epochs = cycle_epochs
        self.ensemble, self.cycles = ensemble, cycles
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

    def aggregates_after(self, epoch: int) -> bool:
        """Whether a self-ensemble follows ``epoch``: a cycle's last epoch, and with the authors' running average
        also the first phase's last one (when cycles follow)."""
        if self.ensemble == "moving_average" and self.cycles > 0 and epoch == self.first_phase_epochs - 1:
            return True
        return self.ends_cycle(epoch)

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
        """In a cycle, add the epoch-end student to the cycle's running sum (eq. 6 only)."""
        if self.position(epoch)[0] > 0 and self.ensemble == "eq6":
            self.running.add(unwrap_model(student).state_dict())

    def end_of_cycle(self, epoch: int, student: nn.Module,
                     reestimate: Callable[[nn.Module], Any]) -> Optional[nn.Module]:
        """After the last epoch of cycle k: ``M_k`` of eq. 6 (``M_best`` or ``M_{k-1}`` with this cycle's sum),
        with norm statistics from ``reestimate(model)``, becomes the teacher; returns it (None on other epochs).
        With the authors' running average, after the first phase too: ``moving_average(teacher, student, 1/(k+1))``
        (k = 0 after the first phase)."""
        if not self.aggregates_after(epoch):
            return None
        k = self.position(epoch)[0]
        if self.ensemble == "moving_average":
            state = moving_average(self.teacher_state, unwrap_model(student).state_dict(), 1.0 / (k + 1))
        else:
            base = self.teacher_state if self.teacher_state is not None else model_state(student)
            state = self_ensemble(base, self.running, k)
        teacher = self._frozen(student, state)
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
