"""The timer of the benchmarks: the median of timed runs after warm-up, with the peak memory and the page faults
during them, and the table row every benchmark prints.

The page faults are there because they move CPU latencies: glibc's malloc gives large freed blocks back to the kernel,
and the next forward that allocates them again pays a fault (and a page of zeros) for every 4 KiB it touches. The
authors' model at 473x473 touches about a gigabyte of fresh pages a forward in a fresh process; how many depends on
the allocator's state, which whatever ran before in the process changes (README, "Deploy on a CPU")."""
from __future__ import annotations

import os
import resource
import statistics
import threading
import time
from typing import Any, Callable, NamedTuple, Optional

import torch

__all__ = ["PeakRSS", "Timed", "time_fn", "minor_faults", "HEADER", "format_row", "result_row"]


class PeakRSS:
    """Peak resident set size (MiB) of this process while the context is open, sampled every 2 ms."""

    def __enter__(self):
        self.peak, self._stop = _rss_mib(), False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop:
            self.peak = max(self.peak, _rss_mib())
            time.sleep(0.002)

    def __exit__(self, *exc):
        self._stop = True
        self._thread.join()


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def minor_faults() -> int:
    """Minor page faults of this process so far (pages the kernel mapped, zeroed or not, without reading a disk)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


class Timed(NamedTuple):
    seconds: float  # median of the timed runs
    peak_mib: float  # CUDA max_memory_allocated, or the CPU's peak resident set size
    faults: float  # minor page faults a timed run (mean; the whole process's, threads included)
    out: Any  # the last output


def time_fn(fn: Callable[[], torch.Tensor], device: torch.device, warmup: int, repeats: int) -> Timed:
    """Median seconds of ``fn``, peak memory (MiB) and page faults a run during the timed runs, and the last output.
    Peak memory: CUDA ``max_memory_allocated``; on the CPU the peak resident set size."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    for _ in range(warmup):
        out = fn()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    with PeakRSS() as rss:
        faults = minor_faults()
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = fn()
            sync()
            times.append(time.perf_counter() - t0)
        faults = (minor_faults() - faults) / repeats
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else rss.peak
    return Timed(statistics.median(times), peak, faults, out)


PATH_WIDTH = 32  # the longest path label ("onnxruntime int8 (static QDQ)") and a space
HEADER = (f"{'path':<{PATH_WIDTH}}{'batch':>6}{'latency ms':>12}{'img/s':>9}{'x fp32':>8}{'peak MiB':>10}"
          f"{'faults/run':>11}{'labels same':>13}")


def format_row(r: dict) -> str:
    """One result row under :data:`HEADER`."""
    agree = "" if r["label_agreement"] is None else f"{100 * r['label_agreement']:.2f}%"
    return (f"{r['path']:<{PATH_WIDTH}}{r['batch']:>6}{r['latency_ms']:>12.1f}{r['throughput_img_s']:>9.2f}"
            f"{r['ratio_vs_fp32_eager']:>8.3f}{r['peak_mem_mib']:>10.0f}{r['page_faults']:>11,.0f}{agree:>13}")


def result_row(path: str, precision: str, channels_last: bool, batch: int, timed: Timed, base_latency: float,
               agreement: Optional[float], **extra) -> dict:
    """One row of the results (and of the JSON), printed under the table's header as it is made."""
    latency = timed.seconds
    row = {"path": path, "precision": precision, "channels_last": channels_last, "batch": batch,
           "latency_ms": latency * 1e3, "throughput_img_s": batch / latency,
           "ratio_vs_fp32_eager": latency / base_latency, "peak_mem_mib": timed.peak_mib,
           "page_faults": timed.faults, "label_agreement": agreement, **extra}
    print(format_row(row), flush=True)
    return row
