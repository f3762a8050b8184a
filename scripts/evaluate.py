#!/usr/bin/env python
"""Score a checkpoint (ours or the authors') or a folder of predicted label PNGs on a split, with one protocol.

Protocol (``dml_csr.evaluation``): every image goes through the evaluation affine to the network input (whole image,
aspect kept), the prediction is mapped back onto the original label map (inverse affine: ``--paste nearest`` warps
the argmax, the authors' way; ``--paste smooth`` warps the class probabilities bilinearly and takes the argmax at the
image's resolution; ``--paste logits`` warps the log-probabilities, FaRL's way) and one confusion matrix is pooled
over the split (label 255 ignored). Reported: per-class F1 and IoU, mean F1 over foreground classes, mIoU with and
without background, pixel accuracy, and the merged sets (confusion inside a set counts as correct).

    python scripts/evaluate.py --config configs/helen_dml_csr_r101.yaml --checkpoint helen.pth [--split test]
        [--flip] [--scales 0.75,1,1.25] [--paste nearest|smooth|logits] [--out DIR] [--save-predictions]
        [--score-at original|input] [--align whole|landmarks]    (other papers' protocols: README, "Protocols")
        [--crf N [--crf-kernel KEY=VALUE ...]]                   (Liu et al.'s CNN-CRF: a dense CRF first)
    python scripts/evaluate.py --predictions DIR --data data/helen --dataset helen [--split test]
    python scripts/evaluate.py --predictions DIR --masks DIR [--images DIR] --dataset celebamask_hq
        [--pred-dataset helen]

Predicted PNGs hold one class index a pixel in [0, C) of their dataset; any other value, 255 included, is refused
(a prediction labels every pixel; only the ground truth may mark pixels to ignore). A prediction, mask or image file
that cannot be read (empty, undecodable, over a limit, a link loop) is named and left out, the others are scored,
and the exit status is 1.

Writes ``<out>/metrics.json`` (scores, confusion matrix and the protocol record) and prints a table.
"""
from __future__ import annotations

import argparse
import sys

from _common import (add_config_args, add_crf_args, add_image_limit_args, apply_image_limits, crf_kernels_of,
                     load_cfg, run_main, setup_logging)

