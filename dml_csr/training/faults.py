"""What ends a training run early, and how cleanly: a stop signal (SIGINT/SIGTERM: checkpoint, then exit) and
weights that diverged (never saved, so the last good checkpoint stays the one to resume)."""
from __future__ import annotations

import logging
import signal
from typing import Optional

from torch import nn

from ..checkpoint import RunPaths
from ..distributed import unwrap_model

__all__ = ["StopSignal", "DivergedError", "DIVERGED", "check_weights"]

log = logging.getLogger(__name__)


class DivergedError(FloatingPointError):
    """The weights became non-finite or exploded; the message names the last good checkpoint (or says there is none)."""


DIVERGED = 1e6  # a parameter this large (in magnitude) means training has diverged: healthy ones stay below ~10


def check_weights(model: nn.Module, paths: RunPaths, where: str) -> None:
    """Raise :class:`DivergedError` when a parameter of ``model`` is not finite or exceeds :data:`DIVERGED`."""
    worst, name = 0.0, None
    for n, p in unwrap_model(model).named_parameters():
        m = float(p.detach().abs().max()) if p.numel() else 0.0
        if not m < DIVERGED:  # NaN compares false
            worst, name = m, n
            break
    if name is None:
        return
    last = paths.checkpoints()
    kept = f"the last good checkpoint is {last[-1]}" if last else "no checkpoint was written"
    raise DivergedError(f"training diverged by {where}: '{name}' reaches |w| = {worst:.3g} (limit {DIVERGED:g}); it "
                        f"was not saved and {kept} (lower train.lr?)")


class StopSignal:
    """SIGINT/SIGTERM set a flag; the loop checkpoints after the current step and exits. A second signal gives up
    at once (KeyboardInterrupt)."""

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
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum
        log.warning("signal %d received: checkpointing after the current step", signum)

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)

    def __call__(self) -> bool:
        return self.signal is not None
