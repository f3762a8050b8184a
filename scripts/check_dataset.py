#!/usr/bin/env python
"""Validate a prepared dataset root and report every problem at once; exit status 1 if there is any.

    python scripts/check_dataset.py ROOT [--dataset NAME] [--splits test] [--workers N]

By default the root needs train, val (or valid) and test lists; ``--splits`` names the only ones required and read
(``--splits test`` for an evaluation-only copy).
"""
import argparse
import os

from _common import run_main

from dml_csr.data.prepare.check import check_root


def parse_splits(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names:
        raise ValueError(f"--splits '{text}': expected comma-separated split names, e.g. test or val,test")
    return names


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", help="prepared dataset root")
    p.add_argument("--dataset", help="registry key (helen, lapa, celebamask_hq, lfw_pl, synthetic, ...) or custom "
                                     "(the names and dataset.yaml of ROOT checked too); default: the class count of "
                                     "ROOT/label_names.txt (custom when ROOT has a dataset.yaml or was prepared by "
                                     "prepare_custom.py)")
    p.add_argument("--splits", default=None,
                   help="comma-separated splits that must be there and are checked, e.g. test (an evaluation-only "
                        "root) or val,test; val also accepts valid_list.txt; other lists are not read (default: "
                        "train,val,test)")
    p.add_argument("--workers", type=int, default=max(1, min(8, os.cpu_count() or 1)))
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    splits = parse_splits(a.splits) if a.splits is not None else None
    problems = check_root(a.root, a.dataset, a.workers, progress=not a.no_progress, splits=splits)
    for msg in problems:
        print(f"PROBLEM {msg}")
    checked = f" (splits {', '.join(splits)})" if splits else ""
    print(f"{a.root}: {len(problems)} problem(s){checked}" if problems else f"{a.root}: OK{checked}")
    return 1 if problems else 0


if __name__ == "__main__":
    run_main(main)
