"""The training loss in both presets and both phases: the official preset against the authors' own Criterion on
their fixed tensors (tests/fixtures/golden/criterion.pt), the paper preset against eq. 5 and eq. 7 written out here."""
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from helpers import FIXTURES

from dml_csr.config import LossConfig, ModelConfig
from dml_csr.losses import (MultiTaskLoss, RNNGLoss, binary_edge_attention, binary_edge_ce, build_criterion,
                            parsing_lovasz, semantic_edge_attention, semantic_edge_ce)

C = 4


def multitask_loss(outputs, batch, cfg, teacher_outputs=None, cycle=0):
    return MultiTaskLoss.from_config(cfg, C)(outputs, batch, teacher_outputs, cycle)


def _data(seed=0, with_grad=True):
    g = torch.Generator().manual_seed(seed)
    outputs = {"parsing": torch.randn(2, C, 4, 4, generator=g), "edge": torch.randn(2, 2, 4, 4, generator=g),
               "semantic_edge": torch.randn(2, C, 4, 4, generator=g)}
    if with_grad:
        outputs = {k: v.requires_grad_(True) for k, v in outputs.items()}
    label = torch.randint(0, C, (2, 8, 8), generator=g)
    edge = torch.randint(0, 2, (2, 8, 8), generator=g)
    label[1, :2] = 255
    edge[label == 255] = 255
    sem = torch.where(edge == 1, label, torch.zeros_like(label))
    sem[label == 255] = 255
    return outputs, {"label": label, "edge": edge, "semantic_edge": sem}


def _kl_by_hand(student, teacher, target, t=1.0):
    """Mean over the valid pixels of sum_c q (log q - log p), p = softmax(student / t), q = softmax(teacher / t),
    both upsampled bilinearly (corners aligned) to the target size, times t^2."""
    size = target.shape[-2:]
    s = F.interpolate(student.float(), size=size, mode="bilinear", align_corners=True) / t
    q = F.interpolate(teacher.float(), size=size, mode="bilinear", align_corners=True) / t
    q = q.softmax(1)
    per_pixel = (q * (q.log() - s.log_softmax(1))).sum(1)
    valid = target != 255
    return per_pixel[valid].mean() * t * t


# ------------------------------------------------------------------------------------------ the official preset
@pytest.fixture(scope="module")
def golden():
    return torch.load(f"{FIXTURES}/golden/criterion.pt", weights_only=True)


def _golden_case(golden, images, label):
    logits = {k: v[images] for k, v in golden["logits"].items()}
    teacher = {k: v[images] for k, v in golden["teacher_logits"].items()}
    batch = {"label": label, "edge": golden["edge"][images], "semantic_edge": golden["semantic_edge"][images]}
    return logits, teacher, batch


@pytest.mark.parametrize("case", ["phase1", "phase1_ignore", "cycle1", "cycle2"])
def test_official_preset_is_the_authors_criterion(golden, case):
    """Their Criterion(loss_weight=[1,1,1,4,1], lambda_1=1, lambda_2=1, lambda_3=0.1) as their train.py builds it;
    cycles pass the teacher's logits and the cycle number."""
    label = golden["label_ignore"] if case == "phase1_ignore" else golden["label"][[0, 1]]
    logits, teacher, batch = _golden_case(golden, [0, 1], label)
    loss = MultiTaskLoss.from_config(LossConfig(preset="official"), 11)
    cycle = int(case[-1]) if case.startswith("cycle") else 0
    terms = loss(logits, batch, teacher if cycle else None, cycle)
    assert terms["total"].item() == pytest.approx(golden["totals"][case], rel=1e-5)
    expected = ({"parsing_lovasz", "kl_parsing", "kl_edge", "kl_semantic_edge", "edge_attention",
                 "semantic_edge_attention"} if cycle else
                {"parsing_ce", "parsing_lovasz", "edge_ce", "semantic_edge_ce", "edge_attention",
                 "semantic_edge_attention"})
    assert set(terms) - {"total"} == expected  # in the cycles their KL terms replace the supervised CEs


def test_official_preset_gives_an_edge_free_image_zero_attention_where_theirs_is_nan(golden):
    assert math.isnan(golden["totals"]["phase1_with_edge_free_image"])
    loss = MultiTaskLoss.from_config(LossConfig(preset="official"), 11)
    two = loss(*_golden_case(golden, [0, 1], golden["label"][[0, 1]])[::2])
    three = loss(*_golden_case(golden, [0, 1, 2], golden["label"])[::2])
    assert math.isfinite(three["total"].item())
    for term in ("edge_attention", "semantic_edge_attention"):  # image 2 adds 0 and counts in the batch mean
        assert three[term].item() == pytest.approx(two[term].item() * 2 / 3, rel=1e-6)


