"""Paired image/label transforms: the authors' affine crop, flip with left/right swap, colour jitter, normalisation.

Geometry (the authors' ``get_affine_transform``, checked against their matrices): the crop box is the whole image,
``center = ((w-1)/2, (h-1)/2)`` and ``scale`` is ``(w-1, h-1)`` padded to the aspect ratio of the input size; training
multiplies ``scale`` by a random factor and rotates around the centre. One similarity transform maps the (scaled,
rotated) box onto the input grid -- its width onto the full output width ``W``, its centre onto ``(W/2, H/2)`` -- image
with linear interpolation and border 0, label with nearest and border 255 (ignore). Evaluation maps predictions back
with the inverse from the same function (:func:`dml_csr.inference.paste_back`). The horizontal flip is folded into
the same warp (no extra pass) and is followed by swapping the registry's left/right classes. A sample framed by its
face instead (``data.align: landmarks``: the similarity of its five landmarks onto a template, given as ``affine``)
gets the same random scale, rotation and flip around the input's centre (:func:`augment_affine`). With
``tanh_warp`` > 0 (``data.tanh_warp``) the crop is RoI tanh-warped on top (:mod:`.tanh_warp`): its centre as the
affine makes it, its rim squeezed to hold the whole image; ``meta["tanh_warp"]`` records the factor, and the
paste-back undoes it.

Images leave the transforms as uint8: ``image`` is the warped crop as OpenCV decodes it, BGR, (3, h, w) with
channels-last strides (a view of the (h, w, 3) array, no copy). The conversion to the network's input happens on the
device, batched (:func:`normalize_images`, :func:`batch_input`; the training and evaluation loops and the API call
them): a quarter of the bytes cross from the loader workers and to the GPU, and a worker spends nothing on it.

Input convention: ``channel_order`` "BGR" keeps OpenCV's order (tensor channel 0 is blue, as the authors feed it);
"RGB" reverses it. ``mean``/``std`` are applied literally, per tensor channel, after dividing by 255 (the authors
apply the RGB ImageNet mean/std to BGR channels; whatever the config says is what happens). Each sample's meta
records the convention (``meta["pixels"]``), so a batch carries what turns it into network input.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import cv2
import numpy as np
import torch

from ..conventions import CHANNEL_ORDER, IMAGENET_MEAN, IMAGENET_STD, INPUT_SIZE
from ..conventions import IGNORE_INDEX as IGNORE
from ..conventions import KEYPOINTS_MIRRORED as _MIRRORED
from .edges import edge_targets
from .labels import LabelSpec, flip_permutation
from .tanh_warp import check_warp, input_maps, warp_points

__all__ = ["get_affine_transform", "box_to_center_scale", "similarity_transform", "sample_affine", "augment_affine",
           "warp_keypoints", "TrainTransform", "EvalTransform", "normalize_images", "batch_input"]


def box_to_center_scale(height: int, width: int, input_size: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Centre and scale of the whole-image box ``[0, 0, w-1, h-1]``, scale padded to ``input_size`` (h, w)'s aspect.

    Returns:
        center (2,) float32 (x, y) and scale (2,) float32 (w, h) in source pixels.
    """
    if height < 2 or width < 2:
        raise ValueError(f"an image of {width}x{height} pixels cannot be cropped; expected at least 2x2")
    aspect = input_size[1] / input_size[0]
    bw, bh = float(width - 1), float(height - 1)
    center = np.array([bw * 0.5, bh * 0.5], np.float32)
    if bw > aspect * bh:
        bh = bw / aspect
    elif bw < aspect * bh:
        bw = bh * aspect
    return center, np.array([bw, bh], np.float32)


