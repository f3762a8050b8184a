"""scripts/check_dataset.py on an evaluation-only root: --splits names the only lists required and read."""
from __future__ import annotations

import pytest
from helpers.scripts import run_script

from dml_csr.data.synthetic import write_dataset


def run(*args):
    return run_script("check_dataset", "--no-progress", "--workers", "1", *args)


@pytest.fixture(scope="module")
def test_only_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("check") / "eval_only")
    write_dataset(root, {"test": 2}, size=(48, 48))
    return root


def test_all_three_splits_by_default(test_only_root):
    r = run(test_only_root, "--dataset", "synthetic")
    assert r.returncode == 1
    problems = [ln for ln in r.stdout.splitlines() if ln.startswith("PROBLEM")]
    assert problems == ["PROBLEM split 'train' is missing: no train_list.txt",
                        "PROBLEM split 'val' is missing: no val_list.txt or valid_list.txt"]
    assert f"{test_only_root}: 2 problem(s)" in r.stdout


def test_splits_test_accepts_the_evaluation_only_root(test_only_root):
    r = run(test_only_root, "--dataset", "synthetic", "--splits", "test")
    assert r.returncode == 0, r.stdout
    assert r.stdout.strip().splitlines()[-1] == f"{test_only_root}: OK (splits test)"
    r = run(test_only_root, "--splits", "val,test")
    assert r.returncode == 1 and r.stdout.count("PROBLEM") == 1 and "split 'val' is missing" in r.stdout


def test_bad_arguments_are_one_line(test_only_root):
    r = run(test_only_root, "--splits", " , ")
    assert r.returncode == 2 and r.stderr.strip() == "error: --splits ' , ': expected comma-separated split names, " \
                                                     "e.g. test or val,test"
    r = run(test_only_root, "--dataset", "nope", "--splits", "test")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "unknown dataset 'nope'" in r.stderr
