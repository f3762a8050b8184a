"""RNN-G's first stage: output contract, gate range, gradients, stability bound, export, building from the config."""
from __future__ import annotations

import warnings

import pytest
import torch

from dml_csr.config import ModelConfig
from dml_csr.data.labels import get_spec
from dml_csr.models.rnn_g import RNNG, bounded_transition, build_rnn_g
from dml_csr.models.scan import spatial_rnn_4dir
from dml_csr.models.two_stage import PaperTwoStageRNNG, TwoStageRNNG


def _model(classes=3, **kw):
    torch.manual_seed(0)
    return RNNG(classes, width=8, **kw)


@pytest.mark.parametrize("hw", [(32, 32), (36, 28), (30, 26)])
def test_output_contract(hw):
    m = _model().train()
    x = torch.randn(2, 3, *hw)
    out = m(x)
    assert out["parsing"].shape == (2, 3, *hw)
    h2, w2 = out["coarse"].shape[-2:]
    assert out["gate"].shape == (2, 1, h2, w2) and out["gates"].shape == (2, 2, h2, w2)
    assert abs(h2 - hw[0] / 2) <= 2 and abs(w2 - hw[1] / 2) <= 2
    m.eval()
    assert set(m(x)) == {"parsing"}


def test_gate_within_unit_interval_and_final_uses_rnn():
    m = _model().eval()
    with torch.no_grad():
        m.deconv6.weight.mul_(50)  # saturate: tanh must still bound the gates
        xr, gates = m.features(torch.randn(2, 3, 32, 32))
    assert gates.abs().max() <= 1.0 and gates.abs().max() > 0.99
    # the parsing output is the projected RNN output: zeroing the gates changes it
    with torch.no_grad():
        h = spatial_rnn_4dir(xr, gates, bounded_transition(m.rnn_weight), m.rnn_bias)
        h0 = spatial_rnn_4dir(xr, torch.zeros_like(gates), bounded_transition(m.rnn_weight), m.rnn_bias)
    assert (h - h0).abs().max() > 1e-3


def test_every_parameter_gets_a_gradient_and_no_nan():
    m = _model().train()
    out = m(torch.randn(2, 3, 32, 28))
    (out["parsing"].square().mean() + out["coarse"].square().mean() + out["gate"].square().mean()).backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_bounded_transition_keeps_spectral_norm_within_one():
    w = torch.randn(4, 8, 8) * 3
    wb = bounded_transition(w)
    assert (torch.linalg.matrix_norm(wb, ord=2) <= 1 + 1e-5).all()
    eye = torch.eye(8).repeat(4, 1, 1)
    torch.testing.assert_close(bounded_transition(eye), eye)  # already within the bound: untouched


def test_drop_edge_heads_and_state_dict_either_order():
    m = _model().train()
    sd = m.state_dict()
    m.drop_edge_heads()
    m.drop_edge_heads()  # idempotent
    m.load_state_dict(sd)  # heads' weights ignored after the drop
    assert set(m(torch.randn(1, 3, 16, 16))) == {"parsing"}
    full = _model()
    full.load_state_dict(m.state_dict(), strict=False)


def test_build_from_config():
    m = build_rnn_g(ModelConfig(name="rnn_g", rnn_channels=8), 3)
    assert isinstance(m, RNNG) and m.width == 8 and m.gate_head is not None
    helen = get_spec("helen").classes
    paper = build_rnn_g(ModelConfig(name="rnn_g", rnn_channels=8, two_stage=True), 11, helen)
    assert isinstance(paper, PaperTwoStageRNNG) and paper.stage1.num_classes == 3  # background, face, hair
    ours = build_rnn_g(ModelConfig(name="rnn_g", rnn_channels=8, two_stage=True, two_stage_variant="label_crops"),
                       11, helen)
    assert isinstance(ours, TwoStageRNNG) and ours.stage1.num_classes == 11
    with pytest.raises(ValueError, match="needs the dataset's 11 class names"):
        build_rnn_g(ModelConfig(name="rnn_g", rnn_channels=8, two_stage=True), 11)
    with pytest.raises(ValueError, match="needs the classes left_brow"):
        build_rnn_g(ModelConfig(name="rnn_g", rnn_channels=8, two_stage=True), 3, get_spec("lfw_pl").classes)
    with pytest.raises(ValueError, match="multiple of 4"):
        RNNG(3, width=6)
    # model.edge_heads=false: the training-only heads are not built, as for DML-CSR
    bare = build_rnn_g(ModelConfig(name="rnn_g", rnn_channels=8, edge_heads=False), 3)
    assert bare.coarse_head is None and bare.gate_head is None and set(bare.train()(torch.randn(1, 3, 16, 16))) == {
        "parsing"}
    assert bare.drop_edge_heads() is bare


