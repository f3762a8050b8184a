"""The face-parsing dataset over the prepared layout, and the builders that read the config.

Prepared layout (the official DML-CSR one)::

    <root>/{split}_list.txt          lines "images/NAME.jpg labels/NAME.png", relative to <root>/{split}/
    <root>/{split}/images/NAME.jpg   any OpenCV-readable image
    <root>/{split}/labels/NAME.png   uint8 class indices, 255 = ignore
    <root>/{split}/landmarks/NAME.txt  optional: a count line, then one "x y" a line (5 points, in the order of
                                     :data:`dml_csr.conventions.KEYPOINTS`; read with ``keypoints=True``)
    <root>/label_names.txt           one class name a line, first 'bg'

``val`` and the authors' ``valid`` are accepted for each other.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Callable, Optional

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ..conventions import IGNORE_INDEX, KEYPOINTS

from .class_map import config_class_map
from .face_template import framing_template
from .imageio import imread_checked
from .class_map import label_spec
from .labels import LabelSpec
from .noise import LabelNoise
from .transforms import EvalTransform, TrainTransform, similarity_transform, warp_keypoints

__all__ = ["FaceParsingDataset", "BadSampleError", "UnreadableFileError", "resolve_split", "read_split_list",
           "read_image", "read_label", "landmark_file", "read_landmark_file", "read_five_points", "LAPA_FIVE",
           "evenly_spaced", "build_transform", "build_dataset", "config_label_noise", "split_histogram",
           "inverse_frequency_weights"]

logger = logging.getLogger(__name__)
_ALIASES = {"val": "valid", "valid": "val"}


class BadSampleError(ValueError):
    """A sample that cannot be used: missing or undecodable file, size mismatch, label values out of range."""


class UnreadableFileError(BadSampleError):
    """A sample's image or label file the reader refuses (:mod:`dml_csr.data.imageio`): missing, empty, a link loop,
    over the byte or pixel limit, truncated, undecodable."""


def resolve_split(root: str, split: str) -> str:
    """The split name as present under ``root`` (``val`` <-> ``valid``); raises naming the lists that exist."""
    for name in (split, _ALIASES.get(split)):
        if name and os.path.isfile(os.path.join(root, f"{name}_list.txt")):
            return name
    if not os.path.isdir(root):
        raise FileNotFoundError(f"dataset root '{root}' does not exist (set data.root to a prepared dataset)")
    found = sorted(f[: -len("_list.txt")] for f in os.listdir(root) if f.endswith("_list.txt"))
    hint = "prepare the dataset with scripts/prepare_*.py"
    if split in ("val", "valid") and found:
        hint = ("a copy without a validation split: prepare it again with --val-from-train N (prepare_helen.py) or "
                "point data.val_split at a split held out from training, never the test split")
    raise FileNotFoundError(f"no '{split}_list.txt' in '{root}'; splits present: {', '.join(found) or 'none'} "
                            f"({hint})")


def read_split_list(root: str, split: str) -> list[tuple[str, str, str]]:
    """``[(name, image_path, label_path), ...]`` of a split, paths absolute. Raises on malformed lines."""
    split = resolve_split(root, split)
    list_path = os.path.join(root, f"{split}_list.txt")
    base = os.path.join(root, split)
    items, first = [], {}
    with open(list_path) as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2:
                raise ValueError(f"{list_path}:{n}: expected 'images/NAME.jpg labels/NAME.png', got {line.strip()!r}")
            name = os.path.splitext(os.path.basename(parts[0]))[0]
            if name in first:  # scores and saved predictions are keyed by the name
                raise ValueError(f"{list_path}:{n}: sample name '{name}' is listed twice (first on line "
                                 f"{first[name]}); names must be unique in a split")
            first[name] = n
            items.append((name, os.path.join(base, parts[0]), os.path.join(base, parts[1])))
    return items


def evenly_spaced(n: int, count: int) -> np.ndarray:
    """Indices of at most ``count`` of ``n`` items spread evenly from the first to the last (all when fewer)."""
    return np.unique(np.linspace(0, n - 1, min(max(1, count), n)).round().astype(int))


def read_image(path: str) -> np.ndarray:
    """(H, W, 3) uint8 BGR; :class:`UnreadableFileError` naming the file when the reader refuses it."""
    return imread_checked(path, cv2.IMREAD_COLOR, UnreadableFileError, "image file")


def read_label(path: str, num_classes: Optional[int] = None) -> np.ndarray:
    """(H, W) uint8 label map; raises :class:`BadSampleError` naming the file when missing, undecodable, not
    single-channel, or (given ``num_classes``) holding values outside [0, num_classes) and 255."""
    lab = imread_checked(path, cv2.IMREAD_UNCHANGED, UnreadableFileError, "label file")
    if lab.ndim == 3:
        if lab.shape[2] >= 3 and (np.array_equal(lab[..., 0], lab[..., 1]) and np.array_equal(lab[..., 0], lab[..., 2])):
            lab = np.ascontiguousarray(lab[..., 0])
        else:
            raise BadSampleError(f"label file '{path}' has {lab.shape[2]} colour channels; expected a single-channel "
                                 f"map of class indices (convert colours with the dataset's prepare script)")
    if lab.dtype != np.uint8:
        raise BadSampleError(f"label file '{path}' is {lab.dtype}; expected 8-bit class indices")
    if num_classes is not None:
        check_label_values(lab, num_classes, path)
    return lab


def landmark_file(image_path: str, name: str) -> str:
    """``<split>/landmarks/NAME.txt``: where the landmarks of the sample whose image is ``image_path`` lie."""
    return os.path.join(os.path.dirname(os.path.dirname(image_path)), "landmarks", f"{name}.txt")


def read_landmark_file(path: str, needed_by: str = "data.keypoints needs one per sample") -> tuple[int, np.ndarray]:
    """(count line, (N, 2) float64 points) of a landmark file: a count line, then one "x y" a line; raises
    :class:`BadSampleError` naming the file when it is missing or malformed (``needed_by`` says why it must exist)."""
    try:
        with open(path) as f:
            lines = [line.split() for line in f if line.strip()]
        if len(lines[0]) != 1:
            raise ValueError("no count line")
        count = int(lines[0][0])
        points = np.array([[float(v) for v in line[:2]] for line in lines[1:]], np.float64).reshape(-1, 2)
    except FileNotFoundError:
        raise BadSampleError(f"landmark file '{path}' is missing ({needed_by})") from None
    except (ValueError, IndexError):
        raise BadSampleError(f"landmark file '{path}' is malformed; expected a count line, then 'x y' lines") from None
    if not np.isfinite(points).all():
        raise BadSampleError(f"landmark file '{path}' holds a coordinate that is not a finite number")
    return count, points


# LaPa's 106 landmarks -> the five keypoints, the points FaRL aligns LaPa faces by (104, 105, 54, 84, 90: the
# image-left eye first), in the subject's-left-first order of dml_csr.conventions.KEYPOINTS
LAPA_FIVE = (105, 104, 54, 90, 84)


ALIGN_NEEDS = "--align landmarks and data.align=landmarks frame each face by its own landmarks"


def read_five_points(path: str, needed_by: str = ALIGN_NEEDS) -> np.ndarray:
    """(5, 2) float64 keypoints of a sample from its landmark file, in the order of
    :data:`~dml_csr.conventions.KEYPOINTS`: a 5-point file as it is, LaPa's 106 points through :data:`LAPA_FIVE`; any
    other count is a :class:`BadSampleError` naming the file (``needed_by``: why it must exist)."""
    count, points = read_landmark_file(path, needed_by)
    if count != len(points) or len(points) not in (5, 106):
        raise BadSampleError(f"landmark file '{path}' has {len(points)} points (count line {count}); expected 5 "
                             f"keypoints or LaPa's 106")
    return points if len(points) == 5 else points[list(LAPA_FIVE)]


def check_label_values(label: np.ndarray, num_classes: int, path: str) -> None:
    """Raise :class:`BadSampleError` naming ``path`` and the offending values if any is outside [0, C) and 255."""
    top = int(label.max()) if label.size else 0
    if top < num_classes:
        return
    counts = np.bincount(label.ravel(), minlength=256)
    bad = [v for v in np.nonzero(counts)[0].tolist() if v >= num_classes and v != IGNORE_INDEX]
    if bad:
        raise BadSampleError(f"label file '{path}' has values {bad} outside [0, {num_classes}) and {IGNORE_INDEX} "
                             f"(ignore); "
                             f"wrong dataset key or label order?")


def _check_class_count(root: str, spec: LabelSpec) -> None:
    """A prepared root names its classes in ``label_names.txt``: a count other than the registry entry's means the
    wrong ``data.dataset`` (caught here, before a label value fails in the middle of an epoch)."""
    path = os.path.join(root, "label_names.txt")
    if not os.path.isfile(path):  # the authors' own layout has none
        return
    with open(path) as f:
        names = [line.strip() for line in f if line.strip()]
    if names and len(names) != spec.num_classes:
        raise ValueError(f"'{path}' lists {len(names)} classes, but data.dataset '{spec.name}' has "
                         f"{spec.num_classes}; set data.dataset to the key this root was prepared for")


class FaceParsingDataset(Dataset):
    """Samples of a prepared split, transformed.

    ``__getitem__`` returns ``image`` (3, h, w) uint8 BGR (network input after
    :func:`~dml_csr.data.transforms.batch_input`), ``label``/``edge``/``semantic_edge`` (h, w) uint8 (255 = ignore),
    ``name`` str and ``meta`` (center, scale, rotation, flip, size (H, W), input_size, pixels).

    Args:
        root: prepared dataset root.
        split: "train", "val"/"valid", "test" or any ``<split>_list.txt`` present.
        spec: the model's class layout (the label registry entry, or what a custom root declares).
        transform: called as ``transform(image, label, rng)``; see :mod:`dml_csr.data.transforms`.
        skip_bad: replace an unusable sample by the next usable one with a warning, instead of raising. Skipped names
            are collected; read them with :meth:`pop_skipped` (the loader of :mod:`dml_csr.data.loader` brings names
            skipped inside worker processes back to this object and logs a summary after each pass).
        max_samples: keep only the first N samples (0 = all).
        label_noise: ``label_noise(label, name)`` corrupts each original label map before the transform
            (:class:`dml_csr.data.noise.LabelNoise`); None: the labels as they are.
        keypoints: also read each sample's 5 landmarks (``landmarks/NAME.txt``) and return them, warped with the
            sample's affine, as ``keypoints`` (5, 2) float32 pixels (x, y) of the network input (a flip also swaps
            the subject's left and right, as the labels).
        class_map: a :class:`~dml_csr.data.class_map.ClassMap` from the root's classes (its ``source``, which
            validates the files) to ``spec``'s, applied to every label map as it is read; None: the root's classes
            are ``spec``'s.
        template: (5, 2) points of the network input (pixels): frame each sample by the similarity that takes its
            own five landmarks (``landmarks/NAME.txt``: 5 keypoints, or LaPa's 106) onto them
            (:meth:`landmark_affine`; ``data.align: landmarks``), the transform's random draws on top; None: the
            transform frames the whole image.
    """

    def __init__(self, root: str, split: str, spec: LabelSpec, transform: Callable, *, skip_bad: bool = False,
                 max_samples: int = 0, keypoints: bool = False, class_map=None,
                 label_noise: Optional[Callable] = None, template: Optional[np.ndarray] = None):
        self.root = root
        self.template = None if template is None else np.asarray(template, np.float64).reshape(len(KEYPOINTS), 2)
        self.split = resolve_split(root, split)
        self.spec = spec
        self.class_map = class_map
        self.source_spec = spec if class_map is None else class_map.source
        _check_class_count(root, self.source_spec)
        self.transform = transform
        self.skip_bad = skip_bad
        self.keypoints = keypoints
        self.label_noise = label_noise
        items = read_split_list(root, self.split)
        if max_samples > 0:
            items = items[:max_samples]
        if not items:
            raise ValueError(f"split '{self.split}' of '{root}' is empty ({self.split}_list.txt lists no samples)")
        self.items = items
        self._skipped: list[str] = []

    @property
    def names(self) -> list[str]:
        return [it[0] for it in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def load_pair(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """The original (image (H, W, 3) uint8 BGR, label (H, W) uint8) of sample ``i``, validated."""
        _, ip, lp = self.items[i]
        img = read_image(ip)
        lab = self.load_label(i)
        if img.shape[:2] != lab.shape:
            raise BadSampleError(f"size mismatch: image '{ip}' is {img.shape[1]}x{img.shape[0]} (WxH) but label '{lp}' "
                                 f"is {lab.shape[1]}x{lab.shape[0]}")
        return img, lab

    def landmark_path(self, i: int) -> str:
        """``<split>/landmarks/NAME.txt`` of sample ``i``."""
        name, image_path, _ = self.items[i]
        return landmark_file(image_path, name)

    def load_keypoints(self, i: int) -> np.ndarray:
        """(5, 2) float32 landmarks of sample ``i`` in its original image (``<split>/landmarks/NAME.txt``: 5 points,
        or LaPa's 106 through :data:`LAPA_FIVE`)."""
        return read_five_points(self.landmark_path(i), "data.keypoints needs one per sample").astype(np.float32)

    def landmark_affine(self, i: int) -> np.ndarray:
        """The 2x3 similarity (image -> input pixels, least squares) taking sample ``i``'s five landmarks onto
        :attr:`template`; a :class:`BadSampleError` naming the file when it has none or they coincide."""
        path = self.landmark_path(i)
        try:
            return similarity_transform(read_five_points(path), self.template)
        except BadSampleError:
            raise
        except ValueError as e:
            raise BadSampleError(f"landmark file '{path}': {e}") from None

    def load_label(self, i: int) -> np.ndarray:
        """The original (H, W) uint8 label map of sample ``i`` (for scoring at full resolution), in the model's
        classes (through the class map)."""
        lab = read_label(self.items[i][2], self.source_spec.num_classes)
        return lab if self.class_map is None else self.class_map.apply(lab)

    def pop_skipped(self) -> list[str]:
        """Names of the samples skipped since the last call (``skip_bad``), and reset the record."""
        out, self._skipped = self._skipped, []
        return out

    def __getitem__(self, i: int | tuple[int, int]) -> dict[str, Any]:
        """Sample ``i``, augmented with the random draws of ``seed`` when ``i`` is ``(index, seed)`` (what the
        training loaders pass: a sample's augmentation then depends on nothing but that seed), else of torch's
        RNG."""
        i, seed = i if isinstance(i, tuple) else (i, None)
        if seed is None:
            seed = int(torch.randint(0, 2 ** 62, (1,)).item())
        skipped: list[str] = []
        for attempt in range(len(self.items)):
            j = (i + attempt) % len(self.items)
            try:
                img, lab = self.load_pair(j)
                affine = None if self.template is None else self.landmark_affine(j)
                points = self.load_keypoints(j) if self.keypoints else None
                break
            except BadSampleError as e:
                if not self.skip_bad:
                    raise
                logger.warning("skipping sample '%s': %s", self.items[j][0], e)
                skipped.append(self.items[j][0])
        else:
            raise BadSampleError(f"every sample of split '{self.split}' in '{self.root}' is unusable "
                                 f"(first: {skipped[0]})")
        if self.label_noise is not None:
            lab = self.label_noise(lab, self.items[j][0])
        rng = np.random.default_rng(seed)
        sample = self.transform(img, lab, rng) if affine is None else self.transform(img, lab, rng, affine=affine)
        sample["name"] = self.items[j][0]
        if points is not None:
            sample["keypoints"] = torch.from_numpy(warp_keypoints(points, sample["meta"]))
        if skipped:
            if torch.utils.data.get_worker_info() is None:
                self._skipped.extend(skipped)
            else:  # another process: the names travel with the batch back to the main process's dataset
                sample["skipped"] = skipped
        return sample


def build_transform(cfg, train: bool, spec: Optional[LabelSpec] = None):
    """The train or eval transform from ``cfg.data`` and the input convention in ``cfg.model``; ``spec``: the class
    layout (default: :func:`dml_csr.data.class_map.label_spec` of ``cfg``), for the train transform's flips."""
    d, m = cfg.data, cfg.model
    if train:
        return TrainTransform(d.input_size, label_spec(cfg) if spec is None else spec, m.channel_order, m.mean, m.std,
                              d.scale_range, d.rotation, d.rotation_prob, d.flip, d.color_jitter, d.edge_width,
                              sampling=d.aug_sampling, tanh_warp=d.tanh_warp)
    return EvalTransform(d.input_size, m.channel_order, m.mean, m.std, d.edge_width, tanh_warp=d.tanh_warp)


def build_dataset(cfg, split: str, train: bool, spec: Optional[LabelSpec] = None) -> FaceParsingDataset:
    """The dataset of ``split`` under ``cfg.data.root`` with the train (random) or eval (deterministic) transform;
    ``spec``: the class layout (default: :func:`dml_csr.data.class_map.label_spec` of ``cfg``); labels go through
    ``data.class_map`` when the config has one. ``data.label_noise`` corrupts the labels of the training split's
    training dataset only. With ``data.align: landmarks`` each face is framed by its landmarks onto the template of
    ``data.template`` (:func:`.face_template.framing_template`)."""
    d = cfg.data
    spec = label_spec(cfg) if spec is None else spec
    noise = (config_label_noise(cfg)
             if train and resolve_split(d.root, split) == resolve_split(d.root, d.train_split) else None)
    return FaceParsingDataset(d.root, split, spec, build_transform(cfg, train, spec),
                              skip_bad=d.skip_bad, max_samples=d.max_samples, keypoints=d.keypoints,
                              class_map=config_class_map(cfg) if d.class_map is not None else None,
                              label_noise=noise, template=framing_template(d))


def config_label_noise(cfg) -> Optional[LabelNoise]:
    """The corruption ``data.label_noise`` asks of training labels; None when its rate is 0."""
    n = cfg.data.label_noise
    return LabelNoise(n.rate, n.kinds, n.max_shift, n.seed) if n.rate > 0 else None


def split_histogram(root: str, split: str, spec: LabelSpec) -> np.ndarray:
    """(C,) pixel count per class of ``split``, from the ``info.json`` the prepare scripts write."""
    path = os.path.join(root, "info.json")
    split = resolve_split(root, split)
    try:
        with open(path) as f:
            by_split = json.load(f)["pixel_histogram_by_split"]
        hist = by_split[split]
    except FileNotFoundError:
        raise FileNotFoundError(f"'{path}' does not exist; loss.class_weights=inverse_frequency reads the train "
                                f"split's class histogram there (prepare the dataset with scripts/prepare_*.py)"
                                ) from None
    except (KeyError, ValueError):
        raise ValueError(f"'{path}' has no pixel_histogram_by_split['{split}'] (an older prepare script wrote it); "
                         f"prepare the dataset again, or set loss.class_weights to a list") from None
    missing = [c for c in spec.classes if c not in hist]
    if missing:
        raise ValueError(f"'{path}': the '{split}' histogram lacks classes {missing} of data.dataset '{spec.name}'")
    return np.array([hist[c] for c in spec.classes], np.float64)


def inverse_frequency_weights(hist: np.ndarray) -> list[float]:
    """``w_j`` proportional to ``1 / n_j`` over the classes present, normalised to mean 1 over them; 0 for a class
    with no pixel (it has no edge to weigh either)."""
    hist = np.asarray(hist, np.float64)
    present = hist > 0
    if not present.any():
        raise ValueError("inverse_frequency_weights: the histogram counts no pixel")
    inv = np.where(present, 1.0 / np.maximum(hist, 1.0), 0.0)
    return (inv / inv[present].mean()).tolist()