# --------------------------------------------------------------------------------------------- the paper preset
def test_paper_first_phase_is_eq5():
    outputs, batch = _data()
    terms = multitask_loss(outputs, batch, LossConfig())
    p, lab = outputs["parsing"], batch["label"]
    up = F.interpolate(p, size=(8, 8), mode="bilinear", align_corners=True)
    assert terms["parsing_ce"].item() == pytest.approx(F.cross_entropy(up, lab, ignore_index=255).item(), rel=1e-6)
    assert terms["parsing_lovasz"].item() == pytest.approx(parsing_lovasz(p, lab).item(), rel=1e-6)
    assert terms["edge_ce"].item() == pytest.approx(binary_edge_ce(outputs["edge"], batch["edge"]).item(), rel=1e-6)
    assert terms["semantic_edge_ce"].item() == pytest.approx(
        semantic_edge_ce(outputs["semantic_edge"], batch["semantic_edge"], "balanced").item(), rel=1e-6)
    assert terms["edge_attention"].item() == pytest.approx(
        binary_edge_attention(p, lab, batch["edge"]).item(), rel=1e-6)
    assert terms["semantic_edge_attention"].item() == pytest.approx(
        semantic_edge_attention(p, lab, batch["semantic_edge"]).item(), rel=1e-6)
    t = terms
    expected = (t["parsing_ce"] + t["parsing_lovasz"] + t["edge_ce"] + t["semantic_edge_ce"]
                + 4 * t["edge_attention"] + t["semantic_edge_attention"])
    assert terms["total"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert not any(k.startswith("kl_") for k in terms)
    terms["total"].backward()
    assert all(v.grad is not None and v.grad.abs().sum() > 0 for v in outputs.values())


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_paper_cycles_are_eq7_alone(temperature):
    """L_CSR = a0 (KL_p + Lovasz_p) + a1 KL_b + a2 KL_c, KL to the teacher's softmax: no supervised CE, no
    attention term."""
    outputs, batch = _data(2)
    teacher, _ = _data(3, with_grad=False)
    terms = multitask_loss(outputs, batch, LossConfig(temperature=temperature), teacher_outputs=teacher, cycle=1)
    assert set(terms) == {"kl_parsing", "parsing_lovasz", "kl_edge", "kl_semantic_edge", "total"}
    kl = {head: _kl_by_hand(outputs[head], teacher[head], batch[key], temperature)
          for head, key in (("parsing", "label"), ("edge", "edge"), ("semantic_edge", "semantic_edge"))}
    lovasz = parsing_lovasz(outputs["parsing"], batch["label"])
    expected = 1.0 * (kl["parsing"] + lovasz) + 1.0 * kl["edge"] + 0.1 * kl["semantic_edge"]
    assert terms["total"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert terms["kl_parsing"].item() == pytest.approx(kl["parsing"].item(), rel=1e-5) and kl["parsing"].item() > 0
    # a teacher identical to the student leaves the hard-label Lovasz term only
    same = multitask_loss(outputs, batch, LossConfig(), teacher_outputs={k: v.detach() for k, v in outputs.items()})
    assert all(same[k].item() == 0.0 for k in ("kl_parsing", "kl_edge", "kl_semantic_edge"))
    assert same["total"].item() == pytest.approx(lovasz.item(), rel=1e-6)


def test_multipliers_follow_the_lambdas_and_alphas():
    loss = MultiTaskLoss.from_config(LossConfig(lambdas=(2, 3, 5, 7, 11), alphas=(13, 17, 19)), C)
    assert loss.phase1_weights == {"parsing_ce": 2, "parsing_lovasz": 2, "edge_ce": 3, "semantic_edge_ce": 5,
                                   "edge_attention": 7, "semantic_edge_attention": 11}
    assert loss.cycle_weights == {"parsing_lovasz": 13, "kl_parsing": 13, "kl_edge": 17, "kl_semantic_edge": 19}
    official = MultiTaskLoss.from_config(LossConfig(preset="official"), C)
    assert official.phase1_weights == pytest.approx({"parsing_ce": 2, "parsing_lovasz": 2, "edge_ce": 1,
                                                     "semantic_edge_ce": 0.2, "edge_attention": 4,
                                                     "semantic_edge_attention": 1})
    assert official.cycle_weights == pytest.approx({"parsing_lovasz": 2, "kl_parsing": 2, "kl_edge": 1,
                                                    "kl_semantic_edge": 0.2, "edge_attention": 4,
                                                    "semantic_edge_attention": 1})
    assert "parsing_lovasz" not in MultiTaskLoss.from_config(LossConfig(lovasz=False), C).cycle_weights


# ------------------------------------------------------------------------------------------- heads and errors
def test_models_without_edge_heads():
    outputs, batch = _data(6)
    only_parsing = {"parsing": outputs["parsing"]}
    terms = multitask_loss(only_parsing, {"label": batch["label"]}, LossConfig())
    assert set(terms) == {"parsing_ce", "parsing_lovasz", "total"}
    assert terms["total"].item() == pytest.approx((terms["parsing_ce"] + terms["parsing_lovasz"]).item(), rel=1e-6)
    teacher = {"parsing": torch.randn(2, C, 4, 4)}
    terms = multitask_loss(only_parsing, {"label": batch["label"]}, LossConfig(lovasz=False), teacher)
    assert set(terms) == {"kl_parsing", "total"}
    binary_only = {"parsing": outputs["parsing"], "edge": outputs["edge"]}
    assert set(multitask_loss(binary_only, batch, LossConfig())) == {
        "parsing_ce", "parsing_lovasz", "edge_ce", "edge_attention", "total"}


def test_errors_name_the_fix():
    outputs, batch = _data(7)
    with pytest.raises(KeyError, match="semantic_edge"):
        multitask_loss(outputs, {"label": batch["label"], "edge": batch["edge"]}, LossConfig())
    with pytest.raises(KeyError, match="parsing"):
        multitask_loss({"out": outputs["parsing"]}, batch, LossConfig())
    with pytest.raises(ValueError, match="class_weights"):
        MultiTaskLoss.from_config(LossConfig(), C, class_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="names a weighting of the data"):
        MultiTaskLoss.from_config(LossConfig(), C, class_weights="inverse_frequency")
    with pytest.raises(ValueError, match="temperature"):
        MultiTaskLoss.from_config(LossConfig(temperature=0.0), C)
    with pytest.raises(ValueError, match="preset"):
        MultiTaskLoss(C, preset="authors")


def test_build_criterion_call_convention_and_class_weights():
    """The criterion takes the class weights as numbers (resolved from loss.class_weights by the trainer); it does
    not read that setting itself."""
    outputs, batch = _data(8)
    teacher, _ = _data(9, with_grad=False)
    weights = [1.0, 1.0, 2.0, 5.0]
    names = [f"c{i}" for i in range(C)]
    criterion = build_criterion(SimpleNamespace(model=ModelConfig(), loss=LossConfig()), names, class_weights=weights)
    terms = criterion(outputs, batch, teacher)  # positional teacher, as the engine calls it
    ref = MultiTaskLoss.from_config(LossConfig(), C, weights)(outputs, batch, teacher)
    assert {k: v.item() for k, v in terms.items()} == {k: v.item() for k, v in ref.items()}
    weighted = criterion(outputs, batch)["semantic_edge_attention"].item()
    plain = multitask_loss(outputs, batch, LossConfig())["semantic_edge_attention"].item()
    assert weighted != plain
    named = build_criterion(SimpleNamespace(model=ModelConfig(), loss=LossConfig(class_weights="inverse_frequency")),
                            names, class_weights=weights)  # resolved from the data by the trainer
    assert named(outputs, batch)["semantic_edge_attention"].item() == pytest.approx(weighted, rel=1e-7)
    unresolved = build_criterion(SimpleNamespace(model=ModelConfig(), loss=LossConfig(class_weights=weights)), names)
    assert unresolved(outputs, batch)["semantic_edge_attention"].item() == pytest.approx(plain, rel=1e-7)


def test_criteria_are_picked_by_model_name_and_rnn_g_refuses_loss_settings_it_ignores():
    names = [f"c{i}" for i in range(C)]
    assert isinstance(build_criterion(SimpleNamespace(model=ModelConfig(name="rnn_g"), loss=LossConfig()), names),
                      RNNGLoss)
    with pytest.raises(ValueError, match=r"loss.lambdas .* no effect on model.name=rnn_g"):
        build_criterion(SimpleNamespace(model=ModelConfig(name="rnn_g"), loss=LossConfig(lambdas=(1, 1, 1, 1, 1))),
                        names)
    unknown = ModelConfig()
    unknown.name = "segformer"
    with pytest.raises(KeyError, match="no criterion for model.name 'segformer'"):
        build_criterion(SimpleNamespace(model=unknown, loss=LossConfig()), names)
