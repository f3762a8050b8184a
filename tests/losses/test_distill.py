"""KL self-distillation (eq. 7): zero for identical logits, the textbook value otherwise, gradients to the student."""
import pytest
import torch
import torch.nn.functional as F

from dml_csr.losses.distill import kl_distill, mix_with_onehot


def test_identical_logits_give_exactly_zero():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 3, 3)
    labels = torch.randint(0, 5, (2, 6, 6))
    for t in (1.0, 2.0):
        assert kl_distill(logits, logits.clone(), valid=labels != 255, temperature=t).item() == 0.0


def test_kl_value_mask_and_temperature():
    torch.manual_seed(1)
    s, t = torch.randn(1, 3, 2, 2), torch.randn(1, 3, 2, 2)
    valid = torch.tensor([[[True, False], [True, True]]])
    for temp in (1.0, 3.0):
        ps, pt = F.softmax(s / temp, 1), F.softmax(t / temp, 1)
        per_pixel = (pt * (pt.log() - ps.log())).sum(1)  # (1, 2, 2)
        expected = per_pixel[valid].mean() * temp ** 2
        got = kl_distill(s, t, valid=valid, temperature=temp)
        assert got.item() > 0
        assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(ValueError, match="temperature"):
        kl_distill(s, t, temperature=0.0)


def test_gradient_reaches_student_only_and_upsampling():
    torch.manual_seed(2)
    s = torch.randn(1, 2, 2, 2, requires_grad=True)
    t = torch.randn(1, 2, 4, 4, requires_grad=True)
    loss = kl_distill(s, t, valid=torch.ones(1, 4, 4, dtype=torch.bool))
    loss.backward()
    assert s.grad.abs().sum() > 0 and t.grad is None
    with pytest.raises(ValueError, match="disagree"):
        kl_distill(s, torch.randn(1, 3, 2, 2))


def test_no_valid_pixel_is_zero():
    s, t = torch.randn(1, 2, 2, 2), torch.randn(1, 2, 2, 2)
    assert kl_distill(s, t, valid=torch.zeros(1, 2, 2, dtype=torch.bool)).item() == 0.0


def test_mix_with_onehot():
    teacher = torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1).expand(1, 3, 1, 2)
    target = torch.tensor([[[2, 255]]])
    mixed = mix_with_onehot(teacher, target, 0.25)
    assert mixed[0, :, 0, 0].tolist() == pytest.approx([0.75, 1.5, 2.25 + 0.25])
    assert mixed[0, :, 0, 1].tolist() == pytest.approx([0.75, 1.5, 2.25])  # ignored pixel: no one-hot