from dml_csr.evaluation.protocol import ALIGNS, PASTES, SCORE_AT


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(p, required=False)
    p.add_argument("--checkpoint", help="our checkpoint (runs/<name>/best.pt), an authors' .pth file or a registry "
                                        "name (dml_csr_helen, ...)")
    p.add_argument("--split", default=None, help="split to score (default: the config's data.test_split, or test)")
    p.add_argument("--flip", action="store_true", default=None, help="flip testing (default: eval.flip)")
    p.add_argument("--scales", default=None, help="comma-separated input scales, e.g. 0.75,1,1.25 (default: "
                                                  "eval.scales)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or auto (default: train.device)")
    p.add_argument("--out", default=None, help="output folder (default: <checkpoint folder>/eval_<split> followed by "
                                               "the options that change the numbers, e.g. eval_test_flip_scales0.75-"
                                               "1-1.25_smooth; or <predictions>_eval_<split>)")
    p.add_argument("--save-predictions", action="store_true", default=None,
                   help="write label PNGs (<out>/labels, re-scorable with --predictions) and colour PNGs "
                        "(<out>/colour: photo, truth and prediction side by side) (default: eval.save_predictions)")
    p.add_argument("--paste", choices=PASTES, default=None,
                   help="how the network's output goes back onto the original image: nearest (default, the "
                        "authors' protocol: the argmax warped with the inverse affine, nearest neighbour), smooth "
                        "(the class probabilities warped bilinearly, then the argmax at the image's resolution) or "
                        "logits (FaRL's: the log-probabilities warped bilinearly, whose argmax is that of the logits "
                        "warped back at one scale without flip)")
    p.add_argument("--score-at", choices=SCORE_AT, default=None,
                   help="original (default, the authors'): the prediction mapped back onto each original label map; "
                        "input (SegFace's way): the ground truth warped onto the network input, nearest, and scored "
                        "there")
    p.add_argument("--align", choices=ALIGNS, default=None,
                   help="whole (the authors'): each whole image through the evaluation affine; landmarks (FaRL's "
                        "framing): each face through the similarity from its own five landmarks "
                        "(<split>/landmarks/NAME.txt; LaPa's 106) to the checkpoint's template. Default: how the "
                        "checkpoint's faces were framed in training (landmarks after data.align=landmarks, else "
                        "whole)")
    add_crf_args(p, default=None)
    p.add_argument("--overwrite", action="store_true", help="replace an existing <out>/metrics.json (by default "
                                                            "an evaluation never replaces another's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_image_limit_args(p)
    g = p.add_argument_group("scoring predictions written by any method (no model)")
    g.add_argument("--predictions", help="folder with one NAME.png of class indices per sample, at the original "
                                         "resolution; values outside [0, C) of the predictions' dataset, 255 "
                                         "included, are refused")
    g.add_argument("--data", help="prepared dataset root with <split>_list.txt")
    g.add_argument("--masks", help="instead of --data: a folder of ground-truth label maps (NAME.png/.bmp/.tif), "
                                   "matched to the predictions by file stem; a file of either folder without its "
                                   "partner is an error")
    g.add_argument("--images", help="with --masks: the images; each mask needs one of the same stem and size")
    g.add_argument("--dataset", help="label registry key of the ground truth (helen, lapa, celebamask_hq, lfw_pl, "
                                     "synthetic, ...; custom: the classes --data declares): its class order is the "
                                     "one scored")
    g.add_argument("--pred-dataset", help="registry key of the class order the predictions were written in "
                                          "(default: --dataset). Classes are matched by name (CelebAMask-HQ's l_eye, "
                                          "u_lip, mouth = Helen's left_eye, upper_lip, inner_mouth; never merged "
                                          "into a coarser class); a predicted class that --dataset lacks counts as "
                                          "its background; ground truth of a class the predictions' dataset lacks "
                                          "is ignored (it scores n/a and leaves the means); no shared class name "
                                          "besides background is an error")
    args = p.parse_args(argv)
    args.crf_kernels = crf_kernels_of(p, args)
    if args.predictions:
        if not args.dataset or bool(args.data) == bool(args.masks):
            p.error("--predictions needs --data and --dataset (a prepared root) or --masks and --dataset (a folder "
                    "of label maps), one of the two")
        if args.images and not args.masks:
            p.error("--images goes with --masks")
        if args.checkpoint or args.paste or args.score_at or args.align or args.crf is not None or args.crf_kernel:
            p.error("--predictions scores files without a model; drop --checkpoint, --paste, --score-at, --align, "
                    "--crf and --crf-kernel")
    elif not (args.config and args.checkpoint):
        p.error("give --config and --checkpoint (score a model), or --predictions, --data and --dataset")
    elif args.paste and args.score_at == "input":
        p.error("--paste maps the prediction back onto the original label map; --score-at input scores at the "
                "network input, where nothing is pasted: drop --paste")
    elif args.masks or args.images or args.pred_dataset:
        p.error("--masks, --images and --pred-dataset score a --predictions folder")
    return args


def parse_scales(text: str) -> list[float]:
    """Comma-separated scales, each finite, > 0 and <= 8 (as eval.scales)."""
    from dml_csr._typed import numbers

    return numbers(text, "--scales", 0, 8, lo_open=True)


def main(argv=None) -> int:
    setup_logging()
    args = parse_args(argv)
    apply_image_limits(args)
    if args.predictions:
        from dml_csr.evaluation.predictions import score_predictions

        record = score_predictions(args.predictions, args.dataset, data=args.data, masks=args.masks,
                                   images=args.images, pred_dataset=args.pred_dataset, split=args.split, out=args.out,
                                   progress=not args.no_progress, overwrite=args.overwrite)
    else:
        from dml_csr.evaluation.protocol import score_checkpoint

        record = score_checkpoint(
            load_cfg(args), args.checkpoint, split=args.split, flip=args.flip,
            scales=parse_scales(args.scales) if args.scales else None, paste=args.paste or "nearest", out=args.out,
            save_predictions=args.save_predictions, device=args.device, config_path=args.config,
            progress=not args.no_progress, overwrite=args.overwrite, score_at=args.score_at or "original",
            align=args.align, crf=args.crf, crf_kernels=args.crf_kernels)
    skipped = record["protocol"]["skipped"]
    if skipped:  # scored without them, and said so
        print(f"{len(skipped)} sample(s) could not be read and were left out of the scores:", file=sys.stderr)
        for s in skipped:
            print(f"  {s['reason']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    run_main(main)
