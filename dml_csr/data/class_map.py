"""Class maps: a root's labels read in the model's classes (``data.class_map``, ``data.roots[i].class_map``).

A class map sends each class of a root (its *source* vocabulary: a registry entry or what a custom root declares) to
a class of the model (its *target* vocabulary) or to ``ignore`` (255, no loss, no score). It is applied to every label
map as it is read, before augmentation, so flips, edge targets, losses and metrics all see the model's classes.
Three ways to write one:

- a registry key (``helen``): the model uses that dataset's class order; classes are matched by name as
  ``evaluate.py --pred-dataset`` matches them (:func:`~dml_csr.data.labels.class_mapping`, its synonyms folded in:
  ``l_eye`` = ``left_eye``); background goes to background, and a root class the target lacks is ignored (as that
  option ignores ground truth of a class the predictions lack);
- a mapping ``{root class: model class or ignore}`` naming every class of the root: the model's classes are the
  values in order of first appearance, the background's first, with the colours, flip pairs and groups the root's
  classes bring (with a fixed target, ``data.roots``, the values must be its classes);
- the path of a YAML file holding such a mapping.

Model classes that no root class maps to are left out of the mean F1 (nothing in the root can score them).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional, Union

import numpy as np

from ..config import ConfigError, read_yaml_mapping
from ..conventions import IGNORE_INDEX
from .custom import dataset_spec
from .labels import CUSTOM, DATASETS, LabelSpec, class_mapping, get_spec

__all__ = ["ClassMap", "IGNORE", "build_class_map", "config_class_map", "fold_histogram", "label_spec"]

IGNORE = "ignore"
Setting = Optional[Union[str, dict]]


@dataclasses.dataclass(frozen=True)
class ClassMap:
    """How one root's labels read in the model's classes.

    Attributes:
        source: the root's class layout.
        target: the model's (its ``f1_classes`` leave out the classes no root class maps to).
        lut: (256,) uint8, label value in the root -> label value for the model (255 stays 255).
        record: what was mapped, for ``metrics.jsonl``/logs: ``{"mapped": {root: model}, "ignored": [root],
            "unsupervised": [model]}``.
    """
    source: LabelSpec
    target: LabelSpec
    lut: np.ndarray = dataclasses.field(repr=False, compare=False)
    record: dict = dataclasses.field(compare=False)

    def apply(self, label: np.ndarray) -> np.ndarray:
        """A (H, W) uint8 label map of the root in the model's classes."""
        return self.lut[label]


def _lut(to_target: list[int]) -> np.ndarray:
    lut = np.full(256, IGNORE_INDEX, np.uint8)
    lut[: len(to_target)] = [IGNORE_INDEX if t < 0 else t for t in to_target]
    return lut


def _finish(source: LabelSpec, target: LabelSpec, to_target: list[int]) -> ClassMap:
    """The map, with the target's mean F1 restricted to the classes the root can score."""
    covered = {t for t in to_target if t >= 0}
    f1 = tuple(i for i in target.mean_f1_indices if i in covered)
    if f1 != target.mean_f1_indices:
        target = dataclasses.replace(target, f1_classes=f1)
    record = {"source": source.name, "target": target.name,
              "mapped": {source.classes[s]: target.classes[t] for s, t in enumerate(to_target) if t >= 0},
              "ignored": [source.classes[s] for s, t in enumerate(to_target) if t < 0],
              "unsupervised": [c for i, c in enumerate(target.classes) if i not in covered]}
    return ClassMap(source, target, _lut(to_target), record)


def _by_name(source: LabelSpec, target: LabelSpec, key: str) -> ClassMap:
    try:
        to_target, _ = class_mapping(source, target)
    except ValueError as e:
        raise ConfigError(f"{key}: {e}") from None
    to_target = to_target.tolist()
    to_target[0] = 0  # the first class of every vocabulary is the background, whatever its name
    return _finish(source, target, to_target)


def _check_keys(mapping: dict, source: LabelSpec, where: str) -> None:
    unknown = [k for k in mapping if k not in source.classes]
    if unknown:
        raise ConfigError(f"{where}: {unknown[0]!r} is not a class of the root ({source.name}: "
                          f"{', '.join(source.classes)})")
    missing = [c for c in source.classes if c not in mapping]
    if missing:
        raise ConfigError(f"{where}: no entry for the root's class(es) {', '.join(missing)}; expected every class of "
                          f"the root, each to a model class or '{IGNORE}'")
    bad = [(k, v) for k, v in mapping.items() if not isinstance(v, str) or not v]
    if bad:
        raise ConfigError(f"{where}: {bad[0][0]!r} -> {bad[0][1]!r}; expected a model class name or '{IGNORE}'")


