"""The photo pipeline: images to the model's input, class probabilities, and back onto the photo.

- A whole image goes through the evaluation crop (:func:`dml_csr.inference.input_transform`) and back:
  ``paste="smooth"`` maps the probabilities back bilinearly (edges replicated) and takes their argmax at the
  photo's resolution; ``paste="nearest"`` is the authors' evaluation protocol exactly (the network's argmax mapped
  back nearest-neighbour, background outside the crop), as ``evaluate.py`` scores.
- Faces (detected or given) are each warped to the checkpoint's crop convention (:mod:`dml_csr.photos.alignment`),
  parsed, and their probabilities pasted back through the inverse of their warps and composited
  (:func:`paste_faces`).

:class:`Predictor` holds the model with its input convention and test-time settings; :class:`Parse` is what a parse
returns: the labels, the probabilities when asked for, and the faces it used.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Optional, Sequence

import cv2
import numpy as np
import torch

from .. import inference
from .._typed import number, numbers, shown
from ..data.face_template import framed_by_landmarks
from ..data.transforms import batch_input
from ..distributed import resolve_device
from ..models.dense_crf import crf_params
from ..models.precision import prepare_for_inference
from .alignment import composite, crop_region, face_affine
from .faces import Face

__all__ = ["Parse", "Predictor", "parse_whole", "parse_faces", "face_affines", "paste_faces", "PASTES"]

log = logging.getLogger(__name__)

PASTES = ("smooth", "nearest")
PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass
class Parse:
    """One image's parse: ``labels`` (H, W) uint8 at the image's own size, ``probs`` (C, H, W) float32 when asked
    for, ``faces`` the faces parsed (None for a whole image)."""
    labels: np.ndarray
    probs: Optional[np.ndarray] = None
    faces: Optional[list[Face]] = None


class Predictor:
    """A model with its input convention and test-time settings: (H, W, 3) uint8 BGR images, whole or warped by
    given affines, to class probabilities at the network input, ``batch_size`` images a forward pass.

    Args:
        model: returns ``{"parsing": (B, C, h, w)}`` logits (upsampled to the input when smaller).
        meta: the model's metadata (input size, channel order, mean, std: :func:`dml_csr.inference.input_transform`).
        device: "cpu", "cuda", "cuda:N" or "auto".
        flip_perm: with flip testing, the class each class becomes mirrored; None without.
        scales, precision: multi-scale testing and the autocast dtype (see :func:`dml_csr.inference.predict_probs`);
            scales are finite, > 0 and <= 8, at least one.
        batch_size: images a forward pass, 1 to 4096.
        crf_iterations: mean-field steps of a dense CRF on each crop's probabilities (Liu et al.'s CNN-CRF,
            :func:`dml_csr.inference.crf_probs`), 0 to 50; 0: none.
        crf_kernels: its kernel settings in place of the defaults ({"bilateral_rgb": 20, ...}: the names of
            :data:`dml_csr.models.dense_crf.KERNEL_SETTINGS`); only with ``crf_iterations``.

    Raises:
        ValueError naming the argument or the metadata key that is not finite or out of range.
    """

    def __init__(self, model: torch.nn.Module, meta: dict, device: str = "cpu", *,
                 flip_perm: Optional[Sequence[int]] = None, scales: Sequence[float] = (1.0,),
                 precision: str = "fp32", batch_size: int = 8, crf_iterations: int = 0,
                 crf_kernels: Optional[Mapping[str, Any]] = None):
        iterations = int(number(crf_iterations, "crf_iterations", 0, 50, integer=True))
        if crf_kernels and not iterations:
            raise ValueError(f"crf_kernels {dict(crf_kernels)} set the dense CRF's kernels; they need "
                             "crf_iterations >= 1")
        self.crf = crf_params(iterations, crf_kernels) if iterations else None
        self.scales = tuple(numbers(scales, "scales", 0, 8, lo_open=True))
        self.batch_size = int(number(batch_size, "batch_size", 1, 4096, integer=True))
        if precision not in PRECISIONS:
            raise ValueError(f"precision = {shown(precision)}; expected one of {', '.join(PRECISIONS)}")
        self.transform = inference.input_transform(meta)
        self.device = resolve_device(device)
        self.model = prepare_for_inference(model.to(self.device), precision)
        self.flip_perm = None if flip_perm is None else list(flip_perm)
        self.precision = precision
        # a model trained on faces framed by their landmarks (data.align=landmarks): told once of whole images
        self.faces_only = framed_by_landmarks(meta.get("crop"))

    @torch.no_grad()
    def predict(self, images: Sequence[np.ndarray], affines: Optional[Sequence[np.ndarray]] = None
                ) -> Iterator[tuple[torch.Tensor, np.ndarray]]:
        """Per image (or per affine), its (C, h, w) probabilities on the device and its input -> image affine."""
        for start in range(0, len(images), self.batch_size):
            chunk = slice(start, start + self.batch_size)
            batch, inverses = inference.network_batch(images[chunk], self.transform,
                                                      None if affines is None else affines[chunk])
            x = batch_input(batch, self.device)
            probs = inference.predict_probs(self.model, x, scales=self.scales, flip_perm=self.flip_perm,
                                            precision=self.precision)
            if self.crf is not None:
                probs = inference.crf_probs(probs, batch["image"], self.crf)
            yield from zip(probs, inverses)


def parse_whole(predictor: Predictor, images: Sequence[np.ndarray], paste: str = "smooth",
                return_probs: bool = False) -> list[Parse]:
    """Whole BGR images through the evaluation crop and back (see the module docstring for ``paste``)."""
    if paste not in PASTES:
        raise ValueError(f"paste must be 'smooth' or 'nearest', got {paste!r}")
    if predictor.faces_only:
        predictor.faces_only = False
        log.warning("this model was trained on faces framed by their landmarks (data.align=landmarks); a whole image "
                    "through the whole-image crop is not what it saw: detect=True (predict.py --detect) or faces=... "
                    "aligns each face as in training")
    out, warp = [], predictor.transform.tanh_warp
    for image, (probs, inverse) in zip(images, predictor.predict(images)):
        size, labels, full = image.shape[:2], None, None
        if return_probs or paste == "smooth":
            full = inference.paste_back(probs, inverse, size, mode="bilinear", border="replicate", tanh_warp=warp)
            labels = full.argmax(0).astype(np.uint8)
        if paste == "nearest":
            labels = inference.paste_back(probs.argmax(0).to(torch.uint8), inverse, size, mode="nearest",
                                          border="constant", tanh_warp=warp)
        out.append(Parse(labels, full if return_probs else None))
    return out


def face_affines(faces: Sequence[Face], crop: dict, input_size: Sequence[int], margin: float) -> list[np.ndarray]:
    """Image -> network input affine of each face under the crop convention ``crop``."""
    return [face_affine(f, crop, input_size, margin) for f in faces]


def parse_faces(predictor: Predictor, image: np.ndarray, faces: Sequence[Face], *, crop: dict, margin: float,
                num_classes: int, return_probs: bool = False) -> Parse:
    """The given faces of one BGR image: each warped to ``crop``, parsed, pasted back and composited."""
    affines = face_affines(faces, crop, predictor.transform.input_size, margin)
    probs = [p for p, _ in predictor.predict([image] * len(affines), affines)]
    labels, full = paste_faces(image.shape[:2], affines, probs, num_classes, predictor.transform.input_size,
                               return_probs, predictor.transform.tanh_warp)
    return Parse(labels, full, list(faces))


def paste_faces(size: Sequence[int], affines: Sequence[np.ndarray], crop_probs: Sequence, num_classes: int,
                input_size: Sequence[int], return_probs: bool = False,
                tanh_warp: float = 0.0) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Labels (H, W) uint8 of an image of ``size`` from its crops' (C, h, w) probabilities: each pasted back
    bilinearly through the inverse of its image -> input affine, with the share of each photo pixel it covers, and
    composited (:func:`dml_csr.photos.alignment.composite`); background where no crop reaches. With ``tanh_warp``
    (the crops' RoI tanh warp) a crop holds the whole photo, squeezed: each is still pasted over the region its
    affine alone covers. Returns (labels, (C, H, W) probabilities or None)."""
    h, w = int(size[0]), int(size[1])
    pasted = []
    for m, p in zip(affines, crop_probs):
        region = crop_region(m, input_size, (h, w))
        if region is None:
            continue
        inverse = cv2.invertAffineTransform(np.asarray(m, np.float64))
        ones = np.ones(tuple(input_size), np.float32)
        pasted.append((inference.paste_back(p, inverse, (h, w), mode="bilinear", border="replicate", window=region,
                                            tanh_warp=tanh_warp),
                       # coverage: the unwarped crop's own (a warped crop reaches every photo pixel)
                       inference.paste_back(ones, inverse, (h, w), mode="bilinear", window=region), region))
    probs, union = composite(pasted, num_classes)
    labels = np.zeros((h, w), np.uint8)
    if union is not None:
        x0, y0, x1, y1 = union
        labels[y0:y1, x0:x1] = probs.argmax(0)
    if not return_probs:
        return labels, None
    full = np.zeros((num_classes, h, w), np.float32)
    full[0] = 1.0
    if union is not None:
        full[:, y0:y1, x0:x1] = probs
    return labels, full
