#!/usr/bin/env python
"""An aligned copy of a prepared root: every face taken by the 5-point similarity onto one template (Liu et al.
align Helen this way before their two-stage RNN-G, whose component crops come from the 5 keypoints):

    python scripts/align_dataset.py data/helen data/helen_aligned [--size 256] [--detector auto]

Landmarks come from each sample's landmarks/NAME.txt where it has one, else from the face detector (Helen has none:
the detector finds them; --detector none skips such samples). The output holds the warped images, label maps and
landmarks in the prepared layout (configs/liu2017/helen_rnn_g_two_stage.yaml trains on it).
"""
import argparse

from _common import run_main, setup_logging


def main(argv=None) -> int:
    setup_logging()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", help="a prepared dataset root")
    p.add_argument("out", help="the aligned copy to write")
    p.add_argument("--size", type=int, default=256, help="output side in pixels")
    p.add_argument("--detector", default="auto", help="for samples without landmark files: auto, yuface, yunet or "
                                                      "none (leave them out)")
    args = p.parse_args(argv)
    from dml_csr.photos.align_root import align_root
    from dml_csr.photos.detection import build_detector

    detector = None if args.detector == "none" else build_detector(args.detector)
    report = align_root(args.root, args.out, args.size, detector)
    for split, (done, skipped) in report.items():
        print(f"{split}: {done} aligned, {len(skipped)} without landmarks left out")
    return 0


if __name__ == "__main__":
    run_main(main)
