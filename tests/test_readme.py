"""The README runs as written: every fenced ``sh`` and ``python`` block of README.md and data/README.md runs, in order,
in one temporary workspace, or carries ``<!-- not run: REASON -->`` on the line before its fence and is listed.

The workspace is a checkout's layout (scripts/, configs/ and the package linked in) with what the README's commands
name: ``face.jpg`` and ``group.jpg`` (the astronaut portrait alone and five times in a group), ``photos/``, ``more/``,
``clip.mp4``, a small synthetic root at ``data/synthetic`` and ``runs/demo`` trained on it for a few steps (the
config of ``make demo``, two batches an epoch), each raw dataset of data/README.md in its owners' layout, small, and
``my_data/`` (photos, colour masks and the names and colours of five classes of one's own).
``python`` is this interpreter. ``<!-- serve -->`` before a block: its first line starts a server, which runs in the
background until ``/health`` answers, the other lines then run against it, and it is stopped.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

import cv2
import numpy as np
import pytest
from helpers import ROOT
from helpers.photos import PHOTO, group_photo

FENCE = re.compile(r"^(?:<!-- (?P<mark>[^>]*) -->\n)?```(?P<lang>[^\n]*)\n(?P<body>.*?)^```$", re.M | re.S)
RUN = {"sh", "python"}
SHOWN = {"text", "yaml", "json", "bibtex"}  # printed for the reader, not run
DOCS = ("README.md", os.path.join("data", "README.md"))


def _blocks():
    """(document, line, language, mark or None, body) of every fenced block, in order."""
    found = []
    for doc in DOCS:
        text = open(os.path.join(ROOT, doc)).read()
        for m in FENCE.finditer(text):
            line = text.count("\n", 0, m.start("lang")) + 1
            found.append((doc, line, m.group("lang").strip(), m.group("mark"), m.group("body")))
    return found


BLOCKS = _blocks()
RUNNABLE = [b for b in BLOCKS if b[2] in RUN and not (b[3] or "").startswith("not run")]


def test_every_block_says_its_language_and_the_ones_not_run_say_why():
    problems = []
    for doc, line, lang, mark, _ in BLOCKS:
        if lang not in RUN | SHOWN:
            problems.append(f"{doc}:{line}: fence language {lang!r}; expected one of {sorted(RUN | SHOWN)}")
        if mark is not None and not (mark == "serve" or re.fullmatch(r"not run: \S.{9,}", mark)):
            problems.append(f"{doc}:{line}: mark {mark!r}; expected 'not run: <the reason>' or 'serve'")
    assert not problems, "\n".join(problems)
    skipped = [(doc, line, mark) for doc, line, lang, mark, _ in BLOCKS if lang in RUN and mark and mark != "serve"]
    print("\nREADME blocks not run here:")
    for doc, line, mark in skipped:
        print(f"  {doc}:{line}: {mark[len('not run: '):]}")
    assert len(RUNNABLE) >= len(skipped)  # most of the README runs


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    ws = tmp_path_factory.mktemp("readme")
    for name in ("scripts", "configs", "dml_csr", "examples", "hubconf.py"):
        os.symlink(os.path.join(ROOT, name), ws / name)
    shutil.copy(PHOTO, ws / "face.jpg")
    cv2.imwrite(str(ws / "group.jpg"), group_photo()[0])
    for folder, count in (("photos", 2), ("more", 1)):
        (ws / folder).mkdir()
        for i in range(count):
            shutil.copy(PHOTO, ws / folder / f"p{i}.jpg")
    _write_clip(str(ws / "clip.mp4"))
    _demo_run(ws)
    _raw_datasets(ws)
    return ws


def _write_clip(path: str, frames: int = 4) -> None:
    photo = cv2.resize(cv2.imread(PHOTO), (160, 160))
    out = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (160, 160))
    for i in range(frames):
        out.write(np.roll(photo, i, axis=1))
    out.release()


def _demo_run(ws) -> None:
    """``make demo``'s run, small: synthetic faces at data/synthetic and runs/demo trained a few steps on them."""
    env = _env()
    cmds = [["scripts/prepare_synthetic.py", "--out", "data/synthetic", "--train", "8", "--val", "4", "--test", "4"],
            ["scripts/train.py", "--config", "configs/synthetic_dml_csr_tiny.yaml", "--no-progress", "--set",
             "data.root=data/synthetic", "output_dir=runs", "name=demo", "train.epochs=1", "train.cycles=1",
             "train.cycle_epochs=1", "train.iters_per_epoch=2", "data.batch_size=4", "data.workers=0"]]
    for cmd in cmds:
        subprocess.run([sys.executable, *cmd], cwd=ws, env=env, check=True, capture_output=True, timeout=600)


def _raw_datasets(ws) -> None:
    """Each raw dataset of data/README.md in its owners' layout, small (tests/helpers/raw_layouts.py)."""
    from helpers import raw_layouts

    raw = ws / "data" / "raw"
    raw_layouts.write_celebamask(str(raw / "CelebAMask-HQ"))
    raw_layouts.write_lapa(str(raw / "LaPa"))
    raw_layouts.write_helen(str(raw / "SmithCVPR2013_dataset_resized"))
    raw_layouts.write_helen_relabelled(str(raw), train=240)  # README: --val-from-train 230
    raw_layouts.write_lfw(str(raw / "lfw_pl"))
    raw_layouts.write_facesynthetics(str(raw / "FaceSynthetics"), n=24)  # data/README.md: --val 10 --test 10
    raw_layouts.write_own(str(ws / "my_data"))  # README, "Your own data": photos, colour masks, names, colours


def _env() -> dict:
    path = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    return dict(os.environ, PATH=path, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def _run(body: str, lang: str, cwd, env: dict) -> subprocess.CompletedProcess:
    cmd = ["bash", "-euo", "pipefail", "-c", body] if lang == "sh" else [sys.executable, "-c", body]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("doc,line,lang,mark,body", RUNNABLE, ids=[f"{d}:{n}" for d, n, *_ in RUNNABLE])
def test_the_block_runs_as_written(workspace, doc, line, lang, mark, body):
    env = _env()
    if mark == "serve":
        first, rest = body.split("\n", 1)
        _serve(first, rest, workspace, env)
        return
    r = _run(body, lang, workspace, env)
    assert r.returncode == 0, f"{doc}:{line} failed:\n{body}\n--- stdout\n{r.stdout[-3000:]}\n--- stderr\n" \
                              f"{r.stderr[-3000:]}"


def _serve(first: str, rest: str, cwd, env: dict) -> None:
    port = re.search(r"--port (\d+)", first)
    url = f"http://127.0.0.1:{port.group(1) if port else 7860}/health"
    server = subprocess.Popen(["bash", "-c", f"exec {first}"], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        for _ in range(300):
            assert server.poll() is None, f"the server stopped: {server.stderr.read()[-2000:]}"
            try:
                urllib.request.urlopen(url, timeout=1).read()
                break
            except OSError:
                time.sleep(0.2)
        else:
            raise AssertionError(f"{url} did not answer in a minute")
        r = _run(rest, "sh", cwd, env)
        assert r.returncode == 0, f"{rest}\n--- stderr\n{r.stderr[-2000:]}"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
