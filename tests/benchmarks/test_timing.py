"""The benchmarks' timer counts the page faults of a timed run: the fresh memory a path touches, which moves CPU
latencies by tenths of a second on the authors' model."""
import mmap

import torch

from dml_csr.benchmarks.timing import format_row, result_row, time_fn

CPU = torch.device("cpu")


def test_a_run_that_touches_fresh_memory_counts_its_pages_and_one_that_does_not_counts_none():
    size = 64 * 2**20
    pages = size // 4096

    def touch():  # fresh anonymous memory each run, as glibc gives a large block that it mapped anew
        m = mmap.mmap(-1, size)
        if hasattr(mmap, "MADV_NOHUGEPAGE"):
            m.madvise(mmap.MADV_NOHUGEPAGE)  # 4 KiB pages, whatever the kernel's huge-page setting
        for offset in range(0, size, 4096):
            m[offset] = 1  # one write a page
        first = m[0]
        m.close()
        return first

    fresh = time_fn(touch, CPU, warmup=1, repeats=3)
    assert pages <= fresh.faults <= pages * 1.2, fresh.faults
    assert fresh.seconds > 0 and fresh.out == 1
    kept = torch.zeros(size, dtype=torch.uint8)
    same = time_fn(lambda: kept[::4096].fill_(2), CPU, warmup=1, repeats=3)
    assert same.faults < 0.05 * pages, same.faults  # its pages were touched once before the timed runs


def test_the_row_carries_and_prints_the_faults():
    timed = time_fn(lambda: torch.ones(2**20).sum(), CPU, warmup=0, repeats=2)
    row = result_row("fp32 eager", "fp32", False, 1, timed, timed.seconds, None)
    assert row["page_faults"] == timed.faults and row["ratio_vs_fp32_eager"] == 1.0
    assert f"{timed.faults:,.0f}" in format_row(row)
