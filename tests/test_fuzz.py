"""Fuzzing of the image reader and the config loader (tests/helpers/fuzz.py), seeded and bounded in time, each in a
child process whose address space is capped: only the project's own errors may escape, and memory stays bounded.
The longer run whose figures the README gives: ``python tests/helpers/fuzz.py reader --seconds 600 --seed 1``."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import ROOT
from helpers.tiny_checkpoint import subprocess_env

FUZZ = os.path.join(ROOT, "tests", "helpers", "fuzz.py")
SECONDS = {"reader": 15, "config": 15}  # with two interpreter starts, under a minute together


def _fuzz(kind: str) -> dict:
    env = dict(subprocess_env(), OPENCV_LOG_LEVEL="OFF", PYTHONPATH=ROOT)
    r = subprocess.run([sys.executable, FUZZ, kind, "--seconds", str(SECONDS[kind]), "--seed", "0"],
                       capture_output=True, text=True, timeout=180, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("kind", ["reader", "config"])
def test_fuzzed_inputs_end_in_the_projects_own_errors_within_a_memory_bound(kind):
    figures = _fuzz(kind)
    assert figures["escaped"] == [], figures["escaped"][:3]
    assert figures["peak_rss_mb"] < 1024 and figures["address_space_cap_mb"] > 0
    outcomes = figures["outcomes"]
    if kind == "reader":
        # the mutations reach every stage of the reader: files decoded, and refusals by size, header and decoder
        assert figures["inputs"] >= 500 and outcomes.get("decoded", 0) > 0
        assert outcomes.get("pixels", 0) > 0 and outcomes.get("corrupt", 0) > 0
    else:
        assert figures["inputs"] >= 30 and outcomes.get("loaded", 0) > 0 and outcomes.get("refused", 0) > 0
