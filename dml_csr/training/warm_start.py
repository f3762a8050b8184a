"""``train.init_from``: a run that starts from the weights of an earlier one (fine-tuning), not from its state.

The checkpoint (ours: ``runs/<name>/best.pt`` or an epoch checkpoint) must hold the same model with the same classes in
the same order (``data.class_map`` brings two datasets to one order, e.g. FaceSynthetics pretraining in
CelebAMask-HQ's order); the optimiser, the schedule and the self-regulation start afresh. A resume reads the run's
own checkpoint instead and never this file again.
"""
from __future__ import annotations

import logging
from typing import Sequence

from torch import nn

from ..checkpoint import CheckpointError, load_checkpoint

__all__ = ["load_initial_weights"]

log = logging.getLogger(__name__)


def load_initial_weights(model: nn.Module, path: str, classes: Sequence[str]) -> None:
    """Load the weights of checkpoint ``path`` into ``model`` (whose classes are ``classes``), strictly; errors are
    one line naming the file."""
    ckpt = load_checkpoint(path, map_location="cpu")
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise CheckpointError(f"train.init_from: '{path}' is not a checkpoint of ours (no 'model' weights)")
    theirs = list((ckpt.get("meta") or {}).get("classes", []))
    if theirs != list(classes):
        raise CheckpointError(f"train.init_from: '{path}' predicts the classes {theirs}; this run's model predicts "
                              f"{list(classes)} (set data.class_map so that both use one class order)")
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(f"train.init_from: '{path}' holds another model ({str(e).splitlines()[0][:160]}); "
                              f"expected one built with this config's model settings") from None
    log.info("train.init_from: starting from the weights of %s", path)
