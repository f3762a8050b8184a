"""DML-CSR assembly: output contract, shapes at odd sizes, gradients, decoupling, parameter counts, names."""
import copy

import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from dml_csr.config import ModelConfig
from dml_csr.models import DMLCSR, build_model, count_parameters
from dml_csr.models.backbone import DeepStemResNet
from dml_csr.models.norm import ABN, make_norm

TINY = dict(backbone="resnet18", context_channels=64, decoder_channels=64, edge_channels=32)


def _tiny(**kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(**{**TINY, **kw}), 5)


def _stride4(n: int) -> int:  # conv s2 then maxpool s2, both k3 p1
    return ((n - 1) // 2 + 1 - 1) // 2 + 1


@pytest.mark.parametrize("size,output_stride", [((65, 65), 8), ((97, 129), 8), ((97, 129), 16), ((65, 65), 32)])
def test_training_model_outputs_at_stride_4(size, output_stride):
    model = _tiny(output_stride=output_stride).train()
    out = model(torch.randn(2, 3, *size))
    h, w = _stride4(size[0]), _stride4(size[1])
    assert list(out) == ["parsing", "edge", "semantic_edge"]
    assert out["parsing"].shape == (2, 5, h, w)
    assert out["edge"].shape == (2, 2, h, w)
    assert out["semantic_edge"].shape == (2, 5, h, w)
    assert all(torch.isfinite(v).all() for v in out.values())


def test_inference_model_and_drop_edge_heads():
    model = _tiny(edge_heads=False).eval()
    assert model.edges is None
    out = model(torch.randn(1, 3, 65, 65))
    assert list(out) == ["parsing"] and out["parsing"].shape == (1, 5, 17, 17)


@pytest.mark.parametrize("kind", ["dml_csr", "rnn_g"])
def test_models_refuse_raw_uint8_images_with_a_pointer_to_the_conversion(kind):
    model = _tiny() if kind == "dml_csr" else build_model(ModelConfig(name="rnn_g"), 5)
    with pytest.raises(TypeError, match="batch_input"):
        model(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\); got \(3, 64, 64\)"):
        model(torch.zeros(3, 64, 64))
    with pytest.raises(TypeError, match="weights are torch.float32 but the images are torch.float64"):
        model(torch.zeros(1, 3, 64, 64, dtype=torch.float64))


def test_decoupled_output_equals_full_model_parsing():
    full = _tiny().eval()
    x = torch.randn(2, 3, 97, 129)
    with torch.no_grad():
        ref = full(x)["parsing"]
        inference = copy.deepcopy(full).drop_edge_heads()
        assert not any(n.startswith("edges.") for n in inference.state_dict())
        built = build_model(ModelConfig(**TINY, edge_heads=False), 5).eval()
        built.load_state_dict({k: v for k, v in full.state_dict().items() if not k.startswith("edges.")})
        assert torch.equal(inference(x)["parsing"], ref)
        assert torch.equal(built(x)["parsing"], ref)


def _nonzero_residual_scales(model):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith((".gamma", ".gamma1")):
                p.fill_(0.5)  # at init they are 0, which blocks the gradient of the branches they scale


def _assert_every_parameter_learns(model, x, nonzero=True):
    model.train()
    for p in model.parameters():
        p.grad = None
    out = model(x)
    # parsing: 5 classes; edges: 2 classes; losses on random targets
    h, w = out["parsing"].shape[-2:]
    loss = (torch.nn.functional.cross_entropy(out["parsing"], torch.randint(0, out["parsing"].shape[1], (x.shape[0], h, w)))
            + torch.nn.functional.cross_entropy(out["edge"], torch.randint(0, 2, (x.shape[0], h, w)))
            + out["semantic_edge"].square().mean())
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert not nonzero or p.grad.abs().sum() > 0, name


def test_every_parameter_gets_a_gradient_tiny():
    model = _tiny()
    _assert_every_parameter_learns(model, torch.randn(2, 3, 65, 65), nonzero=False)  # at init gammas are 0
    _nonzero_residual_scales(model)
    _assert_every_parameter_learns(model, torch.randn(2, 3, 65, 65))


def test_every_parameter_gets_a_gradient_authors_architecture():
    """The authors' widths and module types throughout; the gradient check runs one block per stage (every block of
    a stage is the same module), the norm census the whole ResNet-101 on the meta device."""
    with torch.device("meta"):
        full = build_model(ModelConfig(), 11)
    norms = [m for m in full.modules() if "Norm" in type(m).__name__ or isinstance(m, ABN)]
    assert len(norms) == 127 and all(isinstance(m, _BatchNorm) for m in norms)
    assert all(m.eps == 1e-5 and m.momentum == 0.1 and m.track_running_stats for m in norms)
    torch.manual_seed(0)
    norm = make_norm("abn")
    model = DMLCSR(DeepStemResNet((1, 1, 1, 1), norm), 11, norm)
    assert count_parameters(model.context) == count_parameters(full.context)
    assert count_parameters(model.decoder) + count_parameters(model.edges) == count_parameters(
        full.decoder) + count_parameters(full.edges)
    _nonzero_residual_scales(model)
    _assert_every_parameter_learns(model, torch.randn(2, 3, 65, 65))


def test_parameter_counts_match_the_authors():
    with torch.device("meta"):
        train_model = build_model(ModelConfig(), 11)
        inference_model = build_model(ModelConfig(edge_heads=False), 11)
    assert count_parameters(train_model) == 68_544_242
    assert count_parameters(inference_model) == 68_058_157
    assert count_parameters(train_model.drop_edge_heads()) == 68_058_157


def test_unknown_model_and_backbone_names():
    cfg = ModelConfig(**TINY)
    cfg.name = "dml_csrr"
    with pytest.raises(KeyError, match="unknown model.name 'dml_csrr'"):
        build_model(cfg, 5)
    cfg = ModelConfig(**TINY)
    cfg.backbone = "vgg16"
    with pytest.raises(ValueError, match="unknown model.backbone 'vgg16'"):
        build_model(cfg, 5)


def test_build_model_takes_a_whole_config_or_its_model_section():
    """What load_config returns goes straight in (a README snippet does it); so does cfg.model, to the same model."""
    from dml_csr.config import load_config

    cfg = load_config(None, ["data.dataset=helen", "data.root=x", "model.backbone=resnet18"])
    torch.manual_seed(0)
    whole = build_model(cfg, 11)
    torch.manual_seed(0)
    section = build_model(cfg.model, 11)
    a, b = whole.state_dict(), section.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
