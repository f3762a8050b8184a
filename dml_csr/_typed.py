"""Typed values from plain dicts: build a dataclass from a (YAML) mapping, coercing and checking every field by its
type hint, with errors that name the key, where it was set and what was expected. Generic: it knows no field of
:mod:`dml_csr.config`, which uses it. Every float must be finite (NaN and infinity compare false with any bound), and
a value is shown in a message cut to about 200 characters (:func:`shown`).

:func:`number` and :func:`numbers` check the numbers of command lines and constructor arguments the same way;
:func:`safe_yaml` is the YAML reader of :mod:`dml_csr.config`, which refuses aliases and deep nesting first."""
from __future__ import annotations

import copy
import dataclasses
import math
import os
import re
import types
import typing
from typing import Any, Literal, Optional, Union

import yaml

__all__ = ["ConfigError", "build_dataclass", "source", "shown", "number", "numbers", "safe_yaml", "read_yaml_text",
           "yaml_bases", "MAX_YAML_BYTES"]

MISSING = dataclasses.MISSING
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
SHOWN = 200  # characters of a value's repr in a message


def shown(value: Any, limit: int = SHOWN) -> str:
    """``repr(value)`` cut to about ``limit`` characters (a YAML bomb's value must not become a message of
    megabytes); the repr of a container is built only as far as it is shown."""
    text = _short_repr(value, limit + 1)
    return text if len(text) <= limit else text[:limit] + f"... ({type(value).__name__}, cut)"


def _short_repr(value: Any, limit: int, depth: int = 0) -> str:
    if isinstance(value, (list, tuple, dict)) and depth > 20:
        return "[...]"
    if isinstance(value, (list, tuple, dict)):
        items = value.items() if isinstance(value, dict) else value
        open_, close = {"list": "[]", "tuple": "()", "dict": "{}"}.get(type(value).__name__, "[]")
        parts, size = [], 0
        for item in items:
            part = (f"{_short_repr(item[0], limit, depth + 1)}: {_short_repr(item[1], limit, depth + 1)}"
                    if isinstance(value, dict) else _short_repr(item, limit, depth + 1))
            parts.append(part)
            size += len(part) + 2
            if size > limit:
                break
        return open_ + ", ".join(parts) + close
    text = repr(value)
    return text[: limit + 1]


def _bounds(lo: Optional[float], hi: Optional[float], lo_open: bool, integer: bool) -> str:
    kind = "a whole number" if integer else "a finite number"
    lo, hi = (None if v is None else f"{int(v)}" if integer else f"{v:g}" for v in (lo, hi))
    if lo is not None and hi is not None:
        return f"{kind} {'>' if lo_open else '>='} {lo} and <= {hi}"
    if lo is not None:
        return f"{kind} {'>' if lo_open else '>='} {lo}"
    return kind if hi is None else f"{kind} <= {hi}"


def number(value: Any, name: str, lo: Optional[float] = None, hi: Optional[float] = None, *,
           lo_open: bool = False, integer: bool = False) -> Union[int, float]:
    """``value`` (a number, or its text from a command line) as a finite float (an int with ``integer``) in
    ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``); else ValueError naming ``name``, the value and what was
    expected."""
    expected = _bounds(lo, hi, lo_open, integer)
    try:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, str):
            x = int(value.strip()) if integer else float(value.strip())
        else:
            x = value if integer and isinstance(value, int) else float(value)
            if integer and x != int(x):
                raise ValueError
            x = int(x) if integer else x
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{name} = {shown(value)}; expected {expected}") from None
    if not math.isfinite(x) or (lo is not None and (x <= lo if lo_open else x < lo)) or (hi is not None and x > hi):
        raise ValueError(f"{name} = {shown(value)}; expected {expected}")
    return x


