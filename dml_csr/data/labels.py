"""The label registry: for each dataset its class names, palette, left/right flip pairs and merged evaluation groups.

Loaders, flips, metrics and drawing read this module; nothing else hard-codes a class index. "Left" in a class name
always means the *subject's* left (the person in the picture), which appears on the right-hand side of a frontal
image. Each entry records its dataset's own convention (``left_is``): ``"subject"`` when the dataset's "left" is the
subject's, ``"image"`` when it is the image's left (the subject's right). A dataset of the image convention gets its
left/right class names swapped here (:func:`subject_names`), so that every consumer -- the flips, RNN-G's per-side
eye crops (:mod:`dml_csr.face_parts`), the per-class scores -- reads one convention; the class indices stay the
dataset's.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["LabelSpec", "DATASETS", "get_spec", "label_spec", "flip_permutation", "SYNONYMS", "class_mapping",
           "subject_names", "make_spec", "SIDES"]

SIDES = ("subject", "image")  # whose left a dataset's "left" is


@dataclass(frozen=True)
class LabelSpec:
    """Class layout of one dataset.

    Attributes:
        name: registry key.
        classes: class names, index = label value; index 0 is background.
        flip_pairs: (left, right) index pairs to swap on a horizontal flip.
        groups: merged sets used by evaluation, name -> class indices (e.g. ``eyes``; Helen's ``overall``).
        palette: (C, 3) uint8 RGB colours.
        left_is: whose left the dataset's own "left" is (:data:`SIDES`); ``classes`` are named by the subject's side
            either way.
    """
    name: str
    classes: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...] = ()
    groups: dict[str, tuple[int, ...]] = field(default_factory=dict)
    palette: np.ndarray = field(default=None, compare=False, repr=False)
    left_is: str = "subject"

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def index(self, name: str) -> int:
        """Index of a class by name; raises naming the valid names."""
        try:
            return self.classes.index(name)
        except ValueError:
            raise KeyError(f"dataset '{self.name}' has no class '{name}'; classes: {', '.join(self.classes)}") from None


def flip_permutation(spec: LabelSpec) -> np.ndarray:
    """``perm[c]`` is the label that class ``c`` becomes after a horizontal flip."""
    perm = np.arange(spec.num_classes)
    for a, b in spec.flip_pairs:
        perm[a], perm[b] = b, a
    return perm


def _palette(n: int, base: list[tuple[int, int, int]]) -> np.ndarray:
    pal = np.zeros((n, 3), np.uint8)
    pal[: len(base)] = base[:n]
    rng = np.random.RandomState(12345)
    for i in range(len(base), n):
        pal[i] = rng.randint(0, 256, 3)
    return pal


_HELEN_CLASSES = ("background", "skin", "left_brow", "right_brow", "left_eye", "right_eye", "nose",
                  "upper_lip", "inner_mouth", "lower_lip", "hair")
# skin is teal, not a skin tone: an overlay must show it on light and on dark skin alike
_HELEN_COLOURS = [(0, 0, 0), (0, 200, 160), (139, 69, 19), (205, 133, 63), (0, 102, 255), (0, 204, 255),
                  (255, 0, 255), (255, 0, 0), (255, 255, 0), (153, 0, 0), (102, 51, 0)]
_HELEN_PAIRS = ((2, 3), (4, 5))
_HELEN_GROUPS = {"eyes": (4, 5), "brows": (2, 3), "mouth": (7, 8, 9), "nose": (6,),
                 "overall": (2, 3, 4, 5, 6, 7, 8, 9)}

_CELEBA_CLASSES = ("background", "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear",
                   "mouth", "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth")
_CELEBA_COLOURS = [(0, 0, 0), (0, 200, 160), (255, 0, 255), (128, 128, 128), (0, 102, 255), (0, 204, 255),
                   (139, 69, 19), (205, 133, 63), (0, 153, 0), (102, 204, 0), (255, 255, 0), (255, 0, 0),
                   (153, 0, 0), (102, 51, 0), (255, 102, 0), (255, 215, 0), (204, 0, 204), (255, 153, 102),
                   (0, 51, 153)]
_CELEBA_PAIRS = ((4, 5), (6, 7), (8, 9))
_CELEBA_GROUPS = {"eyes": (4, 5), "brows": (6, 7), "mouth": (10, 11, 12), "nose": (2,), "ears": (8, 9),
                  "overall": (2, 4, 5, 6, 7, 10, 11, 12)}

_LFW_CLASSES = ("background", "skin", "hair")
_LFW_COLOURS = [(0, 0, 255), (0, 255, 0), (255, 0, 0)]  # the dataset's own colours: blue bg, green skin, red hair


def subject_names(names, left_is: str) -> tuple[str, ...]:
    """A dataset's class names as the subject's sides: unchanged for the ``subject`` convention; for ``image``, every
    left/right name swapped (``left_eye`` <-> ``right_eye``, ``l_brow`` <-> ``r_brow``)."""
    if left_is not in SIDES:
        raise ValueError(f"left_is = {left_is!r}; expected one of {', '.join(SIDES)}")
    if left_is == "subject":
        return tuple(names)
    swap = {"left": "right", "right": "left", "l": "r", "r": "l"}

    def mirrored(name: str) -> str:
        head, sep, tail = name.partition("_")
        return swap[head] + sep + tail if sep and head in swap else name
    return tuple(mirrored(n) for n in names)


def make_spec(name, classes, colours, pairs=(), groups=None, left_is: str = "subject") -> LabelSpec:
    """A registry entry from the dataset's own class names and its side convention (``left_is``)."""
    return LabelSpec(name, subject_names(classes, left_is), pairs, dict(groups or {}), _palette(len(classes), colours),
                     left_is)


_spec = make_spec


# Side conventions (data/README.md gives the sources): LaPa's labelmap and CelebAMask-HQ's part names are the
# subject's; Helen's label documentation (Smith et al.'s README.txt: "Label 02: left eyebrow ... Label 05: right eye")
# does not say whose left, and is read as the subject's, as LaPa, which copies Helen's 11 classes, states it.
DATASETS: dict[str, LabelSpec] = {
    "helen": _spec("helen", _HELEN_CLASSES, _HELEN_COLOURS, _HELEN_PAIRS, _HELEN_GROUPS),
    "lapa": _spec("lapa", _HELEN_CLASSES, _HELEN_COLOURS, _HELEN_PAIRS, _HELEN_GROUPS),
    "celebamask_hq": _spec("celebamask_hq", _CELEBA_CLASSES, _CELEBA_COLOURS, _CELEBA_PAIRS, _CELEBA_GROUPS),
    "lfw_pl": _spec("lfw_pl", _LFW_CLASSES, _LFW_COLOURS),
    # Liu et al.'s Multi-Face dataset (unpublished): several faces an image, LFW-PL's classes (prepare/multiface.py)
    "multiface": _spec("multiface", _LFW_CLASSES, _LFW_COLOURS),
    # procedural faces in the two class orders above (dml_csr.data.synthetic)
    "synthetic": _spec("synthetic", _HELEN_CLASSES, _HELEN_COLOURS, _HELEN_PAIRS, _HELEN_GROUPS),
    "synthetic19": _spec("synthetic19", _CELEBA_CLASSES, _CELEBA_COLOURS, _CELEBA_PAIRS, _CELEBA_GROUPS),
}


def get_spec(name: str) -> LabelSpec:
    """The registry entry for ``name``; an unknown name raises listing the valid ones."""
    try:
        return DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown dataset '{name}'; expected one of {', '.join(DATASETS)}") from None


def label_spec(cfg) -> LabelSpec:
    """The class layout of a config's ``data.dataset`` (a :class:`dml_csr.config.Config`): the one lookup of it; the
    trainer, the datasets and the checkpoint meta take what it returns."""
    return get_spec(cfg.data.dataset)


# class names that mean the same part in two registry vocabularies (CelebAMask-HQ's short names -> Helen's; both
# orders already use the subject's left, see the module docstring). Anything else matches by its exact name only.
SYNONYMS = {"l_brow": "left_brow", "r_brow": "right_brow", "l_eye": "left_eye", "r_eye": "right_eye",
            "u_lip": "upper_lip", "l_lip": "lower_lip", "mouth": "inner_mouth"}


def class_mapping(src: LabelSpec, dst: LabelSpec) -> tuple[np.ndarray, tuple[int, ...]]:
    """How labels written in ``src``'s class order read in ``dst``'s, matched by class name (:data:`SYNONYMS`
    folded in); a class is never merged into a coarser one.

    Returns:
        (to_dst, unmatched): ``to_dst[c]`` is the ``dst`` index of ``src`` class ``c``, or -1 where ``dst`` has no
        class of that name; ``unmatched`` the ``dst`` indices no ``src`` class maps to.
    Raises:
        ValueError: the two share no class name besides background (index 0).
    """
    def canonical(name: str) -> str:
        return SYNONYMS.get(name, name)

    where = {canonical(n): i for i, n in enumerate(dst.classes)}
    to_dst = np.array([where.get(canonical(n), -1) for n in src.classes], np.int64)
    if not (to_dst[1:] > 0).any():
        raise ValueError(f"datasets '{src.name}' ({', '.join(src.classes)}) and '{dst.name}' "
                         f"({', '.join(dst.classes)}) share no class name besides background; expected at least one")
    unmatched = tuple(sorted(set(range(dst.num_classes)) - set(to_dst[to_dst >= 0].tolist())))
    return to_dst, unmatched
