"""Scoring predictions written by any method: a folder of label PNGs (one class index a pixel, at the original
resolution) against a prepared root's split or a folder of label maps, with the same pooled confusion matrix as a
model (:mod:`dml_csr.evaluation.protocol`). Predictions in another dataset's class order are matched by class name.

A prediction labels every pixel: values outside the class indices of its dataset, 255 included, are refused (only
the ground truth may mark pixels to ignore). A file that cannot be read (missing, empty, a link loop, over a limit,
undecodable) costs only its own sample: it is named in a warning, left out of the score and listed in
``metrics.json`` under ``protocol.skipped``.
"""
from __future__ import annotations

import logging
import os
from typing import Optional

import numpy as np

from ..data.dataset import UnreadableFileError, read_image, read_label, read_split_list, resolve_split
from ..data.custom import dataset_spec
from ..data.labels import class_mapping, get_spec
from ..data.pairing import IMAGE_EXTS, LABEL_EXTS, check_paired, files_by_stem
from .metrics import ConfusionMatrix
from .protocol import output_folder, progress_bar, protocol_record, report

__all__ = ["score_predictions", "score_pairs", "folder_pairs", "root_pairs", "class_luts", "read_prediction",
           "LABEL_EXTS", "IMAGE_EXTS"]

log = logging.getLogger(__name__)


def score_predictions(predictions: str, dataset: str, *, data: Optional[str] = None, masks: Optional[str] = None,
                      images: Optional[str] = None, pred_dataset: Optional[str] = None, split: Optional[str] = None,
                      out: Optional[str] = None, progress: bool = True, overwrite: bool = False) -> dict:
    """Score a folder of predicted label PNGs against a prepared root's split (``data``) or a folder of label maps
    (``masks``, with ``images`` optional), in ``dataset``'s class order (predictions written in ``pred_dataset``'s
    order are read through :func:`class_luts`). Writes ``<out>/metrics.json`` (default
    ``<predictions>_eval_<split>``; an existing one is replaced only with ``overwrite``) and returns its record."""
    spec = dataset_spec(dataset, data)  # custom: the classes data's root declares
    pred_spec = get_spec(pred_dataset) if pred_dataset else spec
    if masks:
        pairs, split = folder_pairs(predictions, masks, images), None
    else:
        pairs, split = root_pairs(predictions, data, split or "test")
    suffix = f"_eval_{split}" if split else "_eval"
    out = output_folder(out or f"{predictions.rstrip(os.sep)}{suffix}", overwrite)
    skipped: list[dict] = []
    cm = score_pairs(pairs, spec, pred_spec, progress=progress, skipped=skipped)
    if len(skipped) == len(pairs):
        raise ValueError(f"none of the {len(pairs)} samples could be read; first: {skipped[0]['reason']}")
    protocol = protocol_record(spec, data, split, len(pairs) - len(skipped))
    protocol.update({"source": "predictions", "predictions": os.path.abspath(predictions),
                     "masks": os.path.abspath(masks) if masks else None,
                     "images": os.path.abspath(images) if images else None,
                     "class_mapping": class_luts(spec, pred_spec)[2] if pred_spec.name != spec.name else None,
                     "resolution": {"network_input": None, "scored_at": "original label resolution (as written)"},
                     "paste": None, "score_at": None, "align": None, "flip": None, "scales": None, "checkpoint": None,
                     "checkpoint_sha256": None, "skipped": skipped})
    return report(cm, spec, protocol, out)


def folder_pairs(predictions: str, masks: str, images: Optional[str] = None) -> list[tuple]:
    """``[(name, prediction, mask, image or None)]`` of the three folders, paired by file stem; a file of one without
    its partner in another is an error naming it."""
    preds = files_by_stem(predictions, (".png",), "predictions")
    masks_ = files_by_stem(masks, LABEL_EXTS, "masks")
    check_paired(preds, masks_, "prediction(s)", masks)
    check_paired(masks_, preds, "mask(s)", predictions)
    found = {}
    if images:
        found = files_by_stem(images, IMAGE_EXTS, "images")
        check_paired(masks_, found, "mask(s)", images)
    return [(n, preds[n], masks_[n], found.get(n)) for n in sorted(masks_)]


