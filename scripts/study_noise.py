#!/usr/bin/env python
"""Put cyclical self-regulation's noisy-label claim to a test: the first phase alone against the first phase plus
CSR (the same number of epochs), at label noise 0, 15 and 30 %, two seeds each, on synthetic faces with a small
ResNet-18 DML-CSR; prints the table of clean-test mean F1 and writes it, with a plot, under --out.

    python scripts/study_noise.py --out runs/noise_study            # the full grid (the README's table)
    python scripts/study_noise.py --out runs/noise_quick --quick    # a reduced grid in seconds (the tests)
"""
from __future__ import annotations

import argparse
import os

from _common import run_main, setup_logging

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None) -> int:
    setup_logging()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for the faces, the runs, noise_study.{md,csv,png}")
    p.add_argument("--quick", action="store_true", help="noise 0 and 30 %%, one seed, one epoch a phase, 8 faces")
    p.add_argument("--config", default=os.path.join(ROOT, "configs", "synthetic_dml_csr_tiny.yaml"),
                   help="the config the study's overrides go on top of")
    p.add_argument("--data", default=None, help="a prepared synthetic root to use instead of drawing faces")
    args = p.parse_args(argv)
    from dml_csr.training.noise_study import FULL, QUICK, format_table, run_study

    result = run_study(args.out, args.config, QUICK if args.quick else FULL, args.data)
    table, _ = format_table(result)
    e, k, n = result["schedule"]
    print(f"clean test mean F1 (%; mean over seeds {result['seeds']}, each seed in parentheses), {e} + {k} x {n} "
          f"epochs; {result['seconds'] / 60:.1f} min:\n{table}")
    print(f"written: {os.path.join(args.out, 'noise_study.md')}, .csv and .png")
    return 0


if __name__ == "__main__":
    run_main(main)