def numbers(values: Any, name: str, lo: Optional[float] = None, hi: Optional[float] = None, *,
            lo_open: bool = False) -> list[float]:
    """A non-empty list of finite floats in range, from a list or comma-separated text ("0.75,1,1.25")."""
    try:
        items = [v for v in values.split(",") if v.strip()] if isinstance(values, str) else list(values)
    except TypeError:  # not a sequence
        items = [values]
    if not items:
        raise ValueError(f"{name} = {shown(values)}; expected one or more numbers, e.g. 0.75,1,1.25")
    try:
        return [float(number(v, name, lo, hi, lo_open=lo_open)) for v in items]
    except ValueError:
        raise ValueError(f"{name} = {shown(values)}; expected comma-separated numbers, each "
                         f"{_bounds(lo, hi, lo_open, False)} (e.g. 0.75,1,1.25)") from None


class ConfigError(ValueError):
    """A configuration problem; the message names the key, the file and what was expected."""


def source(origin: dict, key: str) -> str:
    """Where ``key`` was set: a file, ``--set``, or the defaults. A section named only through its keys (``--set
    nosuch.key=1``) is where those were set; a key nobody set is where its section was."""
    if key in origin:
        return origin[key]
    below = [v for k, v in origin.items() if k.startswith(key + ".")]
    if below:
        return below[0]
    while key and key not in origin:
        key = key.rpartition(".")[0]
    return origin.get(key, "<defaults>") if key else "<defaults>"


