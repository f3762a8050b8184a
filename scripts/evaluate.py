#!/usr/bin/env python
"""Score a checkpoint (ours or the authors') or a folder of predicted label PNGs on a split, with one protocol.

Protocol: every image goes through the evaluation affine to the network input (whole image, aspect kept), the
prediction is mapped back onto the original label map (inverse affine: ``--paste nearest`` warps the argmax, the
authors' way; ``--paste smooth`` warps the class probabilities bilinearly and takes the argmax at the image's
resolution) and one confusion matrix is pooled over the split (label 255 ignored). Reported: per-class F1 and IoU,
mean F1 over foreground classes, mIoU with and without background, pixel accuracy, and the merged sets (confusion
inside a set counts as correct).

    python scripts/evaluate.py --config configs/helen_dml_csr_r101.yaml --checkpoint helen.pth [--split test]
        [--flip] [--scales 0.75,1,1.25] [--paste nearest|smooth] [--out DIR] [--save-predictions]
    python scripts/evaluate.py --predictions DIR --data data/helen --dataset helen [--split test]
    python scripts/evaluate.py --predictions DIR --masks DIR [--images DIR] --dataset celebamask_hq
        [--pred-dataset helen]

Predicted PNGs hold one class index a pixel in [0, C) of their dataset; any other value, 255 included, is refused
(a prediction labels every pixel; only the ground truth may mark pixels to ignore).

Writes ``<out>/metrics.json`` (scores, confusion matrix and the protocol record) and prints a table.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from _common import add_config_args, load_cfg, run_main, setup_logging

from dml_csr.files import write_image, write_json

log = logging.getLogger("evaluate")
PASTES = ("nearest", "smooth")
SCORED_AT = {"nearest": "original label resolution (prediction argmax at the network input, mapped back with the "
                        "inverse evaluation affine, nearest)",
             "smooth": "original label resolution (class probabilities mapped back with the inverse evaluation "
                       "affine, bilinear, then the argmax)"}
LABEL_EXTS = (".png", ".bmp", ".tif", ".tiff")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


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
    p.add_argument("--out", default=None, help="output folder (default: <checkpoint folder>/eval_<split>, or "
                                               "<predictions>_eval_<split>)")
    p.add_argument("--save-predictions", action="store_true", default=None,
                   help="write label PNGs (<out>/labels, re-scorable with --predictions) and colour PNGs "
                        "(<out>/colour: photo, truth and prediction side by side) (default: eval.save_predictions)")
    p.add_argument("--paste", choices=PASTES, default=None,
                   help="how the network's output goes back onto the original image: nearest (default, the "
                        "authors' protocol: the argmax warped with the inverse affine, nearest neighbour) or smooth "
                        "(the class probabilities warped bilinearly, then the argmax at the image's resolution)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
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
                                     "synthetic, ...): its class order is the one scored")
    g.add_argument("--pred-dataset", help="registry key of the class order the predictions were written in "
                                          "(default: --dataset). Classes are matched by name (CelebAMask-HQ's l_eye, "
                                          "u_lip, mouth = Helen's left_eye, upper_lip, inner_mouth; never merged "
                                          "into a coarser class); a predicted class that --dataset lacks counts as "
                                          "its background; ground truth of a class the predictions' dataset lacks "
                                          "is ignored (it scores n/a and leaves the means); no shared class name "
                                          "besides background is an error")
    args = p.parse_args(argv)
    if args.predictions:
        if not args.dataset or bool(args.data) == bool(args.masks):
            p.error("--predictions needs --data and --dataset (a prepared root) or --masks and --dataset (a folder "
                    "of label maps), one of the two")
        if args.images and not args.masks:
            p.error("--images goes with --masks")
        if args.checkpoint or args.paste:
            p.error("--predictions scores files without a model; drop --checkpoint and --paste")
    elif not (args.config and args.checkpoint):
        p.error("give --config and --checkpoint (score a model), or --predictions, --data and --dataset")
    elif args.masks or args.images or args.pred_dataset:
        p.error("--masks, --images and --pred-dataset score a --predictions folder")
    return args


def parse_scales(text: str) -> list[float]:
    try:
        scales = [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--scales '{text}': expected comma-separated numbers, e.g. 0.75,1,1.25") from None
    if not scales or min(scales) <= 0:
        raise ValueError(f"--scales '{text}': expected positive numbers")
    return scales


def _progress(total: int, disable: bool, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=disable, file=sys.stderr)


def _prediction_writer(out: str, spec, dataset=None):
    """``on_prediction(name, labels)`` saving the label PNG and a colour PNG, each written atomically: photo, truth
    and prediction side by side when ``dataset`` can give the sample's photo and label, the prediction alone else."""
    import numpy as np

    os.makedirs(os.path.join(out, "labels"), exist_ok=True)
    os.makedirs(os.path.join(out, "colour"), exist_ok=True)
    lut = np.full((256, 3), 255, np.uint8)
    lut[: spec.num_classes] = spec.palette
    index = {n: i for i, n in enumerate(dataset.names)} if dataset is not None else {}

    def save(name: str, labels) -> None:
        write_image(os.path.join(out, "labels", f"{name}.png"), labels.astype(np.uint8))
        colour = lut[labels][..., ::-1]  # BGR for OpenCV
        if name in index:
            photo, truth = dataset.load_pair(index[name])
            if photo.shape[:2] == labels.shape:
                gap = np.full((labels.shape[0], 4, 3), 255, np.uint8)
                colour = np.concatenate([photo, gap, lut[truth][..., ::-1], gap, colour], 1)
        write_image(os.path.join(out, "colour", f"{name}.png"), np.ascontiguousarray(colour))

    return save