class _Parsing(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m(x)["parsing"]


def test_trace_is_shape_dynamic():
    m = _model().eval()
    m.drop_edge_heads()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(_Parsing(m), torch.randn(1, 3, 32, 32), check_trace=False)
        for shape in [(2, 3, 32, 32), (1, 3, 40, 28)]:
            x = torch.randn(*shape)
            torch.testing.assert_close(traced(x), m(x)["parsing"], rtol=1e-5, atol=1e-5)


def test_onnx_export_dynamic(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    wrapper = _Parsing(_model()).eval()
    wrapper.m.drop_edge_heads()
    path = str(tmp_path / "rnn_g.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (torch.randn(1, 3, 32, 32),), path, opset_version=17, dynamo=False,
                          input_names=["image"], output_names=["parsing"],
                          dynamic_axes={"image": {0: "b", 2: "h", 3: "w"}, "parsing": {0: "b", 2: "h", 3: "w"}})
    wrapper.eval()  # export restores the wrapper's mode
    sess = ort.InferenceSession(path)
    for shape in [(1, 3, 32, 32), (2, 3, 36, 24)]:
        x = torch.randn(*shape)
        got = sess.run(None, {"image": x.numpy()})[0]
        with torch.no_grad():
            torch.testing.assert_close(torch.from_numpy(got), wrapper(x), rtol=1e-4, atol=1e-4)


def test_bf16_autocast_training_step_has_gradients():
    """train.precision=bf16: autocast hands the scan bf16 maps beside fp32 parameters (a dtype mix its backward
    must accept)."""
    torch.manual_seed(0)
    m = RNNG(11, width=8).train()
    x = torch.randn(2, 3, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(x)
    sum(v.float().square().mean() for v in out.values()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
    assert m.rnn_weight.grad.abs().sum() > 0


# ------------------------------------------------------------------------------ Liu et al.'s baselines (Tables 1-2)
def _conv(cin, cout, k):  # a convolution without bias, then batch norm (weight and bias)
    return cin * cout * k * k + 2 * cout


def _expected_parameters(variant, size, classes=3):
    """The count of each layer, written out (width 32: conv1 16, conv2/3 32 channels; X 8, or 16 for CNN-Deep)."""
    deconv = 4 * 4  # the 4x4 transposed convolutions
    n = _conv(3, 16, 5) + _conv(16, 32, 3) + _conv(32, 32, 3)
    if size == 512:  # two more 3x3x16 units, one more x2 deconvolution of the classes
        n += 2 * _conv(16, 16, 3) + classes * classes * deconv + classes
    x = 16 if variant == "cnn_deep" else 8
    n += 32 * (x + (8 if variant == "rnn_g" else 0)) * deconv + x + (8 if variant == "rnn_g" else 0)  # deconv6
    if variant in ("rnn_g", "rnn"):
        n += 4 * 8 * 8 + 4 * 8  # one transition matrix and bias a direction
    if variant == "cnn_deep":
        n += _conv(16, 32, 3) + _conv(32, 32, 3)
    n += (32 if variant == "cnn_deep" else 8) * classes + classes  # the 1x1 projection
    n += classes * classes * deconv + classes  # deconv7
    if variant != "cnn_s":
        n += x * classes * 9 + classes  # the coarse-label head
    if variant == "rnn_g":
        n += 8 + 1  # the boundary-gate head
    return n


PINNED = {("rnn_g", 128): 24_082, ("rnn", 128): 19_969, ("cnn_deep", 128): 38_025, ("cnn_s", 128): 19_462,
          ("rnn_g", 512): 28_901, ("rnn", 512): 24_788, ("cnn_deep", 512): 42_844, ("cnn_s", 512): 24_281}


@pytest.mark.parametrize("variant,size", sorted(PINNED))
def test_each_variant_builds_trains_a_step_and_has_its_parameter_count(variant, size):
    from dml_csr.losses import RNNGLoss
    from dml_csr.models import count_parameters

    torch.manual_seed(0)
    model = build_rnn_g(ModelConfig(name="rnn_g", rnn_variant=variant, rnn_input=size), 3)
    assert count_parameters(model) == PINNED[variant, size] == _expected_parameters(variant, size)
    x = torch.randn(2, 3, size, size)
    label = torch.randint(0, 3, (2, size, size))
    label[:, :, : size // 2] = 0
    edge = torch.zeros_like(label)
    edge[:, :, 1:] = (label[:, :, 1:] != label[:, :, :-1]).long()  # 1 on a boundary
    batch = {"label": label, "edge": edge}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    out = model(x)
    assert out["parsing"].shape == (2, 3, size, size)
    assert ("gate" in out) == (variant == "rnn_g") and ("coarse" in out) == (variant != "cnn_s")
    terms = RNNGLoss(background_ratio=5.0 if size == 512 else 0.0)(out, batch)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    terms["total"].backward()
    opt.step()
    assert torch.isfinite(terms["total"]) and set(terms) >= {"parsing_ce"}
    moved = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.equal(v, before[k])]
    assert "project.weight" in moved and "conv1.0.weight" in moved