def get_affine_transform(center: Sequence[float], scale: Sequence[float], rot: float, output_size: Sequence[int],
                         inv: bool = False) -> np.ndarray:
    """The 2x3 similarity mapping source pixels to output pixels (or back when ``inv``), float64.

    The source box of width ``scale[0]`` centred at ``center`` and rotated by ``rot`` degrees (counter-clockwise on
    screen, as ``cv2.getRotationMatrix2D``) lands on an output grid of ``output_size`` = (height, width), its centre on
    ``(W/2, H/2)`` and its width on the ``W`` output pixels (uniform scale): the authors' mapping, so 512 -> 473 scales
    by 473/511.
    """
    out_h, out_w = output_size
    r = math.pi * rot / 180
    sn, cs = np.sin(r), np.cos(r)
    half = float(np.float32(scale[0])) * -0.5
    # three point pairs stored in float32 -- the centre, the top of the box's vertical half-axis (rotated), a third
    # point at a right angle -- solved by OpenCV: the authors' arithmetic, float32 rounding included
    src = np.zeros((3, 2), np.float32)
    dst = np.zeros((3, 2), np.float32)
    src[0] = np.asarray(center, np.float32)
    src[1] = src[0] + np.array([-half * sn, half * cs])
    dst[0] = [out_w * 0.5, out_h * 0.5]
    dst[1] = np.array([out_w * 0.5, out_h * 0.5]) + np.array([0, out_w * -0.5], np.float32)
    for pts in (src, dst):
        d = pts[0] - pts[1]
        pts[2] = pts[1] + np.array([-d[1], d[0]], np.float32)
    return cv2.getAffineTransform(dst, src) if inv else cv2.getAffineTransform(src, dst)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 similarity (no reflection) mapping ``src`` (N, 2) closest to ``dst`` (N, 2) in least squares."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    ms, md = src.mean(0), dst.mean(0)
    s, d = src - ms, dst - md
    var = (s ** 2).sum() / len(src)
    if var <= 1e-12:
        raise ValueError("landmarks coincide; a similarity transform needs at least two distinct points")
    u, sig, vt = np.linalg.svd(d.T @ s / len(src))
    sign = np.array([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rot = u @ np.diag(sign) @ vt
    scale = (sig * sign).sum() / var
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = md - m[:, :2] @ ms
    return m


def sample_affine(meta: dict, inv: bool = False) -> np.ndarray:
    """The affine a sample was warped with (its ``meta``: center, scale, rotation, input size, flip, size), image ->
    network input, or network input -> image with ``inv``; a flip is composed in (the mirrored source). A sample
    made by :meth:`EvalTransform.warp` carries its own affine, ``meta["affine"]``."""
    if "affine" in meta:
        m = np.asarray(meta["affine"], np.float64)
        return cv2.invertAffineTransform(m) if inv else m
    width = meta["size"][1]
    m = get_affine_transform(meta["center"], meta["scale"], meta["rotation"], meta["input_size"], inv=inv)
    if meta.get("flip"):
        m = m.copy()
        if inv:  # back onto the mirrored image, then mirror: x -> (w - 1) - x
            m[0] = -m[0]
            m[0, 2] += width - 1
        else:  # sample the mirrored source
            m[:, 2] += m[:, 0] * (width - 1)
            m[:, 0] = -m[:, 0]
    return m


def augment_affine(affine: np.ndarray, scale: float, rotation: float, flip: bool,
                   input_size: Sequence[int]) -> np.ndarray:
    """A framing (2x3, image -> input) with a random draw on top: the crop ``scale`` times larger (so the content
    ``1/scale`` the size) and rotated by ``rotation`` degrees around the input's centre ``(W/2, H/2)``, as
    :func:`get_affine_transform` does for the whole-image box, then mirrored about that centre (``x -> W - x``)
    when ``flip`` (the whole-image crop's flip without rotation; with one, its mirror image's rotation)."""
    h, w = input_size
    m = cv2.getRotationMatrix2D((w * 0.5, h * 0.5), float(rotation), 1.0 / float(scale)) @ \
        np.vstack([np.asarray(affine, np.float64), [0.0, 0.0, 1.0]])
    if flip:
        m[0] = -m[0]
        m[0, 2] += w
    return m


def warp_keypoints(points: np.ndarray, meta: dict) -> np.ndarray:
    """(K, 2) image pixels (x, y) -> the network input's, by the sample's affine. A flipped sample also reorders the
    points (:data:`~dml_csr.conventions.KEYPOINTS_MIRRORED`): the subject's left stays the subject's left."""
    m = sample_affine(meta)
    out = np.asarray(points, np.float64) @ m[:, :2].T + m[:, 2]
    if meta.get("tanh_warp"):
        out = warp_points(out, meta["input_size"], meta["tanh_warp"])
    out = out.astype(np.float32)
    return out[list(_MIRRORED)] if meta.get("flip") else out


def normalize_images(images: torch.Tensor, channel_order: str = CHANNEL_ORDER,
                     mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                     channels_last: bool = False) -> torch.Tensor:
    """uint8 BGR images -> float32 network input, ``(x/255 - mean) / std`` per channel in ``channel_order``.

    Args:
        images: (B, 3, H, W) or (3, H, W) uint8, BGR (as decoded by OpenCV), on any device and in any memory format.
        channel_order: "BGR" (keep) or "RGB" (reverse the channels first).
        mean, std: per channel of the output (after the reordering), in [0, 1] units.
        channels_last: give a 4-D result channels-last strides (else contiguous).
    Returns:
        float32, same shape and device.
    """
    if channel_order not in ("BGR", "RGB"):
        raise ValueError(f"channel_order must be 'BGR' or 'RGB', got {channel_order!r}")
    if images.dtype != torch.uint8 or images.dim() not in (3, 4) or images.shape[-3] != 3:
        raise ValueError(f"expected (B, 3, H, W) or (3, H, W) uint8 images, got {tuple(images.shape)} {images.dtype}")
    fmt = torch.channels_last if channels_last and images.dim() == 4 else torch.contiguous_format
    out = torch.empty(images.shape, dtype=torch.float32, device=images.device, memory_format=fmt)
    for c in range(3):  # one fused pass per channel: shift + x * scale, uint8 in, float32 out (any layout)
        src = 2 - c if channel_order == "RGB" else c
        shift = torch.tensor(-mean[c] / std[c], dtype=torch.float32)  # a 0-dim CPU tensor works on any device
        torch.add(shift, images[..., src, :, :], alpha=1.0 / (255.0 * std[c]), out=out[..., c, :, :])
    return out


def batch_input(batch: dict, device: Optional[torch.device | str] = None, channels_last: bool = False) -> torch.Tensor:
    """The network input of a collated batch: its uint8 images moved to ``device`` (default: where they are) and
    normalised there with the convention each sample's transform recorded in ``meta["pixels"]``.

    A float ``image`` (already network input, e.g. built by hand) is only moved.
    """
    x = batch["image"]
    if device is not None:
        x = x.to(device, non_blocking=True)
    if x.is_floating_point():
        return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x
    metas = batch.get("meta")
    if isinstance(metas, dict):
        raise ValueError("batch['meta'] is a dict of lists (torch's default collate); build the DataLoader with "
                         "collate_fn=dml_csr.data.loader.collate_samples, which keeps one meta dict per sample")
    if not metas or "pixels" not in metas[0]:
        raise ValueError("batch['image'] is uint8 but batch['meta'] does not record the pixel convention "
                         "(meta['pixels'] = {channel_order, mean, std}); build samples with a dml_csr transform or "
                         "call normalize_images yourself")
    conv = metas[0]["pixels"]
    if any(m.get("pixels") != conv for m in metas[1:]):
        raise ValueError("the samples of one batch were made with different pixel conventions (meta['pixels'])")
    return normalize_images(x, conv["channel_order"], conv["mean"], conv["std"], channels_last)


def _color_jitter(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Random brightness, contrast and saturation, each factor in [1 - s, 1 + s]. (H, W, 3) uint8 in and out."""
    b, c, s = rng.uniform(1 - strength, 1 + strength, 3)
    img = image.astype(np.float32)
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32)
    img = img * (b * s) + (grey * (b * (1 - s)))[..., None]  # brightness and saturation
    m = float(grey.mean()) * b
    img = (img - m) * c + m  # contrast around the mean grey
    return np.clip(img, 0, 255).astype(np.uint8)


class _Base:
    def __init__(self, input_size: Sequence[int], channel_order: str, mean: Sequence[float], std: Sequence[float],
                 edge_width: int, tanh_warp: float = 0.0):
        if len(input_size) != 2 or min(input_size) < 2:
            raise ValueError(f"input_size must be (height, width) >= 2, got {tuple(input_size)}")
        if channel_order not in ("BGR", "RGB"):
            raise ValueError(f"channel_order must be 'BGR' or 'RGB', got {channel_order!r}")
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.channel_order = channel_order
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.edge_width = int(edge_width)
        self.tanh_warp = check_warp(tanh_warp, "tanh_warp")

    def _finish(self, image: np.ndarray, label: Optional[np.ndarray], meta: dict) -> dict[str, Any]:
        meta["pixels"] = {"channel_order": self.channel_order, "mean": list(self.mean), "std": list(self.std)}
        if self.tanh_warp:
            meta["tanh_warp"] = self.tanh_warp
        # uint8 BGR, (3, h, w) viewed over the (h, w, 3) array: normalised later, batched, on the device
        out: dict[str, Any] = {"image": torch.from_numpy(image).permute(2, 0, 1), "meta": meta}
        if label is not None:
            binary, semantic = edge_targets(label, self.edge_width, IGNORE)
            # uint8 (255 = ignore): 8x less to copy between processes and to the GPU; the training step widens
            # them to int64 on the device (dml_csr.training.engine.to_device), where that costs next to nothing
            out["label"] = torch.from_numpy(np.ascontiguousarray(label))
            out["edge"] = torch.from_numpy(binary)
            out["semantic_edge"] = torch.from_numpy(semantic)
        return out

    def _warp(self, image: np.ndarray, label: Optional[np.ndarray], m: np.ndarray):
        h, w = self.input_size
        if self.tanh_warp:  # the tanh warp's remap: each input pixel's image point (the affine inverted, then atanh)
            maps = input_maps(cv2.invertAffineTransform(np.asarray(m, np.float64)), self.input_size, self.tanh_warp)
            img = cv2.remap(image, *maps, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
            lab = None if label is None else cv2.remap(label, *maps, cv2.INTER_NEAREST,
                                                      borderMode=cv2.BORDER_CONSTANT, borderValue=IGNORE)
            return img, lab
        img = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                             borderValue=(0, 0, 0))
        lab = None
        if label is not None:
            lab = cv2.warpAffine(label, m, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                                 borderValue=IGNORE)
        return img, lab


class EvalTransform(_Base):
    """Deterministic affine to ``input_size``; the meta carries what maps a prediction back
    (:func:`sample_affine` with ``inv=True``, :func:`dml_csr.inference.paste_back`).

    ``__call__(image (H, W, 3) uint8 BGR, label (H, W) uint8 or None)`` returns ``image`` (3, h, w) uint8 BGR and
    ``meta``, plus ``label``, ``edge``, ``semantic_edge`` (h, w) uint8 (255 = ignore) when a label is given.
    """

    def __init__(self, input_size: Sequence[int] = INPUT_SIZE, channel_order: str = CHANNEL_ORDER,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 edge_width: int = 1, tanh_warp: float = 0.0):
        super().__init__(input_size, channel_order, mean, std, edge_width, tanh_warp)

    def __call__(self, image: np.ndarray, label: Optional[np.ndarray] = None,
                 rng: Optional[np.random.Generator] = None, affine: Optional[np.ndarray] = None) -> dict[str, Any]:
        """The whole-image crop, or with ``affine`` (image -> input, e.g. a face's landmarks onto a template)
        :meth:`warp`."""
        if affine is not None:
            return self.warp(image, affine, label)
        h, w = image.shape[:2]
        center, scale = box_to_center_scale(h, w, self.input_size)
        meta = {"center": center.tolist(), "scale": scale.tolist(), "rotation": 0.0, "flip": False,
                "size": (h, w), "input_size": self.input_size}
        img, lab = self._warp(image, label, sample_affine(meta))
        return self._finish(img, lab, meta)

    def warp(self, image: np.ndarray, affine: np.ndarray, label: Optional[np.ndarray] = None) -> dict[str, Any]:
        """A sample of ``image`` (and ``label``, nearest, outside the image ignored) warped to the input by a given
        2x3 ``affine`` (image -> input pixels, e.g. a face aligned to a landmark template); its meta keeps the affine
        as ``"affine"``."""
        h, w = image.shape[:2]
        img, lab = self._warp(image, label, np.asarray(affine, np.float64))
        return self._finish(img, lab, {"affine": np.asarray(affine).tolist(), "size": (h, w),
                                       "input_size": self.input_size})


class TrainTransform(_Base):
    """Random scale, rotation and flip folded into one affine, optional colour jitter, then edges.

    Args:
        input_size: (height, width) of the output.
        spec: label registry entry (its flip pairs are swapped on a flip).
        scale_range: (low, high) multiplier range of the crop scale.
        rotation: degrees; the rotation is drawn within +-rotation.
        rotation_prob: probability of rotating at all.
        flip: horizontal flip with probability 0.5.
        color_jitter: strength in [0, 1] of brightness/contrast/saturation jitter; 0 disables.
        edge_width: edge target width (see :mod:`dml_csr.data.edges`).
        sampling: "uniform" (scale uniform in the range, rotation uniform in +-rotation: the paper's wording) or
            "normal" (the official code: scale factor ``clip(N(1, 0.25), range)``, rotation
            ``clip(N(0, rotation), +-2*rotation)``).
        tanh_warp: RoI tanh warp factor of the crop's rim (:mod:`.tanh_warp`), 0 (none) to 1.
    """

    def __init__(self, input_size: Sequence[int], spec: LabelSpec, channel_order: str = CHANNEL_ORDER,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 scale_range: Sequence[float] = (0.75, 1.25), rotation: float = 30.0, rotation_prob: float = 1.0,
                 flip: bool = True, color_jitter: float = 0.0, edge_width: int = 1, sampling: str = "uniform",
                 tanh_warp: float = 0.0):
        super().__init__(input_size, channel_order, mean, std, edge_width, tanh_warp)
        if sampling not in ("uniform", "normal"):
            raise ValueError(f"sampling must be 'uniform' or 'normal', got {sampling!r}")
        if not 0 < scale_range[0] <= scale_range[1]:
            raise ValueError(f"scale_range must be 0 < low <= high, got {tuple(scale_range)}")
        self.spec = spec
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        self.rotation = float(rotation)
        self.rotation_prob = float(rotation_prob)
        self.flip = bool(flip)
        self.color_jitter = float(color_jitter)
        self.sampling = sampling
        lut = np.arange(256, dtype=np.uint8)
        lut[: spec.num_classes] = flip_permutation(spec)
        self._flip_lut = lut

    def sample_params(self, rng: np.random.Generator) -> tuple[float, float, bool]:
        """Draw (scale factor, rotation degrees, flip)."""
        lo, hi = self.scale_range
        if self.sampling == "uniform":
            s = rng.uniform(lo, hi)
            r = rng.uniform(-self.rotation, self.rotation)
        else:
            s = float(np.clip(rng.normal(1.0, 0.25), lo, hi))
            r = float(np.clip(rng.normal(0.0, self.rotation), -2 * self.rotation, 2 * self.rotation))
        if rng.random() >= self.rotation_prob:
            r = 0.0
        f = self.flip and rng.random() < 0.5
        return float(s), float(r), bool(f)

    def __call__(self, image: np.ndarray, label: Optional[np.ndarray] = None,
                 rng: Optional[np.random.Generator] = None, affine: Optional[np.ndarray] = None) -> dict[str, Any]:
        """A random crop of the whole image, or with ``affine`` (image -> input: a face's landmarks onto a
        template) the same random scale, rotation and flip applied around that framing (:func:`augment_affine`)."""
        rng = rng if rng is not None else np.random.default_rng()
        h, w = image.shape[:2]
        s, r, f = self.sample_params(rng)
        if affine is None:
            center, scale = box_to_center_scale(h, w, self.input_size)
            meta = {"center": center.tolist(), "scale": (scale * s).tolist(), "rotation": r, "flip": f,
                    "size": (h, w), "input_size": self.input_size}
        else:
            meta = {"affine": augment_affine(affine, s, r, f, self.input_size).tolist(), "rotation": r, "flip": f,
                    "size": (h, w), "input_size": self.input_size}
        img, lab = self._warp(image, label, sample_affine(meta))  # a flip is folded into the same warp
        if f and lab is not None:
            lab = cv2.LUT(lab, self._flip_lut)
        if self.color_jitter > 0:
            img = _color_jitter(img, self.color_jitter, rng)
        return self._finish(img, lab, meta)