def build_dataclass(cls, raw: Any, prefix: str, origin: dict):
    """An instance of dataclass ``cls`` from ``raw``; ``origin`` maps dotted keys to where they were set."""
    name = prefix.rstrip(".") or "<top level>"
    if not isinstance(raw, dict):
        raise ConfigError(f"{source(origin, prefix.rstrip('.'))}: '{name}' must be a mapping, got {shown(raw)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for k in raw:
        if k not in fields:
            key = f"{prefix}{(k if isinstance(k, str) else shown(k))[:SHOWN]}"
            raise ConfigError(
                f"{source(origin, key)}: unknown key '{key}'; valid keys in '{name}': {', '.join(fields)}")
    kwargs = {}
    for fname, f in fields.items():
        key = f"{prefix}{fname}"
        tp = hints[fname]
        if dataclasses.is_dataclass(tp):  # a section: built even when absent, so its required values are checked
            kwargs[fname] = build_dataclass(tp, raw.get(fname, {}), key + ".", origin)
        elif fname in raw:
            kwargs[fname] = _coerce(raw[fname], tp, key, source(origin, key))
        elif f.default is MISSING and f.default_factory is MISSING:
            raise ConfigError(f"missing required value '{key}' (set it in the config file or with --set {key}=...)")
    return cls(**kwargs)


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin is dict:
        return f"a mapping of {_type_name(typing.get_args(tp)[0])} to {_type_name(typing.get_args(tp)[1])}"
    if dataclasses.is_dataclass(tp):
        return f"a mapping with keys {', '.join(f.name for f in dataclasses.fields(tp))}"
    if origin in (list, tuple):
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"a list of {len(args)} {_type_name(args[0])}"
        return f"a list of {_type_name(args[0])}" if args else "a list"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp, key: str, src: str):
    def fail():
        raise ConfigError(f"{src}: '{key}' = {shown(value)} is invalid; expected {_type_name(tp)}")

    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices or isinstance(value, bool) != any(isinstance(c, bool) for c in choices):
            fail()
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key, src)
            except ConfigError:
                pass
        fail()
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            fail()
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                fail()
            return tuple(_coerce(v, a, f"{key}[{i}]", src) for i, (v, a) in enumerate(zip(value, args)))
        inner = args[0] if args else Any
        out = [_coerce(v, inner, f"{key}[{i}]", src) for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict or dataclasses.is_dataclass(tp):
        return _coerce_mapping(value, tp, key, src, fail)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            fail()
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail()
        return value
    if tp is float:
        if isinstance(value, str) and _NUMBER.match(value.strip()):
            x = float(value)  # YAML 1.1 reads 1e-3 (no dot in the mantissa) as a string
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            fail()
        else:
            x = float(value) if abs(value) < 2 ** 1023 else math.inf  # an int beyond a float's range
        if not math.isfinite(x):
            raise ConfigError(f"{src}: '{key}' = {shown(value)} is not a finite number; expected a finite float")
        return x
    if tp is str:
        if not isinstance(value, str):
            fail()
        return value
    raise TypeError(f"config field '{key}' has unsupported type {tp}")  # internal: a new field needs support here


def _coerce_mapping(value: Any, tp, key: str, src: str, fail):
    """A ``dict[K, V]`` (each key and value coerced) or a dataclass inside a list (``data.roots[0]``), from a
    mapping; its errors name the inner key (``data.roots[1].weight``) and where it was set."""
    if not isinstance(value, dict):
        fail()
    if dataclasses.is_dataclass(tp):
        return build_dataclass(tp, value, key + ".", {key: src})
    kt, vt = typing.get_args(tp)
    return {_coerce(k, kt, f"{key} key {k!r}", src): _coerce(v, vt, f"{key}.{k}", src) for k, v in value.items()}


MAX_YAML_BYTES = 1 << 20  # a config is a few KiB: the most a config file or a --set value may hold
MAX_YAML_DEPTH = 64


def safe_yaml(text: str, where: str) -> Any:
    """``yaml.safe_load(text)``, refusing aliases and deep nesting first, from the parser's events (nothing is
    built before): the one-line :class:`ConfigError` names ``where`` and the line."""
    depth = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                raise ConfigError(f"{where}: line {event.start_mark.line + 1}: YAML alias "
                                  f"'*{shown(event.anchor)[1:-1]}' is not accepted (aliases can expand to gigabytes); "
                                  "write the value out")
            if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                depth += 1
                if depth > MAX_YAML_DEPTH:
                    raise ConfigError(f"{where}: line {event.start_mark.line + 1}: nested more than {MAX_YAML_DEPTH} "
                                      "levels deep; expected a config")
            elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                depth -= 1
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: not valid YAML ({shown(str(e).splitlines()[0])[1:-1]})") from None
    except (ValueError, OverflowError) as e:  # e.g. an integer of more digits than Python converts
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{where}: a value cannot be read ({shown(str(e))[1:-1]})") from None


def read_yaml_text(path: str, what: str = "config file") -> str:
    """A YAML file's text: at most :data:`MAX_YAML_BYTES`, UTF-8; else a one-line :class:`ConfigError`."""
    size = os.path.getsize(path)
    if size > MAX_YAML_BYTES:
        raise ConfigError(f"{what} '{path}' is {size} bytes; expected at most {MAX_YAML_BYTES} (1 MiB)")
    try:
        with open(path, "rb") as f:
            return f.read(MAX_YAML_BYTES + 1).decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{what} '{path}' is not UTF-8 text (byte {e.start}); expected a YAML file") from None


def yaml_bases(raw: dict, path: str) -> list[str]:
    """The ``_base_`` files a config names (popped from ``raw``): a name or a list of names."""
    bases = raw.pop("_base_", [])
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(b, str) and b for b in bases):
        raise ConfigError(f"{path}: '_base_' = {shown(bases)}; expected a file name or a list of them")
    return bases


def read_yaml_mapping(path: str, what: str = "file") -> dict:
    """A YAML file holding a mapping (a dataset's ``dataset.yaml``, a class-map file), read as configs are (size
    bounded, no aliases), as a dict; anything else is a :class:`ConfigError` naming the file."""
    try:
        raw = safe_yaml(read_yaml_text(path, what), f"{what} '{path}'")
    except OSError as e:
        raise ConfigError(f"{what} '{path}' cannot be read ({e.strerror or e})") from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{what} '{path}': expected a mapping at the top level, got {type(raw).__name__}")
    return raw


def merge_into(base: dict, new: dict, origin: dict, src: str, prefix: str = "") -> None:
    """Deep-merge ``new`` into ``base`` in place; ``origin`` records which file set each dotted key."""
    for k, v in new.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            merge_into(base[k], v, origin, src, key + ".")
        else:
            base[k] = copy.deepcopy(v)
            origin[key] = src
            if isinstance(v, dict):
                for sub in _walk_keys(v, key + "."):
                    origin[sub] = src


def _walk_keys(d: dict, prefix: str):
    for k, v in d.items():
        yield prefix + str(k)
        if isinstance(v, dict):
            yield from _walk_keys(v, f"{prefix}{k}.")
