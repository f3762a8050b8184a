"""The Makefile's one environment: the active virtual environment (or conda env) when it imports torch, VENV=DIR when
given, else .venv (read from ``make -n``: what make would run)."""
import os
import shutil
import subprocess
import sys

import pytest
from helpers import ROOT

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def _plan(target: str, env: dict, *args: str) -> str:
    # MAKEFLAGS carries a parent make's command-line variables (CI runs `make test VENV=.venv`) into this make
    dropped = ("VIRTUAL_ENV", "CONDA_PREFIX", "VENV", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")
    clean = {k: v for k, v in os.environ.items() if k not in dropped}
    r = subprocess.run(["make", "-n", target, *args], cwd=ROOT, env={**clean, **env}, capture_output=True,
                       text=True, check=True)
    return r.stdout


@pytest.mark.parametrize("variable", ["VIRTUAL_ENV", "CONDA_PREFIX"])
def test_an_active_environment_with_torch_is_used_and_no_venv_is_made(variable):
    here = sys.prefix  # the tests' own environment imports torch
    for target in ("demo", "test"):
        plan = _plan(target, {variable: here})
        assert f"scripts/setup_venv.sh {here}" in plan and f"{here}/bin/python" in plan
        assert "setup_venv.sh .venv" not in plan and not plan.startswith(".venv") and "\n.venv" not in plan


def test_an_environment_without_torch_or_none_falls_back_to_dot_venv(tmp_path):
    fake = tmp_path / "env"
    (fake / "bin").mkdir(parents=True)
    (fake / "bin" / "python").write_text("#!/bin/sh\nexit 1\n")  # no torch there
    (fake / "bin" / "python").chmod(0o755)
    assert "scripts/setup_venv.sh .venv" in _plan("demo", {"VIRTUAL_ENV": str(fake)})
    assert ".venv/bin/python -m pytest -q tests" in _plan("test", {})
    assert "/opt/env/bin/python -m pytest" in _plan("test", {"VIRTUAL_ENV": sys.prefix}, "VENV=/opt/env")
