"""The inference API for notebooks and scripts: :class:`FaceParser`.

Usage::

    from dml_csr import FaceParser
    parser = FaceParser.from_checkpoint("runs/demo/best.pt", device="cuda")    # ours or the authors' file
    parser = FaceParser.from_pretrained("dml_csr_helen")                      # by name, downloaded once
    parser = FaceParser.from_pretrained("hf://OWNER/REPO")                    # a model on the Hugging Face Hub
    parser = FaceParser.from_checkpoint("model.int8.xml")                     # exported: OpenVINO IR or ONNX
    labels = parser("face.jpg")                  # (H, W) uint8 class indices at the image's own size (EXIF turns
                                                 # applied, for a path and a PIL image alike)
    labels, probs = parser(img_rgb, return_probs=True)                          # probs (C, H, W) float32
    rgb = parser.overlay(img_rgb, labels)        # or parser.colorize(labels)
    result = parser.parse("group_photo.jpg", detect=True)   # find faces, align each, parse, paste back
    result.labels, result.faces                  # the labels and the faces found (box, landmarks, score)

A facade over the model with its input convention (:class:`~dml_csr.photos.pipeline.Predictor`), the photo pipeline
(:mod:`dml_csr.photos.pipeline`: whole images, or faces aligned to the checkpoint's crop convention and composited
back), the detector (:mod:`dml_csr.photos.detection`) and the colours (:mod:`dml_csr.data.drawing`). The checkpoint's
metadata decides the class names, the input convention (channel order, mean, std, size) and the crop convention.
"""
from __future__ import annotations

import os
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch

from .._typed import number
from ..data import drawing
from ..data.face_template import check_crop
from ..data.imageio import to_bgr
from ..data.labels import DATASETS, flip_permutation, spec_from_meta
from . import pipeline
from .detection import build_detector
from .faces import Detector, Face, as_faces

__all__ = ["FaceParser"]

