"""Prediction, shared by evaluation, FaceParser, video, the web demo, export checks and quantization.

Three steps, one function each:

- :func:`input_transform`: the transform that turns an image into a model's input, built from the model's
  metadata (input size, channel order, mean, std; see :mod:`dml_csr.checkpoint`). :func:`network_input` applies it
  to a batch of images (each whole, or warped by a given affine) and normalises the batch on the device.
- :func:`predict_probs`: the model over a batch at one or several scales, optionally with horizontal-flip testing,
  as class probabilities. Flip testing mirrors the prediction back and swaps left/right channels with the label
  registry's permutation. :func:`crf_probs` optionally refines them with a dense CRF (Liu et al.'s CNN-CRF).
- :func:`paste_back`: network-space labels or probabilities back onto the image they came from, through the inverse
  of the affine that made the input, with the interpolation and the border as arguments. The evaluation protocol
  (the authors') is ``mode="nearest", border="constant"`` with fill 0 (background) on the argmax.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ._typed import shown
from .conventions import KEYPOINTS_MIRRORED, resize_bilinear
from .data.loader import collate_samples
from .data.tanh_warp import check_warp, image_maps
from .data.transforms import EvalTransform, batch_input, sample_affine
from .models.precision import autocast_context, to_model_input

__all__ = ["input_transform", "check_convention", "network_input", "network_batch", "predict_probs", "crf_probs",
           "paste_back", "inverse_of", "MODES", "BORDERS", "MAX_INPUT_SIDE"]

MODES = ("nearest", "bilinear")
BORDERS = ("constant", "replicate")
_CV2_MODE = {"nearest": cv2.INTER_NEAREST, "bilinear": cv2.INTER_LINEAR}
_CV2_BORDER = {"constant": cv2.BORDER_CONSTANT, "replicate": cv2.BORDER_REPLICATE}
MAX_INPUT_SIDE = 4096  # the largest network input side a checkpoint may state (the authors': 473)


def check_convention(meta: dict, where: str = "model metadata") -> None:
    """A model's input convention checked before any image meets it: ``input_size`` two whole numbers in
    [8, 4096], ``mean`` three finite numbers, ``std`` three finite numbers > 0, ``channel_order`` BGR or RGB,
    ``tanh_warp`` (when there) a number from 0 to 1.

    Raises:
        ValueError naming ``where``, the key, its value and what was expected.
    """
    def bad(key: str, expected: str) -> ValueError:
        return ValueError(f"{where}: '{key}' = {shown(meta.get(key))}; expected {expected}")

    size = meta.get("input_size")
    try:
        ok = len(size) == 2 and all(not isinstance(v, bool) and int(v) == v and 8 <= v <= MAX_INPUT_SIDE for v in size)
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise bad("input_size", f"[height, width], whole numbers from 8 to {MAX_INPUT_SIDE}")
    for key, low in (("mean", None), ("std", 0.0)):
        values = meta.get(key)
        ok = isinstance(values, (list, tuple)) and len(values) == 3
        try:
            ok = ok and all(math.isfinite(float(v)) and (low is None or float(v) > low) for v in values)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise bad(key, "3 finite numbers" + (" > 0" if low is not None else ""))
    if meta.get("channel_order") not in ("BGR", "RGB"):
        raise bad("channel_order", "'BGR' or 'RGB'")
    try:
        check_warp(meta.get("tanh_warp", 0.0))
    except ValueError:
        raise bad("tanh_warp", "a RoI tanh warp factor from 0 (none) to 1") from None


def input_transform(meta: dict, edge_width: int = 1) -> EvalTransform:
    """The evaluation transform of a model: the whole-image crop (or a given affine, :meth:`EvalTransform.warp`) to
    ``meta["input_size"]``, with the channel order, mean and std the model was trained with.

    Raises:
        KeyError naming the missing key when ``meta`` lacks one of them; ValueError naming a value out of range
        (:func:`check_convention`).
    """
    missing = [k for k in ("input_size", "channel_order", "mean", "std") if k not in meta]
    if missing:
        raise KeyError(f"model metadata lacks {', '.join(repr(k) for k in missing)}; expected the input convention a "
                       "checkpoint records (dml_csr.checkpoint.make_meta)")
    check_convention(meta)
    return EvalTransform(tuple(meta["input_size"]), meta["channel_order"], meta["mean"], meta["std"], edge_width,
                         tanh_warp=meta.get("tanh_warp", 0.0))


def network_input(images: Sequence[np.ndarray], transform: EvalTransform,
                  affines: Optional[Sequence[np.ndarray]] = None, device: Optional[torch.device] = None
                  ) -> tuple[torch.Tensor, list[np.ndarray]]:
    """The normalised network input of (H, W, 3) uint8 BGR ``images``, each through the whole-image crop or, with
    ``affines``, warped by its own image -> input affine (several affines of one image: pass the image once per
    affine).

    Returns:
        (B, 3, h, w) float32 on ``device``, and each sample's inverse affine (input pixels -> image pixels), what
        :func:`paste_back` takes.
    """
    batch, inverses = network_batch(images, transform, affines)
    return batch_input(batch, device), inverses


def network_batch(images: Sequence[np.ndarray], transform: EvalTransform,
                  affines: Optional[Sequence[np.ndarray]] = None) -> tuple[dict, list[np.ndarray]]:
    """:func:`network_input`'s collated batch before normalisation (its ``image``: (B, 3, h, w) uint8 BGR, what
    :func:`crf_probs` takes), and each sample's inverse affine."""
    if affines is None:
        samples = [transform(im) for im in images]
    else:
        samples = [transform.warp(im, m) for im, m in zip(images, affines)]
    return collate_samples(samples), [inverse_of(s["meta"]) for s in samples]


