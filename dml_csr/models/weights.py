"""Backbone initialisation files: reading them without pickle, checking them key by key, and checking that a run feeds
the weights the input convention they were trained with.

- :func:`read_state_dict`: a ``.pth``/``.pt`` file through ``torch.load(..., weights_only=True)`` or a
  ``.safetensors`` file; a ``{"state_dict": ...}`` wrapper and ``module.`` prefixes are removed; a tensor holding NaN
  or infinity is refused, named.
- :func:`check_state_dict`: the file's keys and shapes against the ones expected; the first problem is one line naming
  the keys (``KeyError``) or the key and both shapes (``ValueError``).
- :func:`check_convention`: ``model.channel_order``, ``model.mean`` and ``model.std`` against the weights' own.
"""
from __future__ import annotations

import logging
import math
import os
from typing import Callable, Iterable, Mapping, Optional, Sequence

import torch

__all__ = ["read_state_dict", "check_state_dict", "check_convention", "Convention", "building_on_meta",
           "first_non_finite", "first_line"]

log = logging.getLogger(__name__)

# (channel order, mean, std): what a model's input is, as model.channel_order / model.mean / model.std state it
Convention = tuple[str, Sequence[float], Sequence[float]]


def first_line(e: BaseException) -> str:
    """An error's first non-empty line (its class name when it has none), at most 200 characters: the reason a
    one-line message quotes from a library's multi-line error."""
    return next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)[:200]


def first_non_finite(state: Mapping) -> Optional[tuple[str, int, int]]:
    """``(name, values not finite, values)`` of the first floating tensor of ``state`` holding NaN or infinity, or
    None."""
    for name, t in state.items():
        if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return name, int((~torch.isfinite(t)).sum()), t.numel()
    return None


def read_state_dict(path: str, keep: Optional[Callable[[str], bool]] = None) -> dict[str, torch.Tensor]:
    """The tensors of a weights file: ``.safetensors`` by safetensors, others by ``torch.load(weights_only=True)``;
    with ``keep``, only the keys it accepts (those a model loads: what it drops is not checked for finite values)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model.pretrained: weights file '{path}' does not exist")
    if path.endswith(".safetensors"):
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise ImportError(f"model.pretrained: reading '{path}' needs safetensors (pip install safetensors, or "
                              "pip install 'dml_csr[timm]')") from None
        try:
            sd = load_file(path, device="cpu")
        except Exception as e:  # truncated or not a safetensors file
            raise ValueError(f"model.pretrained: '{path}' is not a readable safetensors file: {first_line(e)}"
                             ) from None
        # a whole parsing model's file (a shared model folder's model.safetensors): its backbone
        sd = {k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")} or sd
    else:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # corrupt, truncated, not a torch file, or pickled objects
            raise ValueError(f"model.pretrained: '{path}' cannot be loaded with weights_only=True: "
                             f"{first_line(e)}") from None
    if not isinstance(sd, dict):
        raise ValueError(f"model.pretrained: '{path}' holds a {type(sd).__name__}; expected a state_dict")
    if "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    sd = {(k[7:] if k.startswith("module.") else k): v for k, v in sd.items()}
    sd = {k: v for k, v in sd.items() if keep(k)} if keep is not None else sd
    bad = first_non_finite(sd)  # NaN or infinity in an initialisation would train nothing, silently
    if bad is not None:
        raise ValueError(f"model.pretrained: '{path}': tensor '{bad[0]}' holds NaN or infinity; expected finite "
                         "weights")
    return sd


def check_state_dict(expected: Mapping[str, Sequence[int]], sd: Mapping[str, torch.Tensor], path: str,
                     optional: Iterable[str] = (), ignore_shape: Iterable[str] = ()) -> None:
    """Raise unless ``sd`` holds exactly the ``expected`` keys with their shapes.

    Args:
        expected: key -> shape the backbone needs.
        sd: the file's tensors.
        path: the file, for messages.
        optional: key suffixes that may be absent (e.g. ``num_batches_tracked``, a classifier the backbone drops).
        ignore_shape: key suffixes whose shape may differ (e.g. a classifier for another number of classes).
    """
    optional, ignore_shape = tuple(optional), tuple(ignore_shape)
    missing = [k for k in expected if k not in sd and not k.endswith(optional)]
    unknown = [k for k in sd if k not in expected]
    if missing or unknown:
        raise KeyError(f"{path}: backbone weights do not match; missing: {missing[:10]} ({len(missing)} in all), "
                       f"unexpected: {unknown[:10]} ({len(unknown)} in all)")
    for k, v in sd.items():
        if tuple(v.shape) != tuple(expected[k]) and not k.endswith(ignore_shape):
            raise ValueError(f"{path}: '{k}' has shape {tuple(v.shape)}, the backbone expects {tuple(expected[k])}")


def check_convention(convention: Optional[Convention], weights: Convention, what: str, refuse: bool = True) -> None:
    """``convention`` (the config's; None: not checked) must be the one ``weights`` were trained with.

    A difference is a ``ValueError`` (``refuse``) or a warning, one line naming the keys and the values to set.
    """
    if convention is None:
        return
    order, mean, std = convention
    w_order, w_mean, w_std = weights
    differ = [k for k, ours, theirs in (("model.mean", mean, w_mean), ("model.std", std, w_std))
              if len(ours) != len(theirs) or not all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(ours, theirs))]
    if order != w_order:
        differ.insert(0, "model.channel_order")
    if not differ:
        return
    msg = (f"{', '.join(differ)} of this config ({order}, mean {list(mean)}, std {list(std)}) differ from the input "
           f"convention of {what} ({w_order}, mean {list(w_mean)}, std {list(w_std)}); set model.channel_order: "
           f"{w_order}, model.mean: {list(w_mean)}, model.std: {list(w_std)}")
    if refuse:
        raise ValueError(msg)
    log.warning(msg)


def building_on_meta() -> bool:
    """Whether modules are being created on the meta device (``with torch.device("meta")``): shapes only, no values,
    so there is nothing to load weights into."""
    return torch.empty(0).is_meta
