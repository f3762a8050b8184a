"""Typed values from plain dicts: build a dataclass from a (YAML) mapping, coercing and checking every field by its
type hint, with errors that name the key, where it was set and what was expected. Generic: it knows no field of
:mod:`dml_csr.config`, which uses it."""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Any, Literal

__all__ = ["ConfigError", "build_dataclass", "source"]

MISSING = dataclasses.MISSING
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


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
        raise ConfigError(f"{source(origin, prefix.rstrip('.'))}: '{name}' must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for k in raw:
        if k not in fields:
            key = f"{prefix}{k}"
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
        raise ConfigError(f"{src}: '{key}' = {value!r} is invalid; expected {_type_name(tp)}")

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
            return float(value)  # YAML 1.1 reads 1e-3 (no dot in the mantissa) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail()
        return float(value)
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
