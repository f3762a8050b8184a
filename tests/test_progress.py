"""Progress: a bar on a terminal, a plain line per tenth of the work in a log (no carriage returns), nothing when
off; and the scripts' progress in a redirected log."""
import io
import subprocess
import sys

from helpers import ROOT
from helpers.tiny_checkpoint import subprocess_env, write_tiny_checkpoint
from helpers.photos import PHOTO

from dml_csr.progress import Lines, progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_bar_and_a_log_gets_a_line_per_tenth():
    from tqdm import tqdm

    bar = progress(100, "parsing", "img", stream=_Terminal())
    assert isinstance(bar, tqdm)
    bar.close()
    log = io.StringIO()
    with progress(100, "parsing", "img", stream=log) as p:
        assert isinstance(p, Lines)
        for _ in range(100):
            p.set_postfix(loss="0.5")
            p.update()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and len(lines) == 10  # at 10 %, 20 %, ... 90 %, and when it ends
    assert lines[0].startswith("parsing: 10/100 img (10 %)") and lines[-1].startswith("parsing: 100/100 img (100 %)")
    assert lines[-1].endswith(", loss 0.5")


def test_an_epoch_in_a_log_is_one_line_and_off_is_silent():
    log = io.StringIO()
    with progress(37, "epoch 3/8 (phase 1)", "it", every=1.0, initial=5, stream=log) as p:
        p.update(32)
    assert log.getvalue().count("\n") == 1 and log.getvalue().startswith("epoch 3/8 (phase 1): 37/37 it (100 %)")
    quiet = io.StringIO()
    with progress(10, "x", stream=quiet, enabled=False) as p:
        p.update(10)
    assert quiet.getvalue() == ""


def test_predict_in_a_redirected_log_writes_lines_not_a_bar(tmp_path):
    ckpt = write_tiny_checkpoint(str(tmp_path / "tiny.pt"))
    r = subprocess.run([sys.executable, f"{ROOT}/scripts/predict.py", PHOTO, "--checkpoint", ckpt, "--out",
                        str(tmp_path / "out"), "--device", "cpu"], capture_output=True, text=True,
                       env=subprocess_env())
    assert r.returncode == 0, r.stderr
    assert "\r" not in r.stderr and "parsing: 1/1 img (100 %)" in r.stderr
