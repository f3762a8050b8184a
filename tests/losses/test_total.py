"""The eq. 5 total with its presets, the eq. 7 distillation terms, and models with or without edge heads."""
from types import SimpleNamespace

import pytest
import torch

from dml_csr.config import LossConfig, ModelConfig
from dml_csr.losses import (MultiTaskLoss, RNNGLoss, binary_edge_attention, binary_edge_ce, build_criterion, kl_distill,
                            mix_with_onehot, parsing_ce, parsing_lovasz, semantic_edge_attention, semantic_edge_ce)

C = 4


def multitask_loss(outputs, batch, cfg, teacher_outputs=None, cycle=0):
    return MultiTaskLoss.from_config(cfg, C)(outputs, batch, teacher_outputs, cycle)


def loss_weights(cfg):
    return MultiTaskLoss.from_config(cfg, C).weights


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


def test_preset_weights():
    assert loss_weights(LossConfig()) == {
        "parsing_ce": 1.0, "parsing_lovasz": 1.0, "edge_ce": 1.0, "semantic_edge_ce": 1.0, "edge_attention": 4.0,
        "semantic_edge_attention": 1.0, "kl_parsing": 1.0, "kl_edge": 1.0, "kl_semantic_edge": 0.1}
    official = loss_weights(LossConfig(preset="official"))
    # the authors' effective 2 Lovasz + 2 CE + 1 WCE_bin + 0.2 WCE_cat + 4 Att_bin + 1 Att_cat
    assert [official[k] for k in ("parsing_lovasz", "parsing_ce", "edge_ce", "semantic_edge_ce", "edge_attention",
                                  "semantic_edge_attention")] == pytest.approx([2, 2, 1, 0.2, 4, 1])
    assert loss_weights(LossConfig(lovasz=False))["parsing_lovasz"] == 0.0


def test_paper_terms_and_total():
    outputs, batch = _data()
    terms = multitask_loss(outputs, batch, LossConfig())
    p, lab = outputs["parsing"], batch["label"]
    assert terms["parsing_ce"].item() == pytest.approx(parsing_ce(p, lab).item(), rel=1e-6)
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


def test_official_preset_terms_and_total():
    outputs, batch = _data(1)
    terms = multitask_loss(outputs, batch, LossConfig(preset="official"))
    assert terms["semantic_edge_ce"].item() == pytest.approx(
        semantic_edge_ce(outputs["semantic_edge"], batch["semantic_edge"], "frequency").item(), rel=1e-6)
    assert terms["semantic_edge_attention"].item() == pytest.approx(semantic_edge_attention(
        outputs["parsing"], batch["label"], batch["semantic_edge"], class_index_bug=True).item(), rel=1e-6)
    t = terms
    expected = (2 * t["parsing_ce"] + 2 * t["parsing_lovasz"] + t["edge_ce"] + 0.2 * t["semantic_edge_ce"]
                + 4 * t["edge_attention"] + t["semantic_edge_attention"])
    assert terms["total"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_distillation_terms_paper():
    outputs, batch = _data(2)
    teacher, _ = _data(3, with_grad=False)
    cfg = LossConfig()
    plain = multitask_loss(outputs, batch, cfg)
    terms = multitask_loss(outputs, batch, cfg, teacher_outputs=teacher, cycle=1)
    for head, key, name in (("parsing", "label", "kl_parsing"), ("edge", "edge", "kl_edge"),
                            ("semantic_edge", "semantic_edge", "kl_semantic_edge")):
        ref = kl_distill(outputs[head], teacher[head], valid=batch[key] != 255)
        assert terms[name].item() == pytest.approx(ref.item(), rel=1e-6) and ref.item() > 0
    expected = plain["total"] + terms["kl_parsing"] + terms["kl_edge"] + 0.1 * terms["kl_semantic_edge"]
    assert terms["total"].item() == pytest.approx(expected.item(), rel=1e-6)
    # a teacher identical to the student adds exactly nothing
    same = multitask_loss(outputs, batch, cfg, teacher_outputs={k: v.detach() for k, v in outputs.items()})
    assert all(same[k].item() == 0.0 for k in ("kl_parsing", "kl_edge", "kl_semantic_edge"))
    assert same["total"].item() == plain["total"].item()


def test_distillation_official_mixes_onehot_by_cycle():
    outputs, batch = _data(4)
    teacher, _ = _data(5, with_grad=False)
    terms = multitask_loss(outputs, batch, LossConfig(preset="official"), teacher_outputs=teacher, cycle=3)
    mixed = mix_with_onehot(teacher["parsing"], batch["label"], 1 / 4)
    ref = kl_distill(outputs["parsing"], mixed, valid=batch["label"] != 255)
    assert terms["kl_parsing"].item() == pytest.approx(ref.item(), rel=1e-6)


def test_models_without_edge_heads():
    outputs, batch = _data(6)
    only_parsing = {"parsing": outputs["parsing"]}
    terms = multitask_loss(only_parsing, {"label": batch["label"]}, LossConfig())
    assert set(terms) == {"parsing_ce", "parsing_lovasz", "total"}
    assert terms["total"].item() == pytest.approx((terms["parsing_ce"] + terms["parsing_lovasz"]).item(), rel=1e-6)
    teacher = {"parsing": torch.randn(2, C, 4, 4)}
    terms = multitask_loss(only_parsing, {"label": batch["label"]}, LossConfig(lovasz=False), teacher)
    assert set(terms) == {"parsing_ce", "kl_parsing", "total"}
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
        MultiTaskLoss.from_config(LossConfig(class_weights=[1.0, 2.0]), C)
    with pytest.raises(ValueError, match="temperature"):
        MultiTaskLoss.from_config(LossConfig(temperature=0.0), C)
    with pytest.raises(ValueError, match="preset"):
        MultiTaskLoss(C, preset="authors")


def test_build_criterion_call_convention():
    outputs, batch = _data(8)
    teacher, _ = _data(9, with_grad=False)
    cfg = LossConfig(class_weights=[1.0, 1.0, 2.0, 5.0])
    criterion = build_criterion(SimpleNamespace(model=ModelConfig(), loss=cfg), [f"c{i}" for i in range(C)])
    terms = criterion(outputs, batch, teacher)  # positional teacher, as the engine calls it
    ref = multitask_loss(outputs, batch, cfg, teacher)
    assert {k: v.item() for k, v in terms.items()} == {k: v.item() for k, v in ref.items()}
    assert terms["semantic_edge_attention"].item() != multitask_loss(outputs, batch, LossConfig())[
        "semantic_edge_attention"].item()


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
