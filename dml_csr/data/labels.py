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
from typing import Optional

import numpy as np

__all__ = ["LabelSpec", "DATASETS", "get_spec", "flip_permutation", "SYNONYMS",
           "class_mapping", "spec_meta", "spec_from_meta", "fallback_palette", "CUSTOM", "subject_names", "make_spec",
           "SIDES"]

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
        f1_classes: the class indices whose F1 enters the mean F1; None: every class but the first (background).
        left_is: whose left the dataset's own "left" is (:data:`SIDES`); ``classes`` are named by the subject's side
            either way.
    """
    name: str
    classes: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...] = ()
    groups: dict[str, tuple[int, ...]] = field(default_factory=dict)
    palette: np.ndarray = field(default=None, compare=False, repr=False)
    f1_classes: Optional[tuple[int, ...]] = None
    left_is: str = "subject"

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def mean_f1_indices(self) -> tuple[int, ...]:
        """The classes the mean F1 averages: :attr:`f1_classes`, by default all but background."""
        return tuple(range(1, self.num_classes)) if self.f1_classes is None else tuple(self.f1_classes)

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

# FaceSynthetics (Wood et al. 2021), in the order of the dataset's README (BACKGROUND = 0 ... FACEWEAR = 18, IGNORE =
# 255), its names lower-cased. The README does not say whose right RIGHT_EYE is; read as the subject's, as everywhere
# here (the flip pairs hold either way; a class map by name assumes it)
_FS_CLASSES = ("background", "skin", "nose", "right_eye", "left_eye", "right_brow", "left_brow", "right_ear",
               "left_ear", "mouth_interior", "top_lip", "bottom_lip", "neck", "hair", "beard", "clothing", "glasses",
               "headwear", "facewear")
# CelebAMask-HQ's colour for each part the two share; beard and facewear colours of their own
_FS_COLOURS = [(0, 0, 0), (0, 200, 160), (255, 0, 255), (0, 204, 255), (0, 102, 255), (205, 133, 63),
               (139, 69, 19), (102, 204, 0), (0, 153, 0), (255, 255, 0), (255, 0, 0), (153, 0, 0), (255, 153, 102),
               (102, 51, 0), (85, 107, 47), (0, 51, 153), (128, 128, 128), (255, 102, 0), (153, 153, 255)]
_FS_PAIRS = ((3, 4), (5, 6), (7, 8))
_FS_GROUPS = {"eyes": (3, 4), "brows": (5, 6), "mouth": (9, 10, 11), "nose": (2,), "ears": (7, 8),
              "overall": (2, 3, 4, 5, 6, 9, 10, 11)}

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
                     left_is=left_is)


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
    "facesynthetics": _spec("facesynthetics", _FS_CLASSES, _FS_COLOURS, _FS_PAIRS, _FS_GROUPS),
    # procedural faces in the two class orders above (dml_csr.data.synthetic)
    "synthetic": _spec("synthetic", _HELEN_CLASSES, _HELEN_COLOURS, _HELEN_PAIRS, _HELEN_GROUPS),
    "synthetic19": _spec("synthetic19", _CELEBA_CLASSES, _CELEBA_COLOURS, _CELEBA_PAIRS, _CELEBA_GROUPS),
}


CUSTOM = "custom"  # data.dataset of a root that declares its own classes (dml_csr.data.custom)


def get_spec(name: str) -> LabelSpec:
    """The registry entry for ``name``; an unknown name raises listing the valid ones."""
    try:
        return DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown dataset '{name}'; expected one of {', '.join(DATASETS)} (or '{CUSTOM}': the "
                       f"classes of the root's label_names.txt)") from None


def spec_meta(spec: LabelSpec) -> dict:
    """What a checkpoint's meta adds so that it predicts and draws without its root: nothing for a registry entry
    (found by its name), else the palette, flip pairs, groups and mean-F1 classes of ``spec``."""
    if DATASETS.get(spec.name) == spec:
        return {}
    return {"palette": np.asarray(spec.palette).astype(int).tolist(), "flip_pairs": [list(p) for p in spec.flip_pairs],
            "groups": {g: list(m) for g, m in spec.groups.items()}, "f1_classes": list(spec.mean_f1_indices)}


def spec_from_meta(meta: dict) -> LabelSpec:
    """The class layout a checkpoint's meta describes: its own palette, pairs and groups (:func:`spec_meta`), else
    the registry entry of its ``dataset`` when the class count agrees, else its class names with fixed random
    colours (seeded by the class count, black background) and no pairs."""
    classes = tuple(meta["classes"])
    if "palette" in meta:
        return LabelSpec(meta.get("dataset", CUSTOM), classes, tuple(tuple(p) for p in meta.get("flip_pairs", ())),
                         {g: tuple(m) for g, m in meta.get("groups", {}).items()},
                         np.asarray(meta["palette"], np.uint8).reshape(len(classes), 3),
                         tuple(meta["f1_classes"]) if "f1_classes" in meta else None)
    spec = DATASETS.get(meta.get("dataset") or "")
    if spec is not None and spec.num_classes == len(classes):
        return spec
    return LabelSpec(meta.get("dataset") or "unknown", classes, palette=fallback_palette(len(classes)))


def fallback_palette(num_classes: int) -> np.ndarray:
    """(C, 3) uint8 RGB for classes without colours of their own: fixed random colours seeded by the class count,
    background black."""
    rng = np.random.default_rng(num_classes)
    pal = rng.integers(0, 256, (num_classes, 3)).astype(np.uint8)
    pal[0] = 0
    return pal


# class names that mean the same part in two registry vocabularies (CelebAMask-HQ's and FaceSynthetics' names ->
# Helen's, or to one name where Helen has none; every order here uses the subject's left, see the module docstring).
# Anything else matches by its exact name only.
SYNONYMS = {"l_brow": "left_brow", "r_brow": "right_brow", "l_eye": "left_eye", "r_eye": "right_eye",
            "u_lip": "upper_lip", "l_lip": "lower_lip", "mouth": "inner_mouth",
            "mouth_interior": "inner_mouth", "top_lip": "upper_lip", "bottom_lip": "lower_lip",
            "l_ear": "left_ear", "r_ear": "right_ear", "eye_g": "glasses", "hat": "headwear", "cloth": "clothing"}


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
