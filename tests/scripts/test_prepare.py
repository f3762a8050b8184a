"""The prepare scripts as a user runs them: raw folder in, prepared root with its info.json out."""
import json
import os

import pytest
from helpers.raw_layouts import run_cli, write_celebamask, write_helen, write_helen_relabelled, write_lfw


@pytest.mark.parametrize("script", ["prepare_celebamask_hq.py", "prepare_helen.py", "prepare_lfw_pl.py",
                                    "prepare_helen.py relabelled"])
def test_cli_runs(tmp_path, script):
    raw, out = str(tmp_path / "raw"), str(tmp_path / "out")
    writers = {"prepare_celebamask_hq.py": lambda r: write_celebamask(r, (1, 170_001, 190_000)),
               "prepare_helen.py": write_helen, "prepare_lfw_pl.py": write_lfw,
               "prepare_helen.py relabelled": lambda r: write_helen_relabelled(r, True)}
    writers[script](raw)
    script = script.split()[0]
    r = run_cli(script, raw, out, "--workers", "2")
    assert r.returncode == 0, r.stderr
    counts = json.load(open(os.path.join(out, "info.json")))["counts"]
    assert sum(counts.values()) >= 3 and set(counts) == {"train", "val", "test"}
