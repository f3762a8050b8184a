#!/usr/bin/env python
"""Parse images, folders, glob patterns and video files with a checkpoint (ours or the authors').

    python scripts/predict.py photos/ extra/*.jpg clip.mp4 --checkpoint runs/helen/best.pt --out preds [--detect]

Writes ``<out>/labels/NAME.png`` (class indices at the image's own resolution, scorable with
``scripts/evaluate.py --predictions``) and ``<out>/overlays/NAME.jpg``; video frames become ``STEM_fNNNNNN``
and ``<out>/videos/STEM.mp4`` (the overlay video; faces tracked across frames, their landmarks and the probabilities
smoothed over time by ``--smooth``). ``--edges`` (a DML-CSR checkpoint that keeps its edge heads, as training
writes them) adds ``<out>/edges/NAME_binary.png`` (255 on edges), ``NAME_category.png`` (the class of each category
edge, 0 elsewhere) and ``NAME_category_color.png``, of the whole image (the DML-CSR paper's Figure 5).
With ``--detect``, each face found is aligned to the checkpoint's crop convention, parsed and composited back, and
``<out>/faces/NAME.json`` lists the faces (box, five landmarks, score); an image without a face gets a warning and
is counted in the summary. A folder of photos beside their label maps (``0.jpg`` and ``0.png``) parses the photos
only. An input that cannot be read is reported by name and the others are still processed; the exit status is then
1 and a summary lists every failure.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from _common import add_crf_args, add_image_limit_args, apply_image_limits, crf_kernels_of, run_main, setup_logging

log = logging.getLogger("predict")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders, glob patterns, video files")
    p.add_argument("--checkpoint", required=True, help="our checkpoint, an authors' .pth file, or a registry name "
                                                       "(e.g. dml_csr_helen; see README, 'Weights by name')")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--flip", action="store_true", help="flip testing")
    p.add_argument("--scales", default="1", help="comma-separated input scales, e.g. 0.75,1,1.25")
    add_crf_args(p, default=0)
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--detect", action="store_true", help="find faces, align each to the checkpoint's crop, parse "
                                                         "it and paste its probabilities back")
    p.add_argument("--detector", default="auto", help="with --detect: auto (yuface, else YuNet, else the Haar "
                                                      "cascade), yuface, yunet, haar, a .json file of one image's "
                                                      "faces, or a folder of NAME.json files (as <out>/faces/)")
    p.add_argument("--threshold", type=float, default=None, help="with --detect: the score a face needs "
                                                                 "(default: the detector's own)")
    p.add_argument("--no-rotations", action="store_true", help="with --detect: take faces as upright only (by "
                   "default a photo without a confident upright face is searched turned by 90, 180 and 270 degrees)")
    p.add_argument("--margin", type=float, default=0.5, help="with --detect, faces without landmarks: box growth "
                                                             "per side, fraction of size")
    p.add_argument("--every", type=int, default=1, help="videos: parse every N-th frame")
    p.add_argument("--smooth", type=float, default=0.5, help="videos: weight of the past in the moving average of "
                                                             "tracked landmarks and probabilities (0: none)")
    p.add_argument("--no-video", action="store_true", help="videos: no overlay video (<out>/videos/STEM.mp4)")
    p.add_argument("--alpha", type=float, default=0.6, help="overlay opacity")
    p.add_argument("--no-overlay", action="store_true", help="write label PNGs only")
    p.add_argument("--edges", action="store_true", help="also write the whole image's binary and category edge maps "
                                                        "(a checkpoint with its edge heads)")
    p.add_argument("--no-progress", action="store_true")
    add_image_limit_args(p)
    args = p.parse_args(argv)
    args.crf_kernels = crf_kernels_of(p, args)
    if args.crf_kernels and not args.crf:
        p.error("--crf-kernel sets the dense CRF's kernels; it needs --crf ITERATIONS >= 1")
    return args


def check_numbers(args: argparse.Namespace) -> list[float]:
    """Every number of the command line finite and in range (one line naming the flag), the image limits applied;
    returns the scales."""
    from dml_csr._typed import number, numbers

    number(args.batch_size, "--batch-size", 1, 4096, integer=True)
    number(args.every, "--every", 1, None, integer=True)
    if not 0 <= args.smooth < 1:  # NaN included
        raise ValueError(f"--smooth must be in [0, 1), got {args.smooth}")
    number(args.alpha, "--alpha", 0, 1)
    number(args.margin, "--margin", 0, 10)
    if args.threshold is not None:
        number(args.threshold, "--threshold", 0, 1)
    apply_image_limits(args)
    return numbers(args.scales, "--scales", 0, 8, lo_open=True)


def main(argv=None) -> int:
    setup_logging()
    args = parse_args(argv)
    from dml_csr.photos import batch
    from dml_csr.photos.detection import build_detector
    from dml_csr.photos.figures import EdgeMaps
    from dml_csr.photos.parser import FaceParser
    from dml_csr.progress import progress

    scales = check_numbers(args)
    batch.check_checkpoint_arg(args.checkpoint)
    faces_dir = args.detector if args.detect and os.path.isdir(args.detector) else None
    detector = args.detector
    if args.detect and faces_dir is None:
        try:  # fail now, not once per image, when the detector cannot be built here
            detector = build_detector(args.detector, args.threshold, rotations=not args.no_rotations)
        except RuntimeError as e:
            raise ValueError(str(e)) from None
    elif not args.detect and (args.detector != "auto" or args.threshold is not None):
        log.warning("--detector and --threshold take effect with --detect only")
    parser = FaceParser.from_checkpoint(args.checkpoint, device=args.device, flip=args.flip, scales=scales,
                                        precision=args.precision, batch_size=args.batch_size, margin=args.margin,
                                        detector=detector, crf_iterations=args.crf,
                                        crf_kernels=args.crf_kernels)
    failures: list[tuple[str, str]] = []
    files = batch.expand_inputs(args.inputs, failures)
    total = batch.count_units(files, args.every)
    if args.detect and args.detector.endswith(".json") and total > 1:
        raise ValueError(f"--detector {args.detector}: a faces file describes one image, and {total} are given; pass "
                         "a folder of NAME.json files (as <out>/faces/ holds) to give each image its own")
    opts = batch.Options(args.out, detect=args.detect, faces_dir=faces_dir, batch_size=args.batch_size,
                         every=args.every, smooth=args.smooth, video=not args.no_video,
                         overlay=not args.no_overlay, alpha=args.alpha,
                         edges=EdgeMaps(args.checkpoint, device=str(parser.device)) if args.edges else None)
    with progress(total, "parsing", "img", enabled=not args.no_progress) as bar:
        summary = batch.run(parser, files, opts, bar.update, failures)
    found = f", {summary.faces} face(s) found" if args.detect else ""
    print(f"parsed {summary.done} image(s) and video frame(s) into '{args.out}'{found}")
    for path in summary.videos:
        print(f"overlay video: {path}")
    if summary.faceless:
        print(f"no face found in {len(summary.faceless)} image(s): {', '.join(summary.faceless[:10])}"
              + (" ..." if len(summary.faceless) > 10 else ""))
    if summary.failures:
        print(f"{len(summary.failures)} input(s) failed:", file=sys.stderr)
        for src, why in summary.failures:
            print(f"  {src}: {why}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    run_main(main)
