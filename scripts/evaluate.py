#!/usr/bin/env python
"""Score a checkpoint (ours or the authors') or a folder of predicted label PNGs on a split, with one protocol.

Protocol: every image goes through the evaluation affine to the network input (whole image, aspect kept), the
prediction is mapped back onto the original label map (inverse affine, nearest) and one confusion matrix is pooled
over the split (label 255 ignored). Reported: per-class F1 and IoU, mean F1 over foreground classes, mIoU with and
without background, pixel accuracy, and the merged sets (confusion inside a set counts as correct).

    python scripts/evaluate.py --config configs/helen_dml_csr_r101.yaml --checkpoint helen.pth [--split test]
        [--flip] [--scales 0.75,1,1.25] [--out DIR] [--save-predictions]
    python scripts/evaluate.py --predictions DIR --data data/helen --dataset helen [--split test]

Writes ``<out>/metrics.json`` (scores, confusion matrix and the protocol record) and prints a table.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys

from _common import add_config_args, load_cfg, run_main, setup_logging, write_image

log = logging.getLogger("evaluate")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(p, required=False)
    p.add_argument("--checkpoint", help="our checkpoint (runs/<name>/best.pt) or an authors' .pth file")
    p.add_argument("--split", default=None, help="split to score (default: the config's data.test_split, or test)")
    p.add_argument("--flip", action="store_true", default=None, help="flip testing (default: eval.flip)")
    p.add_argument("--scales", default=None, help="comma-separated input scales, e.g. 0.75,1,1.25 (default: "
                                                  "eval.scales)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or auto (default: train.device)")
    p.add_argument("--out", default=None, help="output folder (default: <checkpoint folder>/eval_<split>, or "
                                               "<predictions>_eval_<split>)")
    p.add_argument("--save-predictions", action="store_true", default=None,
                   help="write label PNGs (<out>/labels, re-scorable with --predictions) and colour PNGs "
                        "(<out>/colour) (default: eval.save_predictions)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = p.add_argument_group("scoring predictions written by any method (no model)")
    g.add_argument("--predictions", help="folder with one NAME.png of class indices per listed sample, at the "
                                         "original resolution")
    g.add_argument("--data", help="prepared dataset root with <split>_list.txt")
    g.add_argument("--dataset", help="label registry key (helen, lapa, celebamask_hq, lfw_pl, synthetic, ...)")
    args = p.parse_args(argv)
    if args.predictions:
        missing = [f"--{k}" for k in ("data", "dataset") if not getattr(args, k)]
        if missing:
            p.error(f"--predictions needs {' and '.join(missing)}")
        if args.checkpoint:
            p.error("--predictions scores files without a model; drop --checkpoint")
    elif not (args.config and args.checkpoint):
        p.error("give --config and --checkpoint (score a model), or --predictions, --data and --dataset")
    return args


def parse_scales(text: str) -> list[float]:
    try:
        scales = [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--scales '{text}': expected comma-separated numbers, e.g. 0.75,1,1.25") from None
    if not scales or min(scales) <= 0:
        raise ValueError(f"--scales '{text}': expected positive numbers")
    return scales


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_json(path: str, obj: dict) -> None:
    from dml_csr.checkpoint import atomic_write

    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2, allow_nan=True).encode()), suffix=".json")


def _progress(total: int, disable: bool, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=disable, file=sys.stderr)


def _prediction_writer(out: str, spec):
    """``on_prediction(name, labels)`` saving the label PNG and its colour rendering, each written atomically."""
    import numpy as np

    os.makedirs(os.path.join(out, "labels"), exist_ok=True)
    os.makedirs(os.path.join(out, "colour"), exist_ok=True)
    lut = np.full((256, 3), 255, np.uint8)
    lut[: spec.num_classes] = spec.palette

    def save(name: str, labels) -> None:
        write_image(os.path.join(out, "labels", f"{name}.png"), labels.astype(np.uint8))
        write_image(os.path.join(out, "colour", f"{name}.png"), np.ascontiguousarray(lut[labels][..., ::-1]))

    return save


def report(cm, spec, protocol: dict, out: str) -> dict:
    """Scores from ``cm``: print the table, write ``<out>/metrics.json``; returns the record."""
    from dml_csr.metrics import format_scores

    scores = cm.compute(spec.classes, spec.groups)
    record = {"protocol": protocol, "scores": scores, "confusion": cm.mat.tolist()}
    path = os.path.join(out, "metrics.json")
    write_json(path, record)
    print(format_scores(scores))
    print(f"wrote {path}")
    return record


def _common_protocol(spec, root: str, split: str, n: int) -> dict:
    return {
        "split": split, "dataset": spec.name, "dataset_root": os.path.abspath(root), "num_samples": n,
        "classes": list(spec.classes),
        "pooling": "one confusion matrix over every pixel of the split; label 255 ignored",
        "miou_includes_background": True,
        "metrics": {"miou": "mean IoU over all classes, background included (the authors' number)",
                    "miou_fg": "mean IoU without background",
                    "mean_f1": "mean F1 over every class but background",
                    "groups": "F1 of merged class sets; confusion inside a set counts as correct"},
        "groups": {g: [spec.classes[i] for i in m] for g, m in spec.groups.items()},
        "absent_classes": "a class in neither prediction nor ground truth scores NaN and is left out of the means",
    }


def evaluate_predictions(args) -> int:
    import numpy as np

    from dml_csr.data.dataset import read_label, read_split_list, resolve_split
    from dml_csr.data.labels import get_spec
    from dml_csr.metrics import ConfusionMatrix

    spec = get_spec(args.dataset)
    split = resolve_split(args.data, args.split or "test")
    items = read_split_list(args.data, split)
    if not os.path.isdir(args.predictions):
        raise FileNotFoundError(f"predictions folder '{args.predictions}' does not exist")
    missing = [name for name, _, _ in items if not os.path.isfile(os.path.join(args.predictions, f"{name}.png"))]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of {len(items)} samples of '{split}' have no prediction in "
                                f"'{args.predictions}' (expected NAME.png), e.g. {', '.join(missing[:5])}")
    cm = ConfusionMatrix(spec.num_classes)
    with _progress(len(items), args.no_progress, "scoring") as bar:
        for name, _, label_path in items:
            pred_path = os.path.join(args.predictions, f"{name}.png")
            pred = read_label(pred_path)
            gt = read_label(label_path, spec.num_classes)
            if pred.shape != gt.shape:
                raise ValueError(f"prediction '{pred_path}' is {pred.shape[1]}x{pred.shape[0]} (WxH) but label "
                                 f"'{label_path}' is {gt.shape[1]}x{gt.shape[0]}; predictions must be at the "
                                 "original resolution")
            if int(pred.max()) >= spec.num_classes:
                raise ValueError(f"prediction '{pred_path}' has value {int(pred.max())}; expected class indices "
                                 f"in [0, {spec.num_classes}) of dataset '{spec.name}'")
            cm.update(np.ascontiguousarray(pred), gt)
            bar.update(1)
    protocol = _common_protocol(spec, args.data, split, len(items))
    protocol.update({"source": "predictions", "predictions": os.path.abspath(args.predictions),
                     "resolution": {"network_input": None, "scored_at": "original label resolution (as written)"},
                     "flip": None, "scales": None, "checkpoint": None, "checkpoint_sha256": None})
    report(cm, spec, protocol, args.out or f"{args.predictions.rstrip(os.sep)}_eval_{split}")
    return 0


def evaluate_checkpoint(args) -> int:
    from dml_csr.data.dataset import build_dataset
    from dml_csr.data.labels import flip_permutation, get_spec
    from dml_csr.data.loader import build_loader
    from dml_csr.data.transforms import EvalTransform
    from dml_csr.distributed import resolve_device
    from dml_csr.engine import evaluate
    from dml_csr.loading import load_model

    cfg = load_cfg(args)
    spec = get_spec(cfg.data.dataset)
    device = resolve_device(args.device or cfg.train.device)
    model, meta = load_model(args.checkpoint, device=device)
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
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.checkpoint)), f"eval_{ds.split}")
    log.info("scoring '%s' on %d images of '%s' split '%s' (input %s, flip %s, scales %s, %s)", args.checkpoint,
             len(ds), cfg.data.root, ds.split, input_size, flip, scales, device)
    with _progress(len(ds), args.no_progress, "evaluating") as bar:
        cm = evaluate(model, loader, ds, spec.num_classes, device=device, scales=scales,
                      flip_perm=flip_permutation(spec).tolist() if flip else None, precision=cfg.eval.precision,
                      channels_last=cfg.eval.channels_last, original_resolution=True,
                      on_prediction=_prediction_writer(out, spec) if save else None, progress=bar)
    protocol = _common_protocol(spec, cfg.data.root, ds.split, len(ds))
    protocol.update({
        "source": "checkpoint", "checkpoint": os.path.abspath(args.checkpoint),
        "checkpoint_sha256": sha256(args.checkpoint), "checkpoint_kind": meta.get("source", "dml_csr"),
        "config": os.path.abspath(args.config), "model": meta.get("model_name", "dml_csr"),
        "resolution": {"network_input": list(input_size),
                       "scored_at": "original label resolution (prediction argmax at the network input, mapped "
                                    "back with the inverse evaluation affine, nearest)"},
        "input_convention": {"channel_order": convention[0], "mean": list(convention[1]), "std": list(convention[2])},
        "flip": bool(flip), "scales": scales, "precision": cfg.eval.precision, "device": str(device),
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
