"""The timer of the benchmarks: the median of timed runs after warm-up, with the peak memory during them, and the
table row every benchmark prints."""
from __future__ import annotations

import os
import statistics
import threading
import time
from typing import Callable, Optional

import torch

__all__ = ["PeakRSS", "time_fn", "HEADER", "format_row", "result_row"]


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


def time_fn(fn: Callable[[], torch.Tensor], device: torch.device, warmup: int, repeats: int):
    """Median seconds of ``fn`` and peak memory (MiB) during the timed runs; returns (median, peak, last output).
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
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = fn()
            sync()
            times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else rss.peak
    return statistics.median(times), peak, out


PATH_WIDTH = 32  # the longest path label ("onnxruntime int8 (static QDQ)") and a space
HEADER = (f"{'path':<{PATH_WIDTH}}{'batch':>6}{'latency ms':>12}{'img/s':>9}{'x fp32':>8}{'peak MiB':>10}"
          f"{'labels same':>13}")


def format_row(r: dict) -> str:
    """One result row under :data:`HEADER`."""
    agree = "" if r["label_agreement"] is None else f"{100 * r['label_agreement']:.2f}%"
    return (f"{r['path']:<{PATH_WIDTH}}{r['batch']:>6}{r['latency_ms']:>12.1f}{r['throughput_img_s']:>9.2f}"
            f"{r['ratio_vs_fp32_eager']:>8.3f}{r['peak_mem_mib']:>10.0f}{agree:>13}")


def result_row(path: str, precision: str, channels_last: bool, batch: int, latency: float, base_latency: float,
               peak: float, agreement: Optional[float], **extra) -> dict:
    """One row of the results (and of the JSON), printed under the table's header as it is made."""
    row = {"path": path, "precision": precision, "channels_last": channels_last, "batch": batch,
           "latency_ms": latency * 1e3, "throughput_img_s": batch / latency,
           "ratio_vs_fp32_eager": latency / base_latency, "peak_mem_mib": peak, "label_agreement": agreement, **extra}
    print(format_row(row), flush=True)
    return row
