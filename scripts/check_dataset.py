#!/usr/bin/env python
"""Validate a prepared dataset root and report every problem at once; exit status 1 if there is any.

    python scripts/check_dataset.py ROOT [--dataset NAME] [--workers N]
"""
import argparse
import os
import sys

from dml_csr.data.prepare.check import check_root


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", help="prepared dataset root")
    p.add_argument("--dataset", help="registry key (helen, lapa, celebamask_hq, lfw_pl, synthetic, ...); default: "
                                     "the class count of ROOT/label_names.txt")
    p.add_argument("--workers", type=int, default=max(1, min(8, os.cpu_count() or 1)))
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    problems = check_root(a.root, a.dataset, a.workers, progress=not a.no_progress)
    for msg in problems:
        print(f"PROBLEM {msg}")
    print(f"{a.root}: {len(problems)} problem(s)" if problems else f"{a.root}: OK")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
