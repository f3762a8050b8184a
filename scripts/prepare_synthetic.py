#!/usr/bin/env python
"""Write procedural synthetic faces in the prepared dataset layout.

    python scripts/prepare_synthetic.py --out data/synthetic --train 600 --val 60 --test 60
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from dml_csr.data.synthetic import write_dataset  # noqa: E402
from dml_csr.data.face_template import write_template  # noqa: E402
from dml_csr.data.split_template import measure_split  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="data/synthetic", help="output root (default: %(default)s)")
    p.add_argument("--train", type=int, default=600)
    p.add_argument("--val", type=int, default=60)
    p.add_argument("--test", type=int, default=60)
    p.add_argument("--size", type=int, nargs=2, default=[256, 256], metavar=("H", "W"))
    p.add_argument("--order", choices=["synthetic", "synthetic19"], default="synthetic",
                   help="class order: 11 Helen/LaPa classes or 19 CelebAMask-HQ classes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--second-face-prob", type=float, default=0.3)
    p.add_argument("--face-scale", type=float, nargs=2, default=[0.2, 0.27], metavar=("MIN", "MAX"),
                   help="face half-width as a fraction of the image side (0.34 0.42: tight face crops)")
    args = p.parse_args(argv)
    info = write_dataset(args.out, {"train": args.train, "val": args.val, "test": args.test}, seed=args.seed,
                         size=tuple(args.size), order=args.order, second_face_prob=args.second_face_prob, face_scale=tuple(args.face_scale),
                         progress=True)
    print(f"wrote {sum(info['counts'].values())} samples ({info['counts']}) to {args.out}")
    if args.train:  # the faces' own landmarks give the template that aligned parsing of photos uses
        path = write_template(args.out, measure_split(args.out, "train"))
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