def _derived_target(source: LabelSpec, mapping: dict, where: str) -> LabelSpec:
    """The model's vocabulary a mapping defines: its values, the background's first, with the root's colours, pairs
    and groups carried over."""
    first = mapping[source.classes[0]]
    if first == IGNORE:
        raise ConfigError(f"{where}: the root's background '{source.classes[0]}' -> {IGNORE}; expected a model class "
                          f"(the model's first class is the background)")
    names = list(dict.fromkeys([first] + [mapping[c] for c in source.classes if mapping[c] != IGNORE]))
    where_to = [names.index(mapping[c]) if mapping[c] != IGNORE else -1 for c in source.classes]
    palette = np.zeros((len(names), 3), np.uint8)
    for s in reversed(range(source.num_classes)):  # the first root class mapped to a model class gives its colour
        if where_to[s] >= 0:
            palette[where_to[s]] = source.palette[s]
    pairs = []
    for a, b in source.flip_pairs:
        pa, pb = where_to[a], where_to[b]
        if pa >= 0 and pb >= 0 and pa != pb and not {pa, pb} & {i for p in pairs for i in p}:
            pairs.append((pa, pb))
    groups = {g: tuple(sorted({where_to[i] for i in m if where_to[i] >= 0})) for g, m in source.groups.items()}
    return LabelSpec(f"{source.name}_mapped", tuple(names), tuple(pairs), {g: m for g, m in groups.items() if m},
                     palette)


def _by_mapping(source: LabelSpec, mapping: dict, target: Optional[LabelSpec], where: str) -> ClassMap:
    _check_keys(mapping, source, where)
    if target is None:
        target = _derived_target(source, mapping, where)
    unknown = [v for v in mapping.values() if v != IGNORE and v not in target.classes]
    if unknown:
        raise ConfigError(f"{where}: {unknown[0]!r} is not a class of the model ({target.name}: "
                          f"{', '.join(target.classes)}); expected one of them or '{IGNORE}'")
    to_target = [target.classes.index(mapping[c]) if mapping[c] != IGNORE else -1 for c in source.classes]
    return _finish(source, target, to_target)


def build_class_map(source: LabelSpec, setting: Setting, key: str,
                    target: Optional[LabelSpec] = None) -> Optional[ClassMap]:
    """The map of ``setting`` (see the module docstring) from ``source`` into ``target`` (None: the setting
    defines the model's classes); None when there is nothing to map. Errors are one line naming ``key``."""
    if setting is None:
        if target is None or target.classes == source.classes:
            return None
        return _by_name(source, target, key)
    if isinstance(setting, dict):
        return _by_mapping(source, setting, target, f"{key}")
    if setting in DATASETS:
        named = get_spec(setting)
        if target is not None and named.classes != target.classes:
            raise ConfigError(f"{key} = '{setting}': the model's classes are {target.name}'s "
                              f"({', '.join(target.classes)}); expected a dataset of that class order, or a mapping "
                              f"into it")
        return _by_name(source, target or named, key)
    if os.path.isfile(setting):
        mapping = read_yaml_mapping(setting, "class map")
        return _by_mapping(source, mapping, target, f"{key} file '{setting}'")
    raise ConfigError(f"{key} = '{setting}': neither a registry dataset ({', '.join(DATASETS)}) nor an existing "
                      f"class-map file")


def config_class_map(cfg) -> Optional[ClassMap]:
    """``data.class_map`` of a config, from the classes of ``data.dataset`` (a custom one read from ``data.root``)."""
    source = dataset_spec(cfg.data.dataset, cfg.data.root)
    return build_class_map(source, cfg.data.class_map, "data.class_map")


def fold_histogram(hist: Any, cmap: Optional[ClassMap], num_classes: int) -> np.ndarray:
    """A per-class pixel count of the root in the model's classes (ignored classes dropped)."""
    hist = np.asarray(hist, np.float64)
    if cmap is None:
        return hist
    out = np.zeros(num_classes, np.float64)
    for s, n in enumerate(hist):
        t = int(cmap.lut[s])
        if t != IGNORE_INDEX:
            out[t] += n
    return out


def label_spec(cfg) -> LabelSpec:
    """The classes the model of a config (a :class:`dml_csr.config.Config`) predicts: ``data.dataset`` (a custom one
    read from ``data.root``), through ``data.class_map`` when there is one. The one lookup of it; the trainer, the
    datasets, evaluation and the checkpoint meta take what it returns."""
    if cfg.data.class_map is None and cfg.data.dataset != CUSTOM:
        return get_spec(cfg.data.dataset)
    cmap = config_class_map(cfg)
    return cmap.target if cmap is not None else dataset_spec(cfg.data.dataset, cfg.data.root)
