"""Datasets declared by their prepared root (``data.dataset: custom``): class names, colours, flip pairs, merged groups
and the classes of the mean F1, read from the root instead of the label registry.

    <root>/label_names.txt   one class name a line, background first (label value = line number - 1)
    <root>/dataset.yaml      optional, every key optional:
        colors:  {name: [r, g, b], ...}  (or a list of [r, g, b] in class order); others get fixed random colours
        pairs:   [[left, right], ...]    classes swapped by a horizontal flip (the subject's left and right)
        groups:  {group: [name, ...]}    merged sets scored as one (confusion inside a set counts as correct)
        mean_f1: [name, ...]             the classes the mean F1 averages (default: every class but the first)

:func:`read_custom_spec` gives the :class:`~dml_csr.data.labels.LabelSpec` (raising on the first problem, one line
naming the file, key and value); :func:`custom_problems` lists every problem at once (``check_dataset.py``).
"""
from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np

from .._typed import ConfigError
from .labels import CUSTOM, LabelSpec, fallback_palette, get_spec

__all__ = ["NAMES_FILE", "DESCRIPTION_FILE", "read_custom_spec", "custom_problems", "read_class_names",
           "describe_colors", "dataset_spec"]

NAMES_FILE = "label_names.txt"
DESCRIPTION_FILE = "dataset.yaml"
_KEYS = ("colors", "pairs", "groups", "mean_f1")
IGNORE_INDEX = 255  # dml_csr.conventions.IGNORE_INDEX, not imported: the prepare scripts and the checker load no torch


def read_class_names(path: str, problems: list[str]) -> Optional[tuple[str, ...]]:
    """The names of a one-name-a-line file (blank lines skipped); its problems are appended to ``problems``."""
    if not os.path.isfile(path):
        problems.append(f"'{path}' is missing; expected one class name a line, background first")
        return None
    with open(path) as f:
        names = tuple(line.strip() for line in f if line.strip())
    if len(names) < 2:
        problems.append(f"'{path}' names {len(names)} class(es); expected background and at least one more")
    if len(names) > IGNORE_INDEX:
        problems.append(f"'{path}' names {len(names)} classes; at most {IGNORE_INDEX} fit in 8-bit labels "
                        f"({IGNORE_INDEX} is ignore)")
    seen: set[str] = set()
    for n in names:
        if n in seen:
            problems.append(f"'{path}' names the class '{n}' twice; expected unique names")
        seen.add(n)
    return names


def _index(name: Any, classes: tuple[str, ...], where: str, problems: list[str]) -> Optional[int]:
    if isinstance(name, str) and name in classes:
        return classes.index(name)
    problems.append(f"{where}: {name!r} is not a class of the root; classes: {', '.join(classes)}")
    return None


def _colour(value: Any, where: str, problems: list[str]) -> Optional[tuple[int, int, int]]:
    if (isinstance(value, (list, tuple)) and len(value) == 3
            and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value)):
        return tuple(value)
    problems.append(f"{where}: {value!r}; expected [r, g, b], three integers in 0..255")
    return None


def _palette(raw: Any, classes: tuple[str, ...], where: str, problems: list[str]) -> np.ndarray:
    pal = fallback_palette(len(classes))
    if isinstance(raw, list):
        if len(raw) != len(classes):
            problems.append(f"{where}: lists {len(raw)} colours for {len(classes)} classes; expected one a class")
        items = list(zip(classes, raw))
    elif isinstance(raw, dict):
        items = list(raw.items())
    else:
        problems.append(f"{where}: expected a mapping of class name to [r, g, b] or a list of [r, g, b]")
        items = []
    for name, value in items:
        i = _index(name, classes, where, problems)
        rgb = _colour(value, f"{where}.{name}", problems)
        if i is not None and rgb is not None:
            pal[i] = rgb
    return pal


