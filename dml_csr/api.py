"""The inference API for notebooks and scripts: :class:`FaceParser`.

Usage::

    from dml_csr import FaceParser
    parser = FaceParser.from_checkpoint("runs/helen/best.pt", device="cuda")   # ours or the authors' file
    labels = parser("face.jpg")                  # (H, W) uint8 class indices at the image's own size
    labels, probs = parser(img_rgb, return_probs=True)                          # probs (C, H, W) float32
    rgb = parser.overlay(img_rgb, labels)        # or parser.colorize(labels)
    labels = parser("group_photo.jpg", detect=True)   # find faces, parse each crop, paste the labels back

Each image goes through the evaluation protocol: the whole-image affine to the network input (aspect kept, zero
padded), the model, then the inverse affine back onto the image grid (labels nearest, probabilities bilinear).
The checkpoint's metadata decides the class names and the input convention (channel order, mean, std, size).
"""
from __future__ import annotations

import logging
import os
from typing import Any, Callable, Optional, Sequence, Union

import cv2
import numpy as np
import torch

from .data.imageio import imread_checked
from .data.labels import DATASETS, flip_permutation
from .data.loader import collate_samples
from .data.transforms import EvalTransform, batch_input, inverse_affine
from .distributed import resolve_device
from .inference import predict_probs
from .models.precision import prepare_for_inference

__all__ = ["FaceParser", "haar_face_detector", "to_bgr", "expand_box", "Box", "Detector"]

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]  # x, y, width, height in pixels
Detector = Callable[[np.ndarray], Sequence[Box]]  # (H, W, 3) uint8 BGR -> face boxes
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


def haar_face_detector(scale_factor: float = 1.1, min_neighbors: int = 5, min_size: int = 24) -> Detector:
    """OpenCV's frontal-face Haar cascade (shipped in ``cv2.data.haarcascades`` by OpenCV 4.x wheels).

    Returns:
        ``detector(image (H, W, 3) uint8 BGR) -> [(x, y, w, h), ...]``.
    """
    path = os.path.join(getattr(getattr(cv2, "data", None), "haarcascades", ""),
                        "haarcascade_frontalface_default.xml")
    if not hasattr(cv2, "CascadeClassifier") or not os.path.isfile(path):
        raise RuntimeError(f"OpenCV {cv2.__version__} ships no Haar face cascade (OpenCV 5 dropped them from the "
                           "wheels); install 'opencv-python-headless>=4.7,<5' for detect=True, or pass "
                           "detector=fn(image_bgr) -> [(x, y, w, h), ...]")
    cascade = cv2.CascadeClassifier(path)

    def detect(image: np.ndarray) -> list[Box]:
        grey = cv2.equalizeHist(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
        found = cascade.detectMultiScale(grey, scaleFactor=scale_factor, minNeighbors=min_neighbors,
                                         minSize=(min_size, min_size))
        return [tuple(int(v) for v in b) for b in found]

    return detect


def expand_box(box: Box, height: int, width: int, margin: float) -> tuple[int, int, int, int]:
    """A face box grown to a square of side ``max(w, h) * (1 + 2 * margin)`` around its centre, clipped to the
    image. Returns (x0, y0, x1, y1), exclusive ends."""
    x, y, w, h = box
    side = max(w, h) * (1 + 2 * margin)
    cx, cy = x + w / 2, y + h / 2
    x0, y0 = max(0, int(round(cx - side / 2))), max(0, int(round(cy - side / 2)))
    x1, y1 = min(width, int(round(cx + side / 2))), min(height, int(round(cy + side / 2)))
    return x0, y0, x1, y1


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
        detector: face detector used with ``detect=True`` (default: :func:`haar_face_detector`).
        margin: with ``detect``, each face box grows by this fraction of its size on every side before cropping.
    """

    def __init__(self, model: torch.nn.Module, meta: dict, device: str = "cpu", *, flip: bool = False,
                 scales: Sequence[float] = (1.0,), precision: str = "fp32", batch_size: int = 8,
                 detector: Optional[Detector] = None, margin: float = 0.5):
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
        self._detector = detector
        self.margin = float(margin)

    @classmethod
    def from_checkpoint(cls, path: str, device: str = "cpu", **kwargs) -> "FaceParser":
        """Load our checkpoint or an authors' file (see :func:`dml_csr.models.load_model`); ``kwargs`` go to the
        constructor."""
        from .loading import load_model

        dev = resolve_device(device)
        model, meta = load_model(path, device=dev)
        return cls(model, meta, dev, **kwargs)

    # ------------------------------------------------------------------------------------------------ parsing
    def __call__(self, images: Union[ImageLike, list], *, channel_order: str = "RGB", detect: bool = False,
                 return_probs: bool = False):
        """Parse one image or a list.

        Args:
            images: a path, a PIL image, a numpy array (see :func:`to_bgr`) or a list of them.
            channel_order: colour order of numpy arrays: "RGB" (default) or "BGR" (what ``cv2.imread`` returns).
            detect: find faces first, parse a crop around each, paste the labels back (background elsewhere).
            return_probs: also return class probabilities.
        Returns:
            per image, labels (H, W) uint8 at the image's own size, or (labels, probs (C, H, W) float32) with
            ``return_probs``; a list for a list. Labels are the nearest-neighbour inverse mapping of the network's
            argmax (the evaluation protocol); probs are mapped bilinearly, so their argmax may differ on boundaries.
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
                labels = inverse_affine(pred[j], s["meta"], mode="nearest", border="replicate")
                if return_probs:
                    p = inverse_affine(probs[j], s["meta"], mode="bilinear", border="replicate").cpu().numpy()
                    results.append((labels, p))
                else:
                    results.append(labels)
        return results

    def detect_faces(self, image: ImageLike, channel_order: str = "RGB") -> list[Box]:
        """Face boxes (x, y, w, h) found by the detector."""
        if self._detector is None:
            self._detector = haar_face_detector()
        return [tuple(int(v) for v in b) for b in self._detector(to_bgr(image, channel_order))]

    def _parse_with_detection(self, image: np.ndarray, return_probs: bool):
        h, w = image.shape[:2]
        boxes = self.detect_faces(image, "BGR")
        labels = np.zeros((h, w), np.uint8)
        probs = None
        if return_probs:
            probs = np.zeros((self.num_classes, h, w), np.float32)
            probs[0] = 1.0
        if not boxes:
            log.warning("no face found in a %dx%d image; its labels are all background", w, h)
        # smallest first, so a larger (nearer) face wins where crops overlap
        crops = sorted((expand_box(b, h, w, self.margin) for b in boxes), key=lambda c: (c[2] - c[0]) * (c[3] - c[1]))
        crops = [c for c in crops if c[2] - c[0] >= 2 and c[3] - c[1] >= 2]
        parsed = self.parse_bgr([np.ascontiguousarray(image[y0:y1, x0:x1]) for x0, y0, x1, y1 in crops],
                                return_probs)
        for (x0, y0, x1, y1), res in zip(crops, parsed):
            lab, p = res if return_probs else (res, None)
            fg = lab != 0
            labels[y0:y1, x0:x1][fg] = lab[fg]
            if probs is not None:
                probs[:, y0:y1, x0:x1][:, fg] = p[:, fg]
        return (labels, probs) if return_probs else labels

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
