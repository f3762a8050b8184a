"""Progress for people and for logs: a bar on a terminal, a plain line now and then in a redirected log.

A bar redraws itself with carriage returns, which turn a log file into one endless line; so :func:`progress` gives a
tqdm bar only when the stream is a terminal, and otherwise writes a line at every ``every`` fraction of the work
(0.1: at 10 %, 20 %, ...; 1.0: one line when it ends, as the trainer does per epoch).
"""
from __future__ import annotations

import sys
import time
from typing import Any, Optional, TextIO

__all__ = ["progress", "Lines"]


def progress(total: Optional[int], desc: str, unit: str = "it", *, enabled: bool = True, initial: int = 0,
             every: float = 0.1, stream: Optional[TextIO] = None):
    """A progress display for ``total`` units: a tqdm bar on a terminal, :class:`Lines` in a log, nothing when
    ``enabled`` is False. Use it as tqdm: ``update(n)``, ``set_postfix(**values)``, ``close()`` or a ``with``."""
    stream = sys.stderr if stream is None else stream
    if enabled and getattr(stream, "isatty", lambda: False)():
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit=unit, initial=initial, file=stream, dynamic_ncols=True)
    return Lines(total, desc, unit, initial=initial, every=every, stream=stream, enabled=enabled)


class Lines:
    """tqdm's interface, written as a line per ``every`` fraction of ``total`` (and one at the end) to ``stream``."""

    def __init__(self, total: Optional[int], desc: str, unit: str = "it", *, initial: int = 0, every: float = 0.1,
                 stream: Optional[TextIO] = None, enabled: bool = True):
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.every, self.stream, self.enabled = every, stream if stream is not None else sys.stderr, enabled
        self.postfix: dict[str, Any] = {}
        self._start, self._start_n, self._next = time.time(), initial, self._after(initial)
        self._closed = False

    def _after(self, n: int) -> float:
        """The count at which the next line is due."""
        if not self.total:
            return float("inf")
        step = max(1.0, self.every * self.total)
        return (n // step + 1) * step

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.n >= self._next and self.n < (self.total or 0):
            self._line()
            self._next = self._after(self.n)

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:
        self.postfix = values

    def _line(self) -> None:
        if not self.enabled:
            return
        done = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        pct = f" ({100 * self.n / self.total:.0f} %)" if self.total else ""
        seconds = time.time() - self._start
        rate = (self.n - self._start_n) / seconds if seconds > 0 else 0.0
        extra = "".join(f", {k} {v}" for k, v in self.postfix.items())
        print(f"{self.desc}: {done} {self.unit}{pct}, {seconds:.0f} s, {rate:.2f} {self.unit}/s{extra}",
              file=self.stream, flush=True)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._line()

    def __enter__(self) -> "Lines":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