ImageLike = Union[str, os.PathLike, np.ndarray, Any]  # path, array or PIL image


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
        detector: with ``detect=True``: a name for :func:`~dml_csr.photos.detection.build_detector` ("auto": yuface,
            else YuNet, else the Haar cascade) or a callable ``image_bgr -> [Face or (x, y, w, h), ...]``.
        margin: faces without landmarks (or a checkpoint without a landmark template) are cropped as a square
            around the box, grown by this fraction of its size on every side.
        paste: whole images: "smooth" (probabilities mapped back bilinearly, argmax at the image's resolution) or
            "nearest" (the authors' evaluation protocol, as ``evaluate.py`` scores). Faces are always composited
            from their probabilities.
        crop: the crop convention (see :mod:`dml_csr.photos.alignment`); default: the checkpoint's ``meta["crop"]``.
        rotations: a detector named by ``detector`` also searches the photo turned by 90, 180 and 270 degrees when
            it finds no confident upright face (:func:`~dml_csr.photos.detection.any_rotation`).
        crf_iterations: mean-field steps of a dense CRF on each crop's probabilities before they are pasted back
            (Liu et al.'s CNN-CRF, :func:`dml_csr.inference.crf_probs`); 0 (default): none.
        crf_kernels: the CRF's kernel settings in place of the defaults, e.g. ``{"bilateral_rgb": 20}`` (names:
            :data:`dml_csr.models.dense_crf.KERNEL_SETTINGS`); only with ``crf_iterations``.

    A number that is not finite or out of range (``scales=[]``, ``batch_size=0``, a NaN margin), and metadata whose
    mean, std or input size is (``std = [0, 0, 0]``, ``input_size = [100000, 100000]``), is refused with a ValueError
    naming it.
    """

    def __init__(self, model: torch.nn.Module, meta: dict, device: str = "cpu", *, flip: bool = False,
                 scales: Sequence[float] = (1.0,), precision: str = "fp32", batch_size: int = 8,
                 detector: Union[str, Detector, None] = "auto", margin: float = 0.5, paste: str = "smooth",
                 crop: Optional[dict] = None, rotations: bool = True, crf_iterations: int = 0,
                 crf_kernels: Optional[dict] = None):
        self.meta = dict(meta)
        self.classes: list[str] = list(meta["classes"])
        self.num_classes = len(self.classes)
        spec = spec_from_meta(self.meta)  # its own colours and pairs (a custom root), else the registry's
        self.palette = spec.palette
        flip_perm = None
        if flip:
            registry = DATASETS.get(self.meta.get("dataset", ""))
            if "flip_pairs" not in self.meta and (registry is None or registry.num_classes != self.num_classes):
                raise ValueError(f"flip=True needs the left/right classes of dataset '{self.meta.get('dataset')}', "
                                 "which the label registry does not know")
            flip_perm = flip_permutation(spec).tolist()
        if paste not in pipeline.PASTES:
            raise ValueError(f"paste must be 'smooth' or 'nearest', got {paste!r}")
        self.predictor = pipeline.Predictor(model, self.meta, device, flip_perm=flip_perm, scales=scales,
                                            precision=precision, batch_size=batch_size, crf_iterations=crf_iterations,
                                            crf_kernels=crf_kernels)
        self.paste = paste
        self.crop = check_crop(crop if crop is not None else self.meta.get("crop"))
        self._detector = detector if detector is not None else "auto"
        self.rotations = bool(rotations)
        self.margin = float(number(margin, "margin", 0, 10))

    @property
    def model(self) -> torch.nn.Module:
        return self.predictor.model

    @property
    def transform(self):
        """The evaluation transform of the checkpoint's input convention."""
        return self.predictor.transform

    @property
    def device(self) -> torch.device:
        return self.predictor.device

    @classmethod
    def from_checkpoint(cls, path: str, device: str = "cpu", **kwargs) -> "FaceParser":
        """Load our checkpoint, an authors' file, a registry name, a model folder or a Hub name (see
        :func:`dml_csr.checkpoint.load_model`, which fetches names and keeps their registry metadata), or an exported
        ONNX or OpenVINO model (:mod:`dml_csr.photos.runtime`); ``kwargs`` go to the constructor."""
        from ..distributed import resolve_device

        dev = resolve_device(device)
        model, meta = _load(path, dev, kwargs.get("precision", "fp32"))
        return cls(model, meta, dev, **kwargs)

    from_pretrained = from_checkpoint  # a registry name (README, "Weights by name"), a Hub name or a path

    # ------------------------------------------------------------------------------------------------ parsing
    def __call__(self, images: Union[ImageLike, list], *, channel_order: str = "RGB", detect: bool = False,
                 return_probs: bool = False):
        """Parse one image or a list: per image, labels (H, W) uint8 at its own size, or (labels, probs (C, H, W)
        float32) with ``return_probs``; a list for a list. ``images``: paths, PIL images or numpy arrays in
        ``channel_order`` ("RGB" or "BGR", what ``cv2.imread`` returns); ``detect``: see :meth:`parse`."""
        single = not isinstance(images, (list, tuple))
        bgr = [to_bgr(im, channel_order) for im in ([images] if single else images)]
        if detect:
            results = [self._parse_bgr(im, detect=True, faces=None, return_probs=return_probs) for im in bgr]
        else:
            results = pipeline.parse_whole(self.predictor, bgr, self.paste, return_probs)
        out = [(r.labels, r.probs) if return_probs else r.labels for r in results]
        return out[0] if single else out

    def parse(self, image: ImageLike, *, channel_order: str = "RGB", detect: bool = False,
              faces: Optional[Sequence] = None, return_probs: bool = False) -> pipeline.Parse:
        """One image's :class:`~dml_csr.photos.pipeline.Parse` (labels, probabilities with ``return_probs``, faces).

        ``detect``: find faces, align and parse each, paste their probabilities back (background elsewhere);
        ``faces``: parse these (:class:`Face` objects or (x, y, w, h) boxes) instead of detecting; neither: the whole
        image."""
        return self._parse_bgr(to_bgr(image, channel_order), detect, faces, return_probs)

    def _parse_bgr(self, image: np.ndarray, detect: bool, faces: Optional[Sequence], return_probs: bool
                   ) -> pipeline.Parse:
        if faces is None and not detect:
            return pipeline.parse_whole(self.predictor, [image], self.paste, return_probs)[0]
        faces = self._detect(image) if faces is None else as_faces(faces)
        return pipeline.parse_faces(self.predictor, image, faces, crop=self.crop, margin=self.margin,
                                    num_classes=self.num_classes, return_probs=return_probs)

    def detect_faces(self, image: ImageLike, channel_order: str = "RGB") -> list[Face]:
        """The faces the detector finds: :class:`~dml_csr.photos.faces.Face` (box, landmarks or None, score)."""
        return self._detect(to_bgr(image, channel_order))

    def _detect(self, image_bgr: np.ndarray) -> list[Face]:
        if isinstance(self._detector, str):
            self._detector = build_detector(self._detector, rotations=self.rotations)
        return as_faces(self._detector(image_bgr))

    def parse_faces(self, image: ImageLike, faces: Sequence, *, channel_order: str = "RGB",
                    return_probs: bool = False):
        """The given faces of one image, parsed and composited; returns what :meth:`__call__` does."""
        r = self.parse(image, channel_order=channel_order, faces=faces, return_probs=return_probs)
        return (r.labels, r.probs) if return_probs else r.labels

    # ------------------------------------------------------------------------------------------------ drawing
    def colorize(self, labels: np.ndarray) -> np.ndarray:
        """(H, W) class indices -> (H, W, 3) uint8 RGB with the dataset's palette (255 = ignore is white)."""
        return drawing.colorize(labels, self.palette)

    def overlay(self, image: ImageLike, labels: np.ndarray, alpha: float = drawing.ALPHA,
                channel_order: str = "RGB") -> np.ndarray:
        """The image blended with the colourised labels; (H, W, 3) uint8 **RGB** (save it with
        :func:`dml_csr.data.drawing.save_rgb`, or reverse the channels for ``cv2.imwrite``). Background pixels stay as
        they are."""
        return drawing.overlay(to_bgr(image, channel_order)[..., ::-1], labels, self.palette, alpha)

    def __repr__(self) -> str:
        t = self.transform
        return (f"FaceParser({self.meta.get('model_name', 'model')}, {self.num_classes} classes of "
                f"'{self.meta.get('dataset')}', input {tuple(t.input_size)} {t.channel_order}, device {self.device})")


def _load(path: str, device, precision: str) -> tuple[torch.nn.Module, dict]:
    """(model, meta) of a checkpoint or, through its runtime, of an exported model (which runs at the precision it
    was exported with)."""
    from ..checkpoint import load_model
    from . import runtime

    if not runtime.is_exported(path):
        return load_model(path, device=device)
    if precision != "fp32":
        raise ValueError(f"'{path}' is an exported model, which runs at the precision it was exported with; "
                         f"precision '{precision}' applies to PyTorch checkpoints")
    return runtime.load_exported(path)
