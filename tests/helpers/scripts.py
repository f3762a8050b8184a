"""Run ``scripts/NAME.py ARGS`` inside the test process: its ``main(argv)`` under the scripts' one-line error handling,
with what it prints and the exit status it would give. A subprocess would add an interpreter start and a torch import
(seconds a call on 2 cores) and nothing else; tests that need one (signals, torchrun, a clean environment) keep it."""
from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import sys
from dataclasses import dataclass

import torch

from . import ROOT

SCRIPTS = os.path.join(ROOT, "scripts")


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def load_script(name: str):
    """``scripts/NAME.py`` as a module (its folder joins ``sys.path`` for ``_common``)."""
    if SCRIPTS not in sys.path:
        sys.path.insert(0, SCRIPTS)
    spec = importlib.util.spec_from_file_location(f"scripts_{name}", os.path.join(SCRIPTS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(name: str, *argv: str) -> Result:
    """As ``python scripts/NAME.py ARGV`` would run, on one thread (as the subprocess tests' OMP_NUM_THREADS=1)."""
    module = load_script(name)
    out, err = io.StringIO(), io.StringIO()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                if hasattr(module, "run_main"):
                    module.run_main(lambda: module.main(list(argv)))
                code = module.main(list(argv)) if not hasattr(module, "run_main") else 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        torch.set_num_threads(threads)
    return Result(code or 0, out.getvalue(), err.getvalue())
