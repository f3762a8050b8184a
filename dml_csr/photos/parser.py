"""The inference API for notebooks and scripts: :class:`FaceParser`.

Usage::

    from dml_csr import FaceParser
    parser = FaceParser.from_checkpoint("runs/demo/best.pt", device="cuda")    # ours or the authors' file
    parser = FaceParser.from_pretrained("dml_csr_helen")                      # by name, downloaded once
    labels = parser("face.jpg")                  # (H, W) uint8 class indices at the image's own size
    labels, probs = parser(img_rgb, return_probs=True)                          # probs (C, H, W) float32
    rgb = parser.overlay(img_rgb, labels)        # or parser.colorize(labels)
    labels = parser("group_photo.jpg", detect=True)   # find faces, align each, parse, paste back

A whole image goes through the evaluation crop: the whole-image affine to the network input (aspect kept, zero
padded), the model, then back onto the image grid: with ``paste="smooth"`` (the default) the probabilities are
mapped bilinearly and the labels are their argmax at the image's resolution; ``paste="nearest"`` is the authors'
evaluation protocol (the network's argmax mapped nearest-neighbour). With ``detect=True`` each face found (see
:mod:`dml_csr.photos.detection`) is warped to the checkpoint's crop convention (:mod:`dml_csr.photos.alignment`: its landmark
template, or a square around the box) and the faces' probabilities are composited back. The checkpoint's metadata
decides the class names, the input convention (channel order, mean, std, size) and the crop convention.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Optional, Sequence, Union

import cv2
import numpy as np
import torch

from .alignment import check_crop, composite, crop_region, face_affine, paste_probs
from ..data.imageio import imread_checked
from ..data.labels import DATASETS, flip_permutation
from ..data.loader import collate_samples
from ..data.transforms import EvalTransform, batch_input, inverse_affine
from .detection import Detector, Face, as_faces, build_detector, haar_detector
from ..distributed import resolve_device
from ..inference import predict_probs
from ..models.precision import prepare_for_inference

__all__ = ["FaceParser", "to_bgr", "Face", "Detector", "build_detector", "haar_detector"]

log = logging.getLogger(__name__)

ImageLike = Union[str, os.PathLike, np.ndarray, Any]  # path, array or PIL image


def to_bgr(image: ImageLike, channel_order: str = "RGB") -> np.ndarray:
    """Any supported image as (H, W, 3) uint8 BGR.

    Args:
        image: a file path (read with OpenCV); a PIL image (any mode); or a numpy array (H, W) grey, (H, W, 3) or
            (H, W, 4) uint8 whose colour order is ``channel_order`` (alpha is dropped).
        channel_order: order of a numpy array's channels: "RGB" (PIL, matplotlib, imageio) or "BGR" (cv2.imread).
    """
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"image '{path}' does not exist")
        return imread_checked(path, cv2.IMREAD_COLOR, ValueError, "image")
    if type(image).__module__.startswith("PIL."):
        return np.ascontiguousarray(np.asarray(image.convert("RGB"))[..., ::-1])
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected a path, a numpy array or a PIL image, got {type(image).__name__}")
    if channel_order not in ("RGB", "BGR"):
        raise ValueError(f"channel_order must be 'RGB' or 'BGR', got {channel_order!r}")
    if image.dtype != np.uint8:
        raise ValueError(f"image array is {image.dtype}; expected uint8 (0..255)")
    if image.size == 0:
        raise ValueError(f"image array has shape {image.shape}; expected a non-empty image")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"image array has shape {image.shape}; expected (H, W), (H, W, 3) or (H, W, 4)")
    img = image[..., :3]
    return np.ascontiguousarray(img[..., ::-1] if channel_order == "RGB" else img)


def _palette(meta: dict, num_classes: int) -> np.ndarray:
    spec = DATASETS.get(meta.get("dataset", ""))
    if spec is not None and spec.num_classes == num_classes:
        return spec.palette
    rng = np.random.default_rng(num_classes)
    pal = rng.integers(0, 256, (num_classes, 3)).astype(np.uint8)
    pal[0] = 0
    return pal


class FaceParser:
    """A model with its metadata, parsing images of any size.

    Args:
        model: returns ``{"parsing": (B, C, h, w)}`` logits (any h, w: upsampled when they differ from the input).
        meta: ``classes``, ``channel_order``, ``mean``, ``std``, ``input_size`` (see :mod:`dml_csr.checkpoint`).
        device: "cpu", "cuda", "cuda:N" or "auto".
        flip: also parse the mirrored image (left/right classes swapped from the label registry) and average.
        scales: input rescaling factors averaged (multi-scale testing).
        precision: "fp32", "bf16" or "fp16" (autocast).
        batch_size: images per forward pass.
        detector: with ``detect=True``: a name for :func:`~dml_csr.photos.detection.build_detector` ("auto": yuface, else
            YuNet, else the Haar cascade) or a callable ``image_bgr -> [Face or (x, y, w, h), ...]``.
        margin: faces without landmarks (or a checkpoint without a landmark template) are cropped as a square
            around the box, grown by this fraction of its size on every side.
        paste: "smooth" (probabilities mapped back bilinearly, argmax at the image's resolution) or "nearest" (the
            authors' evaluation protocol: the network's argmax mapped back nearest-neighbour). Whole images only:
            detected faces are always composited from their probabilities.
        crop: the crop convention (see :mod:`dml_csr.photos.alignment`); default: the checkpoint's ``meta["crop"]``.
    """

    def __init__(self, model: torch.nn.Module, meta: dict, device: str = "cpu", *, flip: bool = False,
                 scales: Sequence[float] = (1.0,), precision: str = "fp32", batch_size: int = 8,
                 detector: Union[str, Detector, None] = "auto", margin: float = 0.5, paste: str = "smooth",
                 crop: Optional[dict] = None):
        self.device = resolve_device(device)
        self.model = prepare_for_inference(model.to(self.device), precision)
        self.meta = dict(meta)
        self.classes: list[str] = list(meta["classes"])
        self.num_classes = len(self.classes)
        self.palette = _palette(self.meta, self.num_classes)
        self.transform = EvalTransform(tuple(meta.get("input_size", (473, 473))), meta.get("channel_order", "BGR"),
                                       meta["mean"], meta["std"])
        self.scales = tuple(float(s) for s in scales)
        self.precision = precision
        self.batch_size = int(batch_size)
        self.flip_perm = None
        if flip:
            spec = DATASETS.get(self.meta.get("dataset", ""))
            if spec is None or spec.num_classes != self.num_classes:
                raise ValueError(f"flip=True needs the left/right classes of dataset '{self.meta.get('dataset')}', "
                                 "which the label registry does not know")
            self.flip_perm = flip_permutation(spec).tolist()
        if paste not in ("smooth", "nearest"):
            raise ValueError(f"paste must be 'smooth' or 'nearest', got {paste!r}")
        self.paste = paste
        self.crop = check_crop(crop if crop is not None else self.meta.get("crop"))
        self._detector = detector if detector is not None else "auto"
        self.margin = float(margin)

    @classmethod
    def from_checkpoint(cls, path: str, device: str = "cpu", **kwargs) -> "FaceParser":
        """Load our checkpoint, an authors' file or a registry name (see :func:`dml_csr.loading.load_model`);
        ``kwargs`` go to the constructor."""
        from ..loading import load_model

        dev = resolve_device(device)
        model, meta = load_model(path, device=dev)
        return cls(model, meta, dev, **kwargs)

    @classmethod
    def from_pretrained(cls, name: str, device: str = "cpu", **kwargs) -> "FaceParser":
        """A parser from the weights registry (:mod:`dml_csr.hub`) by name, downloaded into the cache once; a path
        works too."""
        return cls.from_checkpoint(name, device=device, **kwargs)  # load_model fetches names (dataset included)

    # ------------------------------------------------------------------------------------------------ parsing
    def __call__(self, images: Union[ImageLike, list], *, channel_order: str = "RGB", detect: bool = False,
                 return_probs: bool = False):
        """Parse one image or a list.

        Args:
            images: a path, a PIL image, a numpy array (see :func:`to_bgr`) or a list of them.
            channel_order: colour order of numpy arrays: "RGB" (default) or "BGR" (what ``cv2.imread`` returns).
            detect: find faces first, align and parse each, paste their probabilities back (background elsewhere).
            return_probs: also return class probabilities.
        Returns:
            per image, labels (H, W) uint8 at the image's own size, or (labels, probs (C, H, W) float32) with
            ``return_probs``; a list for a list. Probabilities are mapped back bilinearly; the labels are their
            argmax (``paste="smooth"``) or the network's argmax mapped nearest-neighbour (``paste="nearest"``).
        """
        single = not isinstance(images, (list, tuple))
        bgr = [to_bgr(im, channel_order) for im in ([images] if single else images)]
        out = [self._parse_with_detection(im, return_probs) for im in bgr] if detect \
            else self.parse_bgr(bgr, return_probs)
        return out[0] if single else out

    @torch.no_grad()
    def parse_bgr(self, images: Sequence[np.ndarray], return_probs: bool = False) -> list:
        """Parse (H, W, 3) uint8 BGR arrays, ``batch_size`` at a time; returns what :meth:`__call__` does."""
        results = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start: start + self.batch_size]
            samples = [self.transform(im) for im in chunk]
            x = batch_input(collate_samples(samples), self.device)
            probs = predict_probs(self.model, x, scales=self.scales, flip_perm=self.flip_perm,
                                  precision=self.precision)
            pred = probs.argmax(1).to(torch.uint8).cpu().numpy()
            for j, s in enumerate(samples):
                p = None
                if return_probs or self.paste == "smooth":
                    p = inverse_affine(probs[j], s["meta"], mode="bilinear", border="replicate")
                    labels = p.argmax(0).to(torch.uint8).cpu().numpy() if self.paste == "smooth" else None
                    p = p.cpu().numpy()
                if self.paste == "nearest":
                    labels = inverse_affine(pred[j], s["meta"], mode="nearest", border="replicate")
                results.append((labels, p) if return_probs else labels)
        return results

    @torch.no_grad()
    def crop_probs(self, image: np.ndarray, affines: Sequence[np.ndarray]) -> list[np.ndarray]:
        """(C, h, w) probabilities at the input size of the BGR ``image`` warped by each image -> input affine."""
        out = []
        for start in range(0, len(affines), self.batch_size):
            samples = [self.transform.warp(image, m) for m in affines[start: start + self.batch_size]]
            x = batch_input(collate_samples(samples), self.device)
            probs = predict_probs(self.model, x, scales=self.scales, flip_perm=self.flip_perm,
                                  precision=self.precision)
            out += list(probs.float().cpu().numpy())
        return out

    def detect_faces(self, image: ImageLike, channel_order: str = "RGB") -> list[Face]:
        """The faces the detector finds: :class:`~dml_csr.photos.detection.Face` (box, landmarks or None, score)."""
        if isinstance(self._detector, str):
            self._detector = build_detector(self._detector)
        return as_faces(self._detector(to_bgr(image, channel_order)))

    def face_affines(self, faces: Sequence[Face]) -> list[np.ndarray]:
        """Image -> network input affine of each face under this parser's crop convention."""
        return [face_affine(f, self.crop, self.transform.input_size, self.margin) for f in faces]

    def parse_faces(self, image: ImageLike, faces: Sequence, *, channel_order: str = "RGB",
                    return_probs: bool = False):
        """Parse the given faces (:class:`Face` objects or (x, y, w, h) boxes) of one image: each warped to the crop
        convention, parsed, its probabilities pasted back and composited; returns what :meth:`__call__` does."""
        image = to_bgr(image, channel_order)
        affines = self.face_affines(as_faces(faces))
        return self.paste_crops(image.shape[:2], affines, self.crop_probs(image, affines), return_probs)

    def paste_crops(self, size: Sequence[int], affines: Sequence[np.ndarray], crop_probs: Sequence[np.ndarray],
                    return_probs: bool = False):
        """Labels (H, W) of an image of ``size`` from its crops' probabilities: each pasted back through the inverse
        of its affine and composited (see :mod:`dml_csr.photos.alignment`); with ``return_probs``, (labels, probs)."""
        h, w = int(size[0]), int(size[1])
        pasted = []
        for m, p in zip(affines, crop_probs):
            region = crop_region(m, self.transform.input_size, (h, w))
            if region is not None:
                pasted.append(paste_probs(p, m, region) + (region,))
        probs, union = composite(pasted, self.num_classes)
        labels = np.zeros((h, w), np.uint8)
        if union is not None:
            x0, y0, x1, y1 = union
            labels[y0:y1, x0:x1] = probs.argmax(0)
        if not return_probs:
            return labels
        full = np.zeros((self.num_classes, h, w), np.float32)
        full[0] = 1.0
        if union is not None:
            full[:, y0:y1, x0:x1] = probs
        return labels, full

    def _parse_with_detection(self, image: np.ndarray, return_probs: bool):
        faces = self.detect_faces(image, "BGR")
        if not faces:
            log.warning("no face found in a %dx%d image; its labels are all background", image.shape[1],
                        image.shape[0])
        return self.parse_faces(image, faces, channel_order="BGR", return_probs=return_probs)

    # ------------------------------------------------------------------------------------------------ drawing
    def colorize(self, labels: np.ndarray) -> np.ndarray:
        """(H, W) class indices -> (H, W, 3) uint8 RGB with the dataset's palette (255 = ignore is white)."""
        labels = np.asarray(labels)
        lut = np.full((256, 3), 255, np.uint8)
        lut[: self.num_classes] = self.palette
        return lut[labels.astype(np.uint8)]

    def overlay(self, image: ImageLike, labels: np.ndarray, alpha: float = 0.5,
                channel_order: str = "RGB") -> np.ndarray:
        """The image blended with the colourised labels; (H, W, 3) uint8 RGB. Background pixels stay as they are."""
        rgb = to_bgr(image, channel_order)[..., ::-1].astype(np.float32)
        if rgb.shape[:2] != np.asarray(labels).shape:
            raise ValueError(f"labels have shape {np.asarray(labels).shape} but the image is {rgb.shape[:2]}")
        colour = self.colorize(labels).astype(np.float32)
        a = np.where(np.asarray(labels)[..., None] == 0, 0.0, float(alpha))
        return np.clip(rgb * (1 - a) + colour * a + 0.5, 0, 255).astype(np.uint8)

    def __repr__(self) -> str:
        return (f"FaceParser({self.meta.get('model_name', 'model')}, {self.num_classes} classes of "
                f"'{self.meta.get('dataset')}', input {tuple(self.transform.input_size)} "
                f"{self.transform.channel_order}, device {self.device})")