def report(cm, spec, protocol: dict, out: str) -> dict:
    """Scores from ``cm``: print the table, write ``<out>/metrics.json``; returns the record."""
    from dml_csr.evaluation.metrics import format_scores

    scores = cm.compute(spec.classes, spec.groups)
    record = {"protocol": protocol, "scores": scores, "confusion": cm.mat.tolist()}
    path = os.path.join(out, "metrics.json")
    write_json(path, record)
    print(format_scores(scores))
    print(f"wrote {path}")
    return record


def _common_protocol(spec, root, split, n: int) -> dict:
    return {
        "split": split, "dataset": spec.name, "dataset_root": os.path.abspath(root) if root else None,
        "num_samples": n, "classes": list(spec.classes),
        "pooling": "one confusion matrix over every pixel of the split; label 255 ignored",
        "miou_includes_background": True,
        "metrics": {"miou": "mean IoU over all classes, background included (the authors' number)",
                    "miou_fg": "mean IoU without background",
                    "mean_f1": "mean F1 over every class but background",
                    "groups": "F1 of merged class sets; confusion inside a set counts as correct"},
        "groups": {g: [spec.classes[i] for i in m] for g, m in spec.groups.items()},
        "absent_classes": "a class in neither prediction nor ground truth scores NaN and is left out of the means",
    }