def _pairs(raw: Any, classes: tuple[str, ...], where: str, problems: list[str]) -> tuple[tuple[int, int], ...]:
    out: list[tuple[int, int]] = []
    if not isinstance(raw, list):
        problems.append(f"{where}: expected a list of [left, right] class names")
        return ()
    used: set[int] = set()
    for k, pair in enumerate(raw):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
            problems.append(f"{where}[{k}]: {pair!r}; expected [left, right], two class names")
            continue
        a, b = (_index(n, classes, f"{where}[{k}]", problems) for n in pair)
        if a is None or b is None:
            continue
        if a == b or {a, b} & used:
            problems.append(f"{where}[{k}]: {list(pair)!r}; a class swaps with one other class, once")
            continue
        used |= {a, b}
        out.append((a, b))
    return tuple(out)


def _name_lists(raw: Any, classes: tuple[str, ...], prefix: str, problems: list[str]) -> dict[str, tuple[int, ...]]:
    """``{name: [class name, ...]}`` -> ``{name: (index, ...)}``; problems are named ``<prefix><name>``."""
    if not isinstance(raw, dict):
        problems.append(f"{prefix.rstrip('.')}: expected a mapping of group name to a list of class names")
        return {}
    out = {}
    for g, names in raw.items():
        if not isinstance(names, list) or not names:
            problems.append(f"{prefix}{g}: expected a non-empty list of class names")
            continue
        idx = [_index(n, classes, f"{prefix}{g}", problems) for n in names]
        out[str(g)] = tuple(i for i in idx if i is not None)
    return out


def _read_description(path: str) -> dict:
    from ..config import read_yaml_mapping  # the one YAML reader; only for a root with a dataset.yaml

    return read_yaml_mapping(path, "dataset description")


def _parse(root: str) -> tuple[Optional[LabelSpec], list[str]]:
    problems: list[str] = []
    classes = read_class_names(os.path.join(root, NAMES_FILE), problems)
    if classes is None:
        return None, problems
    path = os.path.join(root, DESCRIPTION_FILE)
    try:
        raw = _read_description(path) if os.path.isfile(path) else {}
    except ConfigError as e:
        return None, problems + [str(e)]
    problems += [f"{path}: unknown key '{k}'; valid keys: {', '.join(_KEYS)}" for k in raw if k not in _KEYS]
    palette = _palette(raw.get("colors", {}), classes, f"{path}: colors", problems)
    pairs = _pairs(raw.get("pairs", []), classes, f"{path}: pairs", problems)
    groups = _name_lists(raw.get("groups", {}), classes, f"{path}: groups.", problems)
    f1 = None
    if "mean_f1" in raw:
        f1 = _name_lists({"mean_f1": raw["mean_f1"]}, classes, f"{path}: ", problems).get("mean_f1")
    return LabelSpec(CUSTOM, classes, pairs, groups, palette, f1), problems


def custom_problems(root: str) -> list[str]:
    """Every problem of ``root``'s class declaration, one line each (empty: it declares a usable class layout)."""
    return _parse(root)[1]


def read_custom_spec(root: str) -> LabelSpec:
    """The class layout ``root`` declares; :class:`~dml_csr.config.ConfigError` naming the file, key and value of the
    first problem (``scripts/check_dataset.py ROOT --dataset custom`` lists them all)."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"dataset root '{root}' does not exist (data.dataset: {CUSTOM} reads its classes from "
                                f"{NAMES_FILE} there)")
    spec, problems = _parse(root)
    if problems:
        more = f" (and {len(problems) - 1} more: scripts/check_dataset.py {root} lists them)" if len(problems) > 1 \
            else ""
        raise ConfigError(problems[0] + more)
    return spec


def describe_colors(classes: tuple[str, ...], colours: np.ndarray) -> str:
    """The ``colors:`` section of a ``dataset.yaml`` (one ``name: [r, g, b]`` line a class; names quoted as JSON,
    which YAML reads as written)."""
    import json

    return "colors:\n" + "".join(f"  {json.dumps(n)}: [{r}, {g}, {b}]\n" for n, (r, g, b) in
                                 zip(classes, np.asarray(colours, int).tolist()))


def dataset_spec(name: str, root: Optional[str]) -> LabelSpec:
    """The classes of a root's labels: the registry entry ``name``, or with ``custom`` what ``root`` declares
    (:func:`read_custom_spec`)."""
    if name != CUSTOM:
        return get_spec(name)
    if not root:
        raise ValueError(f"dataset '{CUSTOM}' reads its classes from a prepared root's label_names.txt; give the root")
    return read_custom_spec(root)
