"""The paper's order of training a two-stage RNN-G (Liu et al. 2017: "We train the model for the main classes in the
first stage and then focus on the others"), ``model.rnn_train: staged``: the first ``train.stage1_epochs`` epochs
train the first stage with its three losses (coarse labels, boundary gate, its own parsing), the component networks
frozen; the remaining epochs train the component networks on their crops with the first stage frozen
(:meth:`dml_csr.models.two_stage.TwoStageRNNG.set_stage`, :data:`dml_csr.losses.rnn_g.STAGE_WEIGHTS`). The stage is
a function of the epoch alone (:func:`rnn_stage`), so a run resumed on either side of the switch
continues exactly.
"""
from __future__ import annotations

from torch import nn

from ..config import Config
from ..distributed import unwrap_model

__all__ = ["rnn_stage", "enter_rnn_stage"]


def rnn_stage(cfg: Config, epoch: int) -> int:
    """The stage a two-stage RNN-G trains in ``epoch`` (0-based): 0 (both, jointly) unless ``model.rnn_train`` is
    ``staged``; then 1 (the first stage) for the first ``train.stage1_epochs`` epochs and 2 (the component networks)
    after them."""
    if cfg.model.rnn_train != "staged":
        return 0
    return 1 if epoch < cfg.train.stage1_epochs else 2


def enter_rnn_stage(cfg: Config, epoch: int, model: nn.Module, criterion, distributed: bool) -> int:
    """Set ``model`` (the bare network or its wrapper) and ``criterion`` to the stage of ``epoch``; returns it (0:
    joint training, nothing to do)."""
    stage = rnn_stage(cfg, epoch)
    if stage:
        if distributed:
            raise ValueError("model.rnn_train = staged freezes networks between epochs, which DistributedDataParallel "
                             "does not allow; train the staged RNN-G in one process (it is small)")
        unwrap_model(model).set_stage(stage)
        criterion.set_stage(stage)
    return stage
