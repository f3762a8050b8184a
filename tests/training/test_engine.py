"""The training step's view of a model (which models get the batch's targets as keyword arguments), one epoch of steps
against a loop written out, the gradient scaler, and the evaluation pass's paste."""
import torch

from dml_csr.data.labels import get_spec
from dml_csr.training.engine import model_targets
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


class _FixedLogits(torch.nn.Module):
    """Returns the same (C, h, w) logits for every input."""

    def __init__(self, logits):
        super().__init__()
        self.register_buffer("logits", logits)

    def forward(self, x):
        return {"parsing": self.logits.expand(x.shape[0], -1, -1, -1)}


class _OneSample:
    names = ["a"]

    def __init__(self, label):
        self.label = label

    def load_label(self, i):
        return self.label


def _paste_case(paste):
    """A 13x9 (WxH) image through the evaluation affine to a 4x4 input; returns (probs, meta, pasted labels, ground
    truth, confusion)."""
    import numpy as np

    from dml_csr.data.transforms import EvalTransform
    from dml_csr.evaluation.protocol import evaluate

    logits = 3 * torch.randn(3, 4, 4, generator=torch.Generator().manual_seed(3))
    sample = EvalTransform((4, 4))(np.zeros((9, 13, 3), np.uint8))
    batch = {"image": sample["image"][None], "meta": [sample["meta"]], "name": ["a"]}
    gt = np.zeros((9, 13), np.uint8)
    gt[:, 6:] = 2
    gt[4:, :3] = 1
    seen = {}
    cm = evaluate(_FixedLogits(logits), [batch], _OneSample(gt), 3, device=torch.device("cpu"), paste=paste,
                  on_prediction=lambda name, lab: seen.setdefault(name, lab))
    return torch.softmax(logits, 0), sample["meta"], seen["a"], gt, cm


def test_smooth_paste_is_the_argmax_of_the_bilinearly_warped_probabilities():
    import cv2
    import numpy as np

    from dml_csr.data.transforms import sample_affine

    probs, meta, smooth, gt, cm = _paste_case("smooth")
    back = cv2.invertAffineTransform(sample_affine(meta))  # original pixel -> network input pixel
    warped = cv2.warpAffine(np.ascontiguousarray(probs.permute(1, 2, 0).numpy()), back, (13, 9),
                            flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    expected = warped.argmax(-1)
    assert smooth.shape == (9, 13) and smooth.dtype == np.uint8
    np.testing.assert_array_equal(smooth, expected)
    hand = np.zeros((3, 3), np.int64)
    np.add.at(hand, (gt.ravel(), expected.ravel()), 1)
    np.testing.assert_array_equal(cm.mat.numpy(), hand)
    nearest = _paste_case("nearest")[2]
    np.testing.assert_array_equal(nearest, cv2.warpAffine(probs.argmax(0).to(torch.uint8).numpy(), back, (13, 9),
                                                          flags=cv2.INTER_NEAREST, borderValue=0))
    assert (nearest != smooth).any()  # the case tells the two apart


def test_evaluate_refuses_an_unknown_paste():
    import pytest

    with pytest.raises(ValueError, match="paste must be one of nearest, smooth, logits, got 'cubic'"):
        _paste_case("cubic")


class _Linear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 2, 1)

    def forward(self, x):
        return {"parsing": self.conv(x)}


def _squared_error(outputs, batch, teacher_outputs=None, cycle=0):
    err = ((outputs["parsing"] - batch["y"]) ** 2).mean()
    return {"err": err, "total": err * (1 + cycle)}


def test_an_epoch_steps_as_a_hand_written_loop_with_accumulation_and_its_watchers():
    """Two batches a step, the rate of each step from lr_at, the cycle handed to the criterion: the same weights as
    the loop written out here, bit for bit; the step callback sees each step, a stop request ends the epoch."""
    import copy

    from dml_csr.training.engine import EpochPlan, StepContext, grad_scaler, train_one_epoch

    g = torch.Generator().manual_seed(0)
    batches = [{"image": torch.randn(2, 3, 4, 4, generator=g), "y": torch.randn(2, 2, 4, 4, generator=g)}
               for _ in range(4)]
    torch.manual_seed(0)
    model = _Linear()
    ref = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=1.0, momentum=0.9)
    ctx = StepContext(criterion=_squared_error, optimizer=opt, scaler=grad_scaler(torch.device("cpu"), "fp32"),
                      device=torch.device("cpu"), lr_at=lambda s: 0.01 * (s + 1), grad_accum=2)
    seen = []
    out = train_one_epoch(model, batches, ctx, EpochPlan(start_step=5, cycle=2,
                                                         on_step=lambda s, terms: seen.append((s, terms["total"]))))
    ref_opt = torch.optim.SGD(ref.parameters(), lr=1.0, momentum=0.9)
    totals = []
    for step, pair in ((5, batches[:2]), (6, batches[2:])):
        ref_opt.zero_grad()
        for b in pair:
            loss = 3 * ((ref(b["image"])["parsing"] - b["y"]) ** 2).mean()  # cycle 2: (1 + 2) times the error
            (loss / 2).backward()
        for group in ref_opt.param_groups:
            group["lr"] = 0.01 * (step + 1)
        ref_opt.step()
        totals.append(float(loss.detach()))
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), ref.parameters()))
    assert out["step"] == 7 and out["batches"] == 4 and not out["stopped"] and opt.param_groups[0]["lr"] == 0.01 * 7
    assert seen == [(6, totals[0]), (7, totals[1])]  # the last batch of each step is the one reported
    assert out["loss"]["total"] == (totals[0] + totals[1]) / 2
    stopped = train_one_epoch(_Linear(), batches, StepContext(
        _squared_error, torch.optim.SGD(_Linear().parameters(), lr=0.1), grad_scaler(torch.device("cpu"), "bf16"),
        torch.device("cpu"), lambda s: 0.1), EpochPlan(should_stop=lambda: True))
    assert stopped["stopped"] and stopped["step"] == 1 and stopped["batches"] == 1


def test_the_gradient_scaler_scales_under_fp16_only():
    from dml_csr.training.engine import grad_scaler

    cpu = torch.device("cpu")
    assert grad_scaler(cpu, "fp16").is_enabled()
    loss = torch.tensor(2.0)
    for precision in ("fp32", "bf16", "fp64"):
        scaler = grad_scaler(cpu, precision)
        assert not scaler.is_enabled() and scaler.scale(loss) is loss
