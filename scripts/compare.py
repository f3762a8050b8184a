#!/usr/bin/env python
"""Models side by side on the same images, as the DML-CSR paper's Figure 6 (baseline, +DDGCN, +DML, +CSR):

    python scripts/compare.py runs/baseline/best.pt runs/ddgcn/best.pt runs/dml/best.pt runs/dml_csr/best.pt \\
        --images data/lapa/test/images --labels data/lapa/test/labels --out figure6 [--names a,b,c,d]

writes ``<out>/NAME.png`` per image: the image, each model's parse (the whole image through its evaluation crop),
the ground truth when ``--labels`` is given, captions and a legend of the classes.
"""
from __future__ import annotations

import argparse

from _common import run_main, setup_logging


def main(argv=None) -> int:
    setup_logging()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", metavar="CKPT", help="checkpoints (or registry names) of one class layout")
    p.add_argument("--images", required=True, help="a folder of images")
    p.add_argument("--labels", default=None, help="a folder of their label maps (NAME.png), the ground truth")
    p.add_argument("--out", required=True, help="output folder: one NAME.png per image")
    p.add_argument("--names", default=None, help="comma-separated captions, one a checkpoint (default: file names)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    from dml_csr.photos.figures import compare_folder

    names = args.names.split(",") if args.names else None
    written = compare_folder(args.checkpoints, args.images, args.out, args.labels, names, args.device)
    print(f"wrote {len(written)} comparison(s) into '{args.out}'")
    return 0


if __name__ == "__main__":
    run_main(main)
