"""The training step's view of a model: which models get the batch's targets as keyword arguments."""
import torch

from dml_csr.data.labels import get_spec
from dml_csr.engine import model_targets
from dml_csr.models.rnn_g import RNNG
from dml_csr.models.two_stage import TwoStageRNNG

HELEN = get_spec("helen").classes


def test_model_targets_only_for_models_that_want_them():
    batch = {"image": torch.zeros(1, 3, 8, 8), "label": torch.zeros(1, 8, 8, dtype=torch.long), "name": ["a"]}
    plain = RNNG(11, width=4)
    two = TwoStageRNNG(RNNG(11, width=4), HELEN, part_width=4)
    assert model_targets(plain, batch) == {}
    assert set(model_targets(two, batch)) == {"label"}
    wrapped = torch.nn.Module()
    wrapped.module = two  # as DistributedDataParallel holds it
    assert set(model_targets(wrapped, {**batch, "keypoints": torch.zeros(1, 5, 2)})) == {"label", "keypoints"}
