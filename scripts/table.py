#!/usr/bin/env python
"""The results of runs as the papers lay them out: per-class F1, mean F1, Helen's overall F1 and mIoU, for each run's
best validation and its test evaluation (``scripts/evaluate.py --split test`` writes it into RUN/eval_test):

    python scripts/table.py runs/helen_baseline runs/helen_ddgcn runs/helen_dml runs/helen_dml_csr_r101 --out tables

prints the Markdown tables and writes ``<out>/table.md``, ``<out>/table.csv`` and ``<out>/per_class_f1.png``.
"""
from __future__ import annotations

import argparse
import os

from _common import run_main, setup_logging


def main(argv=None) -> int:
    setup_logging()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories (runs/NAME) of one dataset")
    p.add_argument("--out", required=True, help="folder for table.md, table.csv and per_class_f1.png")
    args = p.parse_args(argv)
    from dml_csr.data.drawing import save_rgb
    from dml_csr.evaluation.tables import class_chart, format_tables, read_run
    from dml_csr.files import write_bytes

    runs = [read_run(r) for r in args.runs]
    md, csv = format_tables(runs)
    write_bytes(os.path.join(args.out, "table.md"), md.encode())
    write_bytes(os.path.join(args.out, "table.csv"), csv.encode())
    save_rgb(os.path.join(args.out, "per_class_f1.png"), class_chart(runs))
    print(md)
    print(f"written: {args.out}/table.md, table.csv, per_class_f1.png")
    return 0


if __name__ == "__main__":
    run_main(main)