def root_pairs(predictions: str, root: str, split: str = "test") -> tuple[list[tuple], str]:
    """``[(name, prediction, label, None)]`` of a prepared root's split, each sample's ``NAME.png`` in
    ``predictions``; and the split's name as the root spells it."""
    split = resolve_split(root, split)
    items = read_split_list(root, split)
    if not items:
        raise ValueError(f"split '{split}' of '{root}' lists no sample ({split}_list.txt is empty); nothing to score")
    if not os.path.isdir(predictions):
        raise FileNotFoundError(f"predictions folder '{predictions}' does not exist")
    missing = [name for name, _, _ in items if not os.path.lexists(os.path.join(predictions, f"{name}.png"))]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of {len(items)} samples of '{split}' have no prediction in "
                                f"'{predictions}' (expected NAME.png), e.g. {', '.join(missing[:5])}")
    return [(name, os.path.join(predictions, f"{name}.png"), lp, None) for name, _, lp in items], split


def class_luts(spec, pred_spec):
    """(prediction LUT, ground-truth LUT, record) reading ``pred_spec``'s labels in ``spec``'s order by class name
    (``--pred-dataset``): a predicted class ``spec`` lacks -> background; ground truth of a class ``pred_spec``
    lacks -> 255 (ignored)."""
    to_dst, unmatched = class_mapping(pred_spec, spec)
    pred_lut = np.where(to_dst < 0, 0, to_dst).astype(np.uint8)
    gt_lut = np.arange(256, dtype=np.uint8)
    gt_lut[list(unmatched)] = 255
    record = {"pred_dataset": pred_spec.name, "pred_classes": list(pred_spec.classes),
              "mapped": {pred_spec.classes[i]: spec.classes[j] for i, j in enumerate(to_dst) if j >= 0},
              "to_background": [pred_spec.classes[i] for i, j in enumerate(to_dst) if j < 0],
              "ignored_ground_truth": [spec.classes[j] for j in unmatched]}
    return pred_lut, gt_lut, record


def read_prediction(path: str, pred_spec) -> np.ndarray:
    """A predicted label map; any value outside the class indices of ``pred_spec``, 255 included, is refused."""
    pred = read_label(path)
    c = pred_spec.num_classes
    if int(pred.max()) >= c:
        bad = sorted(set(pred[pred >= c].tolist()))
        raise ValueError(f"prediction '{path}' has value{'s' * (len(bad) > 1)} {', '.join(map(str, bad))}; dataset "
                         f"'{pred_spec.name}' has {c} classes: expected class indices 0..{c - 1} (255 is refused: a "
                         "prediction labels every pixel)")
    return pred


def score_pairs(pairs, spec, pred_spec, progress: bool = False, skipped: Optional[list] = None) -> ConfusionMatrix:
    """One confusion matrix (``spec``'s classes) over ``(name, prediction, mask, image or None)`` files. With a
    ``skipped`` list, a sample with a file that cannot be read is named in a warning, appended to it (``{"name",
    "reason"}``) and left out; without one, it stops the scoring."""
    pred_lut = gt_lut = None
    if pred_spec.name != spec.name:
        pred_lut, gt_lut, _ = class_luts(spec, pred_spec)
    cm = ConfusionMatrix(spec.num_classes)
    with progress_bar(len(pairs), "scoring", not progress) as bar:
        for name, pred_path, label_path, image_path in pairs:
            try:
                pred = read_prediction(pred_path, pred_spec)
                gt = read_label(label_path, spec.num_classes)
                size = read_image(image_path).shape[:2] if image_path else gt.shape
            except UnreadableFileError as e:
                if skipped is None:
                    raise
                log.warning("sample '%s' left out: %s", name, e)
                skipped.append({"name": name, "reason": str(e)})
                bar.update(1)
                continue
            if pred.shape != gt.shape:
                raise ValueError(f"prediction '{pred_path}' is {pred.shape[1]}x{pred.shape[0]} (WxH) but label "
                                 f"'{label_path}' is {gt.shape[1]}x{gt.shape[0]}; predictions must be at the "
                                 "original resolution")
            if size != gt.shape:
                raise ValueError(f"image '{image_path}' is {size[1]}x{size[0]} (WxH) but its mask '{label_path}' is "
                                 f"{gt.shape[1]}x{gt.shape[0]}; expected the same size")
            if pred_lut is not None:
                pred, gt = pred_lut[pred], gt_lut[gt]
            cm.update(np.ascontiguousarray(pred), gt)
            bar.update(1)
    return cm
