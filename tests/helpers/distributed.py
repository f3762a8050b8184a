"""Two-process (gloo, CPU) test workers: a free port, and a clean way out of a spawned worker."""
from __future__ import annotations

import os
import socket
import sys
from typing import Callable

import torch.distributed as dist


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_worker(body: Callable[[], None]) -> None:
    """Run a spawned worker's ``body`` (which initialises the group and saves its results), then leave.

    On success: a barrier (no process leaves while another still talks to it), ``destroy_process_group``, and
    ``os._exit(0)``. Interpreter finalisation after a gloo group now and then aborts the process ("terminate called
    without an active exception", seen once in CI under load); the results are saved by then, so skipping the
    finalisation keeps a passed check from turning into a SIGABRT. An exception propagates as usual (spawn reports it).
    """
    try:
        body()
    except BaseException:
        if dist.is_initialized():
            dist.destroy_process_group()
        raise
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
