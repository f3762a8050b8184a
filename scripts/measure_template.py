#!/usr/bin/env python
"""Measure a prepared dataset's face template: where its training faces' five landmarks fall in the network input.

    python scripts/measure_template.py --root data/lapa [--split train] [--detector auto] [--input-size 473 473]

Writes ``<root>/face_template.json``. Samples with a ``landmarks/NAME.txt`` of 5 points, or LaPa's 106 (through the
five FaRL uses), use it; the others (Helen, CelebAMask-HQ) are run through the face detector once. Training records
the template in its checkpoints, and the parser then aligns each detected face in a photo to it (README, "Photos:
detection, alignment, paste-back"); with data.align=landmarks training frames each face onto it (README, "Configs").
"""
import argparse

from _common import run_main, setup_logging


def main(argv=None) -> int:
    setup_logging()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="a prepared dataset root")
    p.add_argument("--split", default="train")
    p.add_argument("--input-size", type=int, nargs=2, default=[473, 473], metavar=("H", "W"),
                   help="the network input the template is measured in (only its aspect matters)")
    p.add_argument("--detector", default="auto", help="for samples without 5- or 106-point landmark files: auto, "
                                                      "yuface, yunet, or none (skip them)")
    p.add_argument("--limit", type=int, default=2000, help="at most this many samples, evenly spaced")
    args = p.parse_args(argv)
    from dml_csr.photos.detection import build_detector
    from dml_csr.data.face_template import write_template
    from dml_csr.data.split_template import measure_split

    detector = None if args.detector == "none" else build_detector(args.detector)
    crop = measure_split(args.root, args.split, args.input_size, detector, args.limit)
    path = write_template(args.root, crop)
    print(f"wrote {path}: {crop['faces']} faces ({crop['source']}), mean spread {crop['spread_px']} px")
    return 0


if __name__ == "__main__":
    run_main(main)