def inverse_of(meta: dict) -> np.ndarray:
    """The input -> image affine of a sample (its ``meta``): the authors' inverse matrix for the whole-image crop, as
    their evaluation warps with it, or the inverse of a sample's own affine."""
    return sample_affine(meta, inv=True)


@torch.no_grad()
def predict_probs(model: torch.nn.Module, images: torch.Tensor, *, size: Optional[Sequence[int]] = None,
                  scales: Sequence[float] = (1.0,), flip_perm: Optional[Sequence[int]] = None,
                  precision: str = "fp32", channels_last: bool = False,
                  keypoints: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Class probabilities, averaged over scales (and flips).

    Args:
        model: returns ``{"parsing": (B, C, h, w)}`` logits.
        images: (B, 3, H, W) normalised input.
        size: output (height, width); defaults to the input's.
        scales: input rescaling factors; the average of the softmax outputs is returned.
        flip_perm: when given, also run on the mirrored input; ``flip_perm[c]`` is the class ``c`` becomes mirrored.
        precision, channels_last: the fast path (autocast dtype, memory format); fp32 is the reference.
        keypoints: (B, 5, 2) pixels of ``images``, passed on (scaled and mirrored with each input) to models that
            place crops from them (``model(x, keypoints=...)``).
    Returns:
        (B, C, *size) float32 probabilities.
    """
    size = tuple(size or images.shape[-2:])
    h, w = images.shape[-2:]
    total, n = None, 0
    for s in scales:
        x = images if s == 1.0 else resize_bilinear(images, (max(1, round(h * s)), max(1, round(w * s))))
        variants = [(x, False)] + ([(torch.flip(x, dims=[3]), True)] if flip_perm is not None else [])
        for inp, flipped in variants:
            kwargs = {} if keypoints is None else {"keypoints": _move_keypoints(keypoints, (h, w), x.shape[-2:],
                                                                                  flipped)}
            with autocast_context(inp.device, precision):
                logits = model(to_model_input(inp, channels_last), **kwargs)["parsing"]
            logits = resize_bilinear(logits.float(), size)
            p = torch.softmax(logits.float(), dim=1)
            if flipped:
                p = torch.flip(p, dims=[3])[:, torch.as_tensor(flip_perm, device=p.device)]
            total = p if total is None else total + p
            n += 1
    return total / n


def crf_probs(probs: torch.Tensor, images: torch.Tensor, crf) -> torch.Tensor:
    """The dense CRF of Liu et al.'s CNN-CRF (:mod:`dml_csr.models.dense_crf`) on (B, C, h, w) probabilities, its
    colours from the (B, 3, h, w) uint8 BGR network crops they were predicted from; ``crf``: a ``CRFParams``, or a
    number of mean-field steps with the default kernels. It is exact and quadratic in the pixels: above 256x256 it
    runs on the probabilities and crops resized to fit (in proportion), and its answer is resized back."""
    from .models.dense_crf import MAX_PIXELS, CRFParams, dense_crf

    if images.is_floating_point():
        raise ValueError("the dense CRF needs the uint8 crops the probabilities come from; got float images")
    if not crf or getattr(crf, "iterations", 1) == 0:  # no step: not even the resizing
        return probs
    rgb = images.to(probs.device).float().flip(1)
    size = tuple(probs.shape[-2:])
    scale = min(1.0, (MAX_PIXELS / (size[0] * size[1])) ** 0.5)
    small = (max(1, int(size[0] * scale)), max(1, int(size[1] * scale)))
    if small != size:
        probs, rgb = (F.interpolate(t, size=small, mode="bilinear", align_corners=False) for t in (probs, rgb))
    q = dense_crf(probs, rgb.contiguous(), crf if isinstance(crf, CRFParams) else CRFParams(iterations=crf))
    return q if small == size else F.interpolate(q, size=size, mode="bilinear", align_corners=False)


def _move_keypoints(kp: torch.Tensor, src: Sequence[int], dst: Sequence[int], flipped: bool) -> torch.Tensor:
    """Keypoints of an (h, w) image on its resize to ``dst`` (corners aligned), mirrored (and reordered) if flipped."""
    fy = (dst[0] - 1) / max(src[0] - 1, 1)
    fx = (dst[1] - 1) / max(src[1] - 1, 1)
    out = kp.float() * torch.tensor([fx, fy], device=kp.device)
    if flipped:
        out = torch.stack([(dst[1] - 1) - out[..., 0], out[..., 1]], -1)[:, list(KEYPOINTS_MIRRORED)]
    return out


REMAP_TILE = 2048  # pixels a side: OpenCV remaps under 32767 a side, and the maps of a tile stay small


def _remap_tiles(src: np.ndarray, forward: np.ndarray, window: Sequence[int], input_size: Sequence[int], k: float,
                 flags: int, border: int, value: float) -> np.ndarray:
    """``src`` (h, w[, C]) sampled at each ``window`` pixel's point on the warped input, a tile at a time."""
    x0, y0, x1, y1 = window
    out = np.empty((y1 - y0, x1 - x0) + src.shape[2:], src.dtype)
    for ty in range(y0, y1, REMAP_TILE):
        for tx in range(x0, x1, REMAP_TILE):
            tile = (tx, ty, min(tx + REMAP_TILE, x1), min(ty + REMAP_TILE, y1))
            maps = image_maps(forward, tile, input_size, k)
            out[ty - y0:tile[3] - y0, tx - x0:tile[2] - x0] = cv2.remap(src, *maps, flags, borderMode=border,
                                                                         borderValue=value).reshape(
                (tile[3] - ty, tile[2] - tx) + src.shape[2:])
    return out


def paste_back(pred: Union[np.ndarray, torch.Tensor], inverse: np.ndarray, size: Sequence[int], *,
               mode: str = "bilinear", border: str = "constant", fill: float = 0.0,
               window: Optional[Sequence[int]] = None, tanh_warp: float = 0.0) -> np.ndarray:
    """Labels or scores at the network input back onto the image grid.

    Each image pixel ``p`` takes the prediction at the input point the forward warp sends it to (``inverse``
    inverted), by ``mode``; a pixel whose point lies outside the input takes ``fill`` (``border="constant"``) or the
    nearest edge value (``"replicate"``).

    Args:
        pred: (h, w) labels or (C, h, w) scores: a numpy array, or a tensor on any device (copied to the CPU).
        inverse: 2x3 affine from input pixels to image pixels (the inverse of the warp that made the input; for the
            whole-image crop the authors' own inverse matrix, :func:`inverse_of`).
        size: (H, W) of the image.
        mode: "nearest" (labels) or "bilinear" (scores).
        border: "constant" or "replicate".
        fill: the value outside the input with ``border="constant"``.
        window: (x0, y0, x1, y1), exclusive ends: only these image pixels (default: the whole image).
        tanh_warp: the RoI tanh warp factor the input was made with (``meta["tanh_warp"]``,
            :mod:`dml_csr.data.tanh_warp`; 0: none): each image pixel takes the prediction at its point on the warped
            input.
    Returns:
        numpy (H, W) or (C, H, W) (the window's height and width with ``window``), of ``pred``'s dtype (float32 for
        half-precision tensors).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if border not in BORDERS:
        raise ValueError(f"border must be one of {', '.join(BORDERS)}, got {border!r}")
    if isinstance(pred, torch.Tensor):
        pred = pred.detach().float().cpu().numpy() if pred.dtype in (torch.float16, torch.bfloat16) \
            else pred.detach().cpu().numpy()
    if pred.ndim not in (2, 3):
        raise ValueError(f"pred must be (h, w) labels or (C, h, w) scores, got shape {pred.shape}")
    x0, y0, x1, y1 = window if window is not None else (0, 0, int(size[1]), int(size[0]))
    m = np.asarray(inverse, np.float64)
    if x0 or y0:  # the window's pixel (0, 0) is the image's (x0, y0)
        m = m.copy()
        m[:, 2] -= (x0, y0)
    src, shift = pred, 0.0
    if pred.ndim == 3:  # (h, w, C): OpenCV warps any number of channels, but fills only the first with a scalar
        src, shift = np.ascontiguousarray(pred.transpose(1, 2, 0)), fill
        if shift:
            src = src.astype(np.float32) - shift
    if src.dtype in (np.int64, np.bool_):  # OpenCV warps 8, 16 and 32-bit maps
        src = src.astype(np.int32 if src.dtype == np.int64 else np.uint8)
    if check_warp(tanh_warp, "tanh_warp"):  # each image pixel's point on the warped input: the affine, then the curve
        out = _remap_tiles(src, cv2.invertAffineTransform(np.asarray(inverse, np.float64)), (x0, y0, x1, y1),
                           pred.shape[-2:], tanh_warp, _CV2_MODE[mode], _CV2_BORDER[border], fill - shift)
    else:
        out = cv2.warpAffine(src, m, (x1 - x0, y1 - y0), flags=_CV2_MODE[mode], borderMode=_CV2_BORDER[border],
                             borderValue=fill - shift)
    if pred.ndim == 3:
        out = np.ascontiguousarray(out.reshape(y1 - y0, x1 - x0, -1).transpose(2, 0, 1)) + shift
    return out.astype(pred.dtype, copy=False)