def _by_stem(folder: str, exts: tuple, what: str) -> dict:
    """``{stem: path}`` of the files of ``folder`` ending in one of ``exts`` (hidden files skipped)."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{what} folder '{folder}' does not exist")
    found = {}
    for f in sorted(os.listdir(folder)):
        stem, ext = os.path.splitext(f)
        path = os.path.join(folder, f)
        if f.startswith(".") or ext.lower() not in exts or not os.path.isfile(path):
            continue
        if stem in found:
            raise ValueError(f"{what} '{path}' and '{found[stem]}' share the stem '{stem}'; expected one file a "
                             "sample")
        found[stem] = path
    if not found:
        raise FileNotFoundError(f"{what} folder '{folder}' holds no {'/'.join(exts)} file")
    return found


def _unpaired(have: dict, other: dict, what: str, folder: str) -> None:
    lone = sorted(set(have) - set(other))
    if lone:
        raise FileNotFoundError(f"{len(lone)} {what} without a file of the same stem in '{folder}': "
                                f"{', '.join(have[n] for n in lone[:5])}{' ...' if len(lone) > 5 else ''}")


def _folder_pairs(args) -> list[tuple]:
    """``[(name, prediction, mask, image or None)]`` of ``--predictions``/``--masks`` (/``--images``) by stem."""
    preds = _by_stem(args.predictions, (".png",), "predictions")
    masks = _by_stem(args.masks, LABEL_EXTS, "masks")
    _unpaired(preds, masks, "prediction(s)", args.masks)
    _unpaired(masks, preds, "mask(s)", args.predictions)
    images = {}
    if args.images:
        images = _by_stem(args.images, IMAGE_EXTS, "images")
        _unpaired(masks, images, "mask(s)", args.images)
    return [(n, preds[n], masks[n], images.get(n)) for n in sorted(masks)]


def _root_pairs(args) -> tuple[list[tuple], str]:
    from dml_csr.data.dataset import read_split_list, resolve_split

    split = resolve_split(args.data, args.split or "test")
    items = read_split_list(args.data, split)
    if not os.path.isdir(args.predictions):
        raise FileNotFoundError(f"predictions folder '{args.predictions}' does not exist")
    missing = [name for name, _, _ in items if not os.path.isfile(os.path.join(args.predictions, f"{name}.png"))]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of {len(items)} samples of '{split}' have no prediction in "
                                f"'{args.predictions}' (expected NAME.png), e.g. {', '.join(missing[:5])}")
    return [(name, os.path.join(args.predictions, f"{name}.png"), lp, None) for name, _, lp in items], split


def class_luts(spec, pred_spec):
    """(prediction LUT, ground-truth LUT, record) reading ``pred_spec``'s labels in ``spec``'s order by class name
    (``--pred-dataset``): a predicted class ``spec`` lacks -> background; ground truth of a class ``pred_spec``
    lacks -> 255 (ignored)."""
    import numpy as np

    from dml_csr.data.labels import class_mapping

    to_dst, unmatched = class_mapping(pred_spec, spec)
    pred_lut = np.where(to_dst < 0, 0, to_dst).astype(np.uint8)
    gt_lut = np.arange(256, dtype=np.uint8)
    gt_lut[list(unmatched)] = 255
    record = {"pred_dataset": pred_spec.name, "pred_classes": list(pred_spec.classes),
              "mapped": {pred_spec.classes[i]: spec.classes[j] for i, j in enumerate(to_dst) if j >= 0},
              "to_background": [pred_spec.classes[i] for i, j in enumerate(to_dst) if j < 0],
              "ignored_ground_truth": [spec.classes[j] for j in unmatched]}
    return pred_lut, gt_lut, record


def _read_prediction(path: str, pred_spec):
    from dml_csr.data.dataset import read_label

    pred = read_label(path)
    c = pred_spec.num_classes
    if int(pred.max()) >= c:
        bad = sorted(set(pred[pred >= c].tolist()))
        raise ValueError(f"prediction '{path}' has value{'s' * (len(bad) > 1)} {', '.join(map(str, bad))}; dataset '{pred_spec.name}' has "
                         f"{c} classes: expected class indices 0..{c - 1} (255 is refused: a prediction labels "
                         "every pixel)")
    return pred


def score_pairs(pairs, spec, pred_spec, progress: bool = False):
    """One confusion matrix (``spec``'s classes) over ``(name, prediction, mask, image or None)`` files."""
    import numpy as np

    from dml_csr.data.dataset import read_image, read_label
    from dml_csr.evaluation.metrics import ConfusionMatrix

    pred_lut = gt_lut = None
    if pred_spec.name != spec.name:
        pred_lut, gt_lut, _ = class_luts(spec, pred_spec)
    cm = ConfusionMatrix(spec.num_classes)
    with _progress(len(pairs), not progress, "scoring") as bar:
        for _, pred_path, label_path, image_path in pairs:
            pred = _read_prediction(pred_path, pred_spec)
            gt = read_label(label_path, spec.num_classes)
            if pred.shape != gt.shape:
                raise ValueError(f"prediction '{pred_path}' is {pred.shape[1]}x{pred.shape[0]} (WxH) but label "
                                 f"'{label_path}' is {gt.shape[1]}x{gt.shape[0]}; predictions must be at the "
                                 "original resolution")
            size = read_image(image_path).shape[:2] if image_path else gt.shape
            if size != gt.shape:
                raise ValueError(f"image '{image_path}' is {size[1]}x{size[0]} (WxH) but its mask '{label_path}' is "
                                 f"{gt.shape[1]}x{gt.shape[0]}; expected the same size")
            if pred_lut is not None:
                pred, gt = pred_lut[pred], gt_lut[gt]
            cm.update(np.ascontiguousarray(pred), gt)
            bar.update(1)
    return cm


def evaluate_predictions(args) -> int:
    from dml_csr.data.labels import get_spec

    spec = get_spec(args.dataset)
    pred_spec = get_spec(args.pred_dataset or args.dataset)
    if args.masks:
        pairs, split = _folder_pairs(args), None
    else:
        pairs, split = _root_pairs(args)
    cm = score_pairs(pairs, spec, pred_spec, progress=not args.no_progress)
    protocol = _common_protocol(spec, args.data, split, len(pairs))
    protocol.update({"source": "predictions", "predictions": os.path.abspath(args.predictions),
                     "masks": os.path.abspath(args.masks) if args.masks else None,
                     "images": os.path.abspath(args.images) if args.images else None,
                     "class_mapping": class_luts(spec, pred_spec)[2] if pred_spec.name != spec.name else None,
                     "resolution": {"network_input": None, "scored_at": "original label resolution (as written)"},
                     "paste": None, "flip": None, "scales": None, "checkpoint": None, "checkpoint_sha256": None})
    suffix = f"_eval_{split}" if split else "_eval"
    report(cm, spec, protocol, args.out or f"{args.predictions.rstrip(os.sep)}{suffix}")
    return 0


def evaluate_checkpoint(args) -> int:
    from dml_csr.data.dataset import build_dataset
    from dml_csr.data.labels import flip_permutation, get_spec
    from dml_csr.data.loader import build_loader
    from dml_csr.data.transforms import EvalTransform
    from dml_csr.distributed import resolve_device
    from dml_csr.evaluation.protocol import evaluate
    from dml_csr.hub import is_name, resolve, sha256_of
    from dml_csr.loading import load_model

    cfg = load_cfg(args)
    spec = get_spec(cfg.data.dataset)
    device = resolve_device(args.device or cfg.train.device)
    name = args.checkpoint
    if not os.path.exists(name) and is_name(name):  # a registry name: its cached, verified file from here on
        args.checkpoint = resolve(name, kind="dml_csr")
    model, meta = load_model(name, device=device)
    if meta["num_classes"] != spec.num_classes:
        raise ValueError(f"checkpoint '{args.checkpoint}' has {meta['num_classes']} classes but config "
                         f"'{args.config}' (data.dataset={spec.name}) has {spec.num_classes}; use the config of the "
                         "dataset the checkpoint was trained on")
    if list(meta.get("classes", spec.classes)) != list(spec.classes) and meta.get("source") != "official":
        log.warning("checkpoint class names %s differ from dataset '%s' names %s; scoring by index",
                    meta.get("classes"), spec.name, list(spec.classes))
    split = args.split or cfg.data.test_split
    flip = cfg.eval.flip if args.flip is None else args.flip
    scales = parse_scales(args.scales) if args.scales else list(cfg.eval.scales)
    save = cfg.eval.save_predictions if args.save_predictions is None else args.save_predictions
    paste = args.paste or "nearest"
    input_size = tuple(cfg.data.input_size)
    convention = (meta.get("channel_order", cfg.model.channel_order), tuple(meta.get("mean", cfg.model.mean)),
                  tuple(meta.get("std", cfg.model.std)))
    if convention != (cfg.model.channel_order, tuple(cfg.model.mean), tuple(cfg.model.std)):
        log.warning("the checkpoint's input convention %s differs from the config's; using the checkpoint's",
                    convention)
    if tuple(meta.get("input_size", input_size)) != input_size:
        log.warning("network input %s (config data.input_size) differs from the checkpoint's training size %s",
                    input_size, tuple(meta["input_size"]))

    ds = build_dataset(cfg, split, train=False)
    ds.transform = EvalTransform(input_size, *convention)
    loader = build_loader(ds, batch_size=cfg.eval.batch_size, workers=cfg.data.workers, seed=cfg.seed, train=False)
    beside = os.path.join("runs", name) if name != args.checkpoint else os.path.dirname(os.path.abspath(name))
    out = args.out or os.path.join(beside, f"eval_{ds.split}")  # a registry name: runs/<name>/, not the cache
    log.info("scoring '%s' on %d images of '%s' split '%s' (input %s, flip %s, scales %s, paste %s, %s)",
             args.checkpoint, len(ds), cfg.data.root, ds.split, input_size, flip, scales, paste, device)
    with _progress(len(ds), args.no_progress, "evaluating") as bar:
        cm = evaluate(model, loader, ds, spec.num_classes, device=device, scales=scales,
                      flip_perm=flip_permutation(spec).tolist() if flip else None, precision=cfg.eval.precision,
                      channels_last=cfg.eval.channels_last, original_resolution=True, paste=paste,
                      on_prediction=_prediction_writer(out, spec, ds) if save else None, progress=bar)
    protocol = _common_protocol(spec, cfg.data.root, ds.split, len(ds))
    protocol.update({
        "source": "checkpoint", "checkpoint": os.path.abspath(args.checkpoint),
        **({"checkpoint_name": name} if name != args.checkpoint else {}),
        "checkpoint_sha256": sha256_of(args.checkpoint), "checkpoint_kind": meta.get("source", "dml_csr"),
        "config": os.path.abspath(args.config), "model": meta.get("model_name", "dml_csr"),
        "resolution": {"network_input": list(input_size),
                       "scored_at": SCORED_AT[paste]},
        "input_convention": {"channel_order": convention[0], "mean": list(convention[1]), "std": list(convention[2])},
        "paste": paste, "flip": bool(flip), "scales": scales, "precision": cfg.eval.precision, "device": str(device),
        "predictions": os.path.abspath(os.path.join(out, "labels")) if save else None,
    })
    report(cm, spec, protocol, out)
    return 0


def main(argv=None) -> int:
    setup_logging()
    args = parse_args(argv)
    return evaluate_predictions(args) if args.predictions else evaluate_checkpoint(args)


if __name__ == "__main__":
    run_main(main)
