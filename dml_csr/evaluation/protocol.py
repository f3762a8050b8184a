"""The evaluation protocol: a model scored on a split, its predictions mapped back onto the original label maps.

Each image goes through the evaluation affine to the network input (the whole image, aspect kept), the model
predicts there, and the prediction goes back onto the image's own label map through the inverse of that affine
(``paste="nearest"``: the argmax warped nearest-neighbour, background outside the crop, the authors' way;
``"smooth"``: the class probabilities warped bilinearly, then the argmax; ``"logits"``: their logarithms, FaRL's
way) before it enters one confusion matrix
pooled over the split (label 255 ignored). Reported: per-class F1 and IoU, mean F1 over foreground classes, mIoU
with and without background, pixel accuracy, and the merged sets (confusion inside a set counts as correct). Other
papers' framing and scoring (``--align landmarks``, ``--score-at input``) are switches: :mod:`.framing`.

:func:`evaluate` is the pass over a loader (the trainer's validation uses it too); :func:`score_checkpoint` scores
a checkpoint on a prepared split as ``scripts/evaluate.py`` does; :func:`report` writes ``metrics.json`` (scores,
confusion matrix and the protocol record of :func:`protocol_record`) and prints the table.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Callable, Iterable, Optional, Sequence

import numpy as np
import torch

from .. import inference
from ..data import drawing
from ..data.face_template import template_points
from ..data.transforms import batch_input
from ..distributed import unwrap_model
from ..files import write_image, write_json
from ..progress import progress
from .framing import ALIGNS, SCORE_AT, check_switches, describe, landmark_crop, summary_line, trained_align
from .metrics import ConfusionMatrix, format_scores

__all__ = ["evaluate", "score_checkpoint", "protocol_record", "report", "output_folder", "default_folder",
           "prediction_writer", "progress_bar", "PASTES", "SCORED_AT", "SCORE_AT", "ALIGNS"]

log = logging.getLogger(__name__)

PASTES = ("nearest", "smooth", "logits")
SCORED_AT = {p: describe("original", "whole", p) for p in PASTES}  # the authors' framing, scored at the original


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: Iterable, dataset, num_classes: int, *, device: torch.device,
             scales: Sequence[float] = (1.0,), flip_perm: Optional[Sequence[int]] = None, precision: str = "fp32",
             channels_last: bool = False, original_resolution: bool = True, paste: str = "nearest",
             on_prediction: Optional[Callable[[str, np.ndarray], None]] = None, progress=None,
             crf=None) -> ConfusionMatrix:
    """Score ``model`` on a split: predictions are mapped back onto each original label map (inverse of the
    evaluation affine) before they enter one pooled confusion matrix.

    Args:
        dataset: the loader's dataset; ``dataset.load_label(index)`` gives an original label map.
        original_resolution: False scores at network resolution against the warped labels instead (faster; for
            validation during training).
        paste: how a prediction goes back onto the original grid: "nearest" (the authors' protocol: the argmax at
            network resolution, warped nearest-neighbour), "smooth" (the probabilities warped bilinearly, then the
            argmax; outside the warped region every probability is 0, i.e. background, as nearest's fill) or
            "logits" (their logarithms warped bilinearly, zero outside: FaRL's protocol. A pixel's log-probabilities
            are its logits less one number shared by every class, so at one scale without flip the argmax is that
            of the logits warped back).
    A model that places crops from keypoints (``uses_keypoints``) gets the batch's ``keypoints`` when it has them.
        on_prediction: called with (sample name, label map at the scored resolution), e.g. to save it.
        crf: the dense CRF (Liu et al.'s CNN-CRF) on each image's probabilities at network resolution before they
            are mapped back (:func:`dml_csr.inference.crf_probs`): a ``CRFParams``, a number of mean-field steps
            with the default kernels, or None/0: none.
    """
    if paste not in PASTES:
        raise ValueError(f"paste must be one of {', '.join(PASTES)}, got {paste!r}")
    model.eval()
    cm = ConfusionMatrix(num_classes)
    index_of = {name: i for i, name in enumerate(dataset.names)} if original_resolution else {}
    uses_keypoints = getattr(unwrap_model(model), "uses_keypoints", False)
    for batch in loader:
        images = batch_input(batch, device)
        keypoints = batch["keypoints"].to(device) if uses_keypoints and "keypoints" in batch else None
        probs = inference.predict_probs(model, images, scales=scales, flip_perm=flip_perm, precision=precision,
                                        channels_last=channels_last, keypoints=keypoints)
        if crf:
            probs = inference.crf_probs(probs, batch["image"], crf)
        pred = probs.argmax(1).to(torch.uint8).cpu().numpy()
        for j in range(pred.shape[0]):
            if original_resolution:
                meta = batch["meta"][j]
                inverse, size, warp = inference.inverse_of(meta), meta["size"], meta.get("tanh_warp", 0.0)
                # outside the crop: background (fill 0), as the authors' protocol; smooth: every probability 0
                lab = (inference.paste_back(pred[j], inverse, size, mode="nearest", tanh_warp=warp)
                       if paste == "nearest" else
                       inference.paste_back(probs[j] if paste == "smooth" else probs[j].float().clamp_min(1e-30).log(),
                                            inverse, size, mode="bilinear", tanh_warp=warp).argmax(0).astype(np.uint8))
                gt = dataset.load_label(index_of[batch["name"][j]])
            else:
                lab = pred[j]
                gt = batch["label"][j].numpy()
            cm.update(torch.from_numpy(np.ascontiguousarray(lab)), torch.from_numpy(np.ascontiguousarray(gt)))
            if on_prediction is not None:
                on_prediction(batch["name"][j], lab)
        if progress is not None:
            progress.update(pred.shape[0])
    cm.all_reduce()
    return cm


def crf_record(params) -> Optional[dict]:
    """What metrics.json records of the dense CRF (a ``CRFParams`` or None): its iterations and kernels, or None."""
    return dataclasses.asdict(params) if params is not None and params.iterations else None


def protocol_record(spec, root: Optional[str], split: Optional[str], n: int) -> dict:
    """What every ``metrics.json`` records of the protocol, whatever was scored."""
    return {
        "split": split, "dataset": spec.name, "dataset_root": os.path.abspath(root) if root else None,
        "num_samples": n, "classes": list(spec.classes),
        "pooling": "one confusion matrix over every pixel of the split; label 255 ignored",
        "miou_includes_background": True,
        "metrics": {"miou": "mean IoU over all classes, background included (the authors' number)",
                    "miou_fg": "mean IoU without background",
                    "mean_f1": "mean F1 over every class but background" if spec.f1_classes is None else
                               "mean F1 over the classes of mean_f1_classes",
                    "groups": "F1 of merged class sets; confusion inside a set counts as correct"},
        "groups": {g: [spec.classes[i] for i in m] for g, m in spec.groups.items()},
        **({"mean_f1_classes": [spec.classes[i] for i in spec.f1_classes]} if spec.f1_classes is not None else {}),
        "absent_classes": "a class in neither prediction nor ground truth scores NaN and is left out of the means",
    }


def output_folder(out: str, overwrite: bool = False) -> str:
    """``out``, checked before any work: an earlier ``metrics.json`` there is replaced only with ``overwrite``."""
    path = os.path.join(out, "metrics.json")
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"'{path}' exists (an earlier evaluation); pass --overwrite to replace it, or --out to "
                              "write elsewhere")
    return out


def default_folder(split: Optional[str], flip: bool = False, scales: Sequence[float] = (1.0,),
                   paste: str = "nearest", score_at: str = "original", align: str = "whole", crf: int = 0,
                   crf_kernels: Optional[dict] = None) -> str:
    """``eval_<split>`` followed by the options that change the numbers (``_flip``, ``_scales0.75-1-1.25``,
    ``_smooth``, ``_input``, ``_landmarks``, ``_crf5``, then the CRF's kernel settings other than the defaults:
    ``_bilateral_rgb20-normalizationrow``), so that evaluations with other options never share a folder."""
    name = f"eval_{split}" if split else "eval"
    if flip:
        name += "_flip"
    if list(scales) != [1.0]:
        name += "_scales" + "-".join(f"{s:g}" for s in scales)
    if paste != "nearest":
        name += f"_{paste}"
    if score_at != "original":
        name += f"_{score_at}"
    if align != "whole":
        name += f"_{align}"
    if crf:
        name += f"_crf{crf}"
        if crf_kernels:
            from ..models.dense_crf import kernel_text
            name += "_" + kernel_text(crf_kernels, assign="", between="-")
    return name


def report(cm: ConfusionMatrix, spec, protocol: dict, out: str) -> dict:
    """Scores from ``cm``: print the table, write ``<out>/metrics.json``; returns the record."""
    scores = cm.compute(spec.classes, spec.groups, spec.mean_f1_indices)
    record = {"protocol": protocol, "scores": scores, "confusion": cm.mat.tolist()}
    path = os.path.join(out, "metrics.json")
    write_json(path, record)
    print(format_scores(scores))
    if spec.f1_classes is not None:  # the table's "(foreground classes)" is the default, not what was declared
        print(f"mean F1 over: {', '.join(spec.classes[i] for i in spec.f1_classes)}")
    if summary_line(protocol):
        print(summary_line(protocol))
    print(f"wrote {path}")
    return record


def progress_bar(total: int, desc: str, disable: bool = False):
    """Progress in images on stderr: a bar on a terminal, a line every 10 % in a log (:mod:`dml_csr.progress`)."""
    return progress(total, desc, "img", enabled=not disable)


def prediction_writer(out: str, palette: np.ndarray, dataset=None) -> Callable[[str, np.ndarray], None]:
    """``on_prediction(name, labels)`` saving ``<out>/labels/NAME.png`` and a colour PNG ``<out>/colour/NAME.png``,
    each written atomically: photo, truth and prediction side by side when ``dataset`` can give the sample's photo
    and label, the prediction alone else."""
    index = {n: i for i, n in enumerate(dataset.names)} if dataset is not None else {}

    def save(name: str, labels: np.ndarray) -> None:
        write_image(os.path.join(out, "labels", f"{name}.png"), labels.astype(np.uint8))
        photo, truth = dataset.load_pair(index[name]) if name in index else (None, None)
        write_image(os.path.join(out, "colour", f"{name}.png"), drawing.side_by_side(photo, truth, labels, palette))

    return save


def score_checkpoint(cfg, checkpoint: str, *, split: Optional[str] = None, flip: Optional[bool] = None,
                     scales: Optional[Sequence[float]] = None, paste: str = "nearest", out: Optional[str] = None,
                     save_predictions: Optional[bool] = None, device: Optional[str] = None, config_path: str = "",
                     progress: bool = True, overwrite: bool = False, score_at: str = "original",
                     align: Optional[str] = None, crf: Optional[int] = None,
                     crf_kernels: Optional[dict] = None) -> dict:
    """Score ``checkpoint`` (our file, an authors' file or a registry name) on ``split`` of ``cfg``'s dataset
    (default ``cfg.data.test_split``) with the protocol above, or with the switches of
    :mod:`dml_csr.evaluation.framing` (``score_at``, ``align``: by default the checkpoint's training framing,
    :func:`~dml_csr.evaluation.framing.trained_align`); unset options come from ``cfg.eval``. Writes
    ``<out>/metrics.json`` (default: ``<checkpoint folder>/`` :func:`default_folder`, under ``runs/<name>/`` for a
    registry name; an existing one is replaced only with ``overwrite``) and returns its record. ``crf``: the dense
    CRF's mean-field steps (default ``cfg.eval.crf_iterations``), ``crf_kernels``: its kernel settings other than
    the defaults (:func:`dml_csr.models.dense_crf.crf_params`)."""
    from ..data.class_map import label_spec
    from ..data.labels import flip_permutation
    from ..data.loader import build_loader
    from ..distributed import resolve_device
    from ..hub import is_name, resolve, sha256_of
    from ..checkpoint import load_model
    from ..models import dense_crf
    from ..sharing.folder import weights_file

    check_switches(score_at, align or "whole")
    if score_at == "input" and paste != "nearest":
        raise ValueError(f"paste={paste!r} maps the prediction back onto the original label map; score_at='input' "
                         f"scores at the network input, where nothing is pasted")
    spec = label_spec(cfg)
    dev = resolve_device(device or cfg.train.device)
    crf = cfg.eval.crf_iterations if crf is None else crf
    if crf_kernels and not crf:
        raise ValueError(f"CRF kernel settings {crf_kernels} need the CRF on: --crf N (or eval.crf_iterations)")
    crf_kernels = {**{k: v for k, v in dataclasses.asdict(cfg.eval.crf_kernels).items() if v is not None},
                   **(crf_kernels or {})}  # the config's, then the command line's (ignored with the CRF off)
    crf_params = dense_crf.crf_params(crf, crf_kernels) if crf else None  # checked before any work (a download)
    kernels = dense_crf.changed_kernels(crf_params) if crf_params else {}
    named = is_name(checkpoint) or checkpoint.startswith("hf://")  # a registry name wins over a local file of it
    path = resolve(checkpoint, kind="dml_csr") if named else checkpoint  # a name: its cached, verified file or folder
    model, meta = load_model(checkpoint, device=dev)
    _check_classes(meta, spec, path, config_path)
    align = align or trained_align(meta)
    flip = cfg.eval.flip if flip is None else flip
    scales = list(cfg.eval.scales) if scales is None else list(scales)
    save = cfg.eval.save_predictions if save_predictions is None else save_predictions
    ds, conv, skipped = _scored_split(cfg, split, meta, path, align)
    loader = build_loader(ds, batch_size=cfg.eval.batch_size, workers=cfg.data.workers, seed=cfg.seed, train=False)
    beside = os.path.join("runs", checkpoint.replace("://", "_")) if checkpoint != path else \
        os.path.dirname(os.path.abspath(weights_file(path)))
    folder = default_folder(ds.split, flip, scales, paste, score_at, align, crf, kernels)
    out = output_folder(out or os.path.join(beside, folder), overwrite)
    crf_words = f"{crf} mean-field step(s) {dense_crf.kernel_text(kernels)}".rstrip() if crf else "off"
    log.info("scoring '%s' on %d images of '%s' split '%s' (input %s, flip %s, scales %s, paste %s, score at %s, "
             "align %s, dense CRF %s, %s)", path, len(ds), cfg.data.root, ds.split, cfg.data.input_size, flip, scales,
             paste, score_at, align, crf_words, dev)
    with progress_bar(len(ds), "evaluating", not progress) as bar:
        cm = evaluate(model, loader, ds, spec.num_classes, device=dev, scales=scales,
                      flip_perm=flip_permutation(spec).tolist() if flip else None, precision=cfg.eval.precision,
                      channels_last=cfg.eval.channels_last, original_resolution=score_at == "original",
                      paste=paste, progress=bar, crf=crf_params,
                      on_prediction=prediction_writer(out, spec.palette, ds) if save else None)
    record = protocol_record(spec, cfg.data.root, ds.split, len(ds))
    record.update({
        "source": "checkpoint", "checkpoint": os.path.abspath(path),
        **({"checkpoint_name": checkpoint} if checkpoint != path else {}),
        "checkpoint_sha256": sha256_of(weights_file(path)), "checkpoint_kind": meta.get("source", "dml_csr"),
        "config": os.path.abspath(config_path) if config_path else None, "model": meta.get("model_name", "dml_csr"),
        "resolution": {"network_input": list(cfg.data.input_size),
                       "scored_at": describe(score_at, align, paste, conv["tanh_warp"])},
        "input_convention": {"channel_order": conv["channel_order"], "mean": list(conv["mean"]),
                             "std": list(conv["std"]), "tanh_warp": conv["tanh_warp"]},
        "paste": paste, "score_at": score_at, "align": align, "flip": bool(flip), "scales": scales, "skipped": skipped,
        "crf": crf_record(crf_params),
        "precision": cfg.eval.precision, "device": str(dev),
        "predictions": os.path.abspath(os.path.join(out, "labels")) if save else None,
        **({"alignment": {"template": meta["crop"]["points"], "landmarks": "<split>/landmarks/NAME.txt"}}
           if align == "landmarks" else {}),
    })
    return report(cm, spec, record, out)


def _scored_split(cfg, split: Optional[str], meta: dict, path: str, align: str):
    """The split to score, each sample made with the checkpoint's input convention (its meta, warning where the
    config's differs) and framed by ``align``; and that convention."""
    from ..data.dataset import build_dataset

    input_size = tuple(cfg.data.input_size)
    if tuple(meta.get("input_size", input_size)) != input_size:
        log.warning("network input %s (config data.input_size) differs from the checkpoint's training size %s",
                    input_size, tuple(meta["input_size"]))
    conv = {k: meta.get(k, getattr(cfg.model, k)) for k in ("channel_order", "mean", "std")}
    if (conv["channel_order"], tuple(conv["mean"]), tuple(conv["std"])) != \
            (cfg.model.channel_order, tuple(cfg.model.mean), tuple(cfg.model.std)):
        log.warning("the checkpoint's input convention %s differs from the config's; using the checkpoint's", conv)
    conv["tanh_warp"] = float(meta.get("tanh_warp", 0.0))  # the crop the model was trained on
    if conv["tanh_warp"] != cfg.data.tanh_warp:
        log.warning("the checkpoint was trained on crops with RoI tanh warp %g, the config says data.tanh_warp=%g; "
                    "using the checkpoint's", conv["tanh_warp"], cfg.data.tanh_warp)
    crop = landmark_crop(meta, path) if align == "landmarks" else None
    whole = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, align="whole", template="root"))
    ds = build_dataset(whole, split or cfg.data.test_split, train=False)  # framed below, as the checkpoint says
    ds.transform = inference.input_transform({**conv, "input_size": input_size}, cfg.data.edge_width)
    ds.template = None if crop is None else template_points(crop, input_size)
    skipped = _readable_only(ds, cfg.data.workers)
    return ds, conv, skipped


def _readable_only(ds, workers: int = 0) -> list[dict]:
    """Leave the samples whose image or label cannot be read out of ``ds`` (with ``data.skip_bad``, every unusable
    sample: a size mismatch, bad label values, a missing landmarks file), each named in a warning; returns them
    (``{"name", "reason"}``). Every sample is read once here, before any scoring (``skip_bad``'s stand-in in
    training, the next sample, would be scored twice), on ``workers`` threads (the decoders release the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    from ..data.dataset import BadSampleError, UnreadableFileError

    left_out = BadSampleError if ds.skip_bad else UnreadableFileError
    ds.skip_bad = False

    def problem(i: int) -> Optional[Exception]:
        try:
            ds.load_pair(i)
            if ds.keypoints:
                ds.load_keypoints(i)
            if ds.template is not None:
                ds.landmark_affine(i)
        except left_out as e:
            return e
        return None

    pool = ThreadPoolExecutor(max(1, workers))
    try:
        problems = list(pool.map(problem, range(len(ds.items))))
    finally:  # an error not left out (a bad sample without skip_bad) stops the reading at once
        pool.shutdown(cancel_futures=True)
    keep, skipped = [], []
    for item, e in zip(ds.items, problems):
        if e is None:
            keep.append(item)
        else:
            log.warning("sample '%s' left out: %s", item[0], e)
            skipped.append({"name": item[0], "reason": str(e)})
    if not keep:
        raise ValueError(f"none of the {len(ds.items)} samples of split '{ds.split}' could be read; first: "
                         f"{skipped[0]['reason']}")
    ds.items = keep
    return skipped


def _check_classes(meta: dict, spec, path: str, config_path: str) -> None:
    if meta["num_classes"] != spec.num_classes:
        raise ValueError(f"checkpoint '{path}' has {meta['num_classes']} classes but config '{config_path}' "
                         f"(data.dataset={spec.name}) has {spec.num_classes}; use the config of the dataset the "
                         "checkpoint was trained on")
    if list(meta.get("classes", spec.classes)) != list(spec.classes) and meta.get("source") != "official":
        log.warning("checkpoint class names %s differ from dataset '%s' names %s; scoring by index",
                    meta.get("classes"), spec.name, list(spec.classes))
