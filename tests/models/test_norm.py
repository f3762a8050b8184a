"""ABN: batch norm scaled by |gamma| + eps then LeakyReLU(0.01); its synchronised form; the inplace_abn option."""
import os
import sys

import pytest
import torch
import torch.nn.functional as F
from helpers.distributed import free_port, run_worker
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from dml_csr.models.norm import ABN, convert_sync_abn, inplace_abn_available, make_norm


def _reference(x, weight, bias, rm, rv, training, slope=0.01):
    """BatchNorm with weight |gamma| + eps, then LeakyReLU, written with nn.BatchNorm2d."""
    bn = nn.BatchNorm2d(x.shape[1], eps=1e-5, momentum=0.1)
    with torch.no_grad():
        bn.running_mean.copy_(rm)
        bn.running_var.copy_(rv)
    bn.train(training)
    y = F.batch_norm(x, bn.running_mean, bn.running_var, weight.abs() + 1e-5, bias, training, 0.1, 1e-5)
    return F.leaky_relu(y, slope), bn


def _abn_with_negative_gammas(c=6):
    torch.manual_seed(0)
    m = ABN(c)
    with torch.no_grad():
        m.weight.copy_(torch.tensor([0.5, -0.7, 1.2, -0.05, 0.0, 2.0][:c]))
        m.bias.normal_()
        m.running_mean.normal_()
        m.running_var.uniform_(0.5, 1.5)
    return m


@pytest.mark.parametrize("training", [True, False])
def test_abn_equals_bn_leaky_relu_with_abs_gamma(training):
    m = _abn_with_negative_gammas().train(training)
    assert isinstance(m, _BatchNorm) and m.eps == 1e-5 and m.momentum == 0.1
    x = torch.randn(3, 6, 5, 7, dtype=torch.float32, requires_grad=True)
    w = m.weight.detach().clone().requires_grad_(True)
    b = m.bias.detach().clone().requires_grad_(True)
    rm, rv = m.running_mean.clone(), m.running_var.clone()
    y = m(x)
    ref_rm, ref_rv = rm.clone(), rv.clone()
    y_ref = F.leaky_relu(F.batch_norm(x, ref_rm, ref_rv, w.abs() + 1e-5, b, training, 0.1, 1e-5), 0.01)
    torch.testing.assert_close(y, y_ref, rtol=1e-6, atol=1e-6)
    g = torch.randn_like(y)
    gx, gw, gb = torch.autograd.grad(y, (x, m.weight, m.bias), g)
    rgx, rgw, rgb = torch.autograd.grad(y_ref, (x, w, b), g)
    torch.testing.assert_close(gx, rgx, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gw, rgw, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gb, rgb, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(m.running_mean, ref_rm)
    torch.testing.assert_close(m.running_var, ref_rv)
    assert int(m.num_batches_tracked) == (1 if training else 0)
    # |gamma| is what matters: flipping the sign of every gamma leaves the output unchanged...
    with torch.no_grad():
        m2 = _abn_with_negative_gammas().train(training)
        m2.weight.neg_()
        assert torch.allclose(m2(x), _abn_with_negative_gammas().train(training)(x), atol=1e-6)
    # ...whereas plain batch norm would not
    y_plain = F.leaky_relu(F.batch_norm(x, rm.clone(), rv.clone(), w, b, training, 0.1, 1e-5), 0.01)
    assert not torch.allclose(y, y_plain, atol=1e-3)


def test_abn_activations_and_plain_mode():
    x = torch.randn(2, 6, 4, 4)
    base = _abn_with_negative_gammas().eval()
    pre = F.batch_norm(x, base.running_mean, base.running_var, base.weight.abs() + 1e-5, base.bias, False, 0.1, 1e-5)
    for act, fn in (("relu", F.relu), ("identity", lambda t: t)):
        m = _abn_with_negative_gammas().eval()
        m.activation = act
        torch.testing.assert_close(m(x), fn(pre))
    plain = ABN(6, activation="identity", abs_weight=False)
    plain.load_state_dict(base.state_dict())
    bn = nn.BatchNorm2d(6).eval()
    bn.load_state_dict(base.state_dict())
    torch.testing.assert_close(plain.eval()(x), bn(x))
    with pytest.raises(ValueError, match="activation 'gelu'"):
        ABN(4, activation="gelu")


def test_inplace_abn_norm_is_a_clear_error_when_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "inplace_abn", None)  # an import of it now fails, installed or not
    assert not inplace_abn_available()
    with pytest.raises(ImportError, match="model.norm=abn"):
        make_norm("inplace_abn")


@pytest.mark.skipif(not inplace_abn_available(), reason="inplace_abn not installed")
def test_abn_equals_inplace_abn():
    from inplace_abn import InPlaceABN

    ours = _abn_with_negative_gammas().train()
    theirs = InPlaceABN(6, activation="leaky_relu", activation_param=0.01)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(3, 6, 5, 7)
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    y1, y2 = ours(x1), theirs(x2 * 1.0)
    torch.testing.assert_close(y1, y2, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(y1)
    torch.testing.assert_close(torch.autograd.grad(y1, x1, g)[0], torch.autograd.grad(y2, x2, g)[0],
                               rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not inplace_abn_available(), reason="inplace_abn not installed")
def test_inplace_abn_sync_is_refused_off_cuda():
    """inplace_abn's InPlaceABNSync reduces statistics with a CUDA kernel; on the CPU it would fail mid-step (or, with
    the group it captured at import, not synchronise at all): the conversion says what to use instead."""
    model = nn.Sequential(nn.Conv2d(3, 4, 1), make_norm("inplace_abn")(4))
    with pytest.raises(ValueError, match="model.norm=inplace_abn with model.sync_bn=true on cpu.*model.norm=abn"):
        convert_sync_abn(model)


def test_convert_sync_abn_keeps_float64_values_exactly():
    bn = nn.BatchNorm2d(3).double()
    with torch.no_grad():  # values float32 cannot hold: a conversion through float32 would round them
        bn.weight.copy_(torch.tensor([1 + 1e-12, -0.1, 3.3], dtype=torch.float64))
        bn.running_var.copy_(torch.tensor([0.7, 1 / 3, 2.0], dtype=torch.float64))
    new = convert_sync_abn(nn.Sequential(bn))[0]
    assert isinstance(new, ABN) and new.weight.dtype == torch.float64
    assert torch.equal(new.weight, bn.weight) and torch.equal(new.running_var, bn.running_var)


def test_convert_sync_abn_keeps_semantics_and_converts_plain_bn():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), _abn_with_negative_gammas(4), nn.BatchNorm1d(4), nn.BatchNorm2d(4))
    with torch.no_grad():
        model[3].weight.copy_(torch.tensor([-1.0, 0.5, 2.0, -0.3]))
    x = torch.randn(2, 3, 5, 5)
    model.eval()
    before = model[3](model[1](model[0](x)))
    convert_sync_abn(model)
    assert all(isinstance(m, ABN) and m.sync for m in (model[1], model[2], model[3]))
    assert model[1].abs_weight and not model[2].abs_weight and not model[3].abs_weight
    assert model[3].activation == "identity"
    torch.testing.assert_close(model[3](model[1](model[0](x))), before)  # same numbers, no process group


def test_convert_sync_abn_keeps_timms_norm_and_activation_layers_whole():
    """timm's BatchNormAct2d (MobileNets, EfficientNets) normalises, then applies its activation: it becomes a
    synchronised plain batch norm followed by that activation, under the same state_dict names; the numbers do not
    change, in training and in evaluation."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    net = timm.create_model("mobilenetv3_small_100", features_only=True)
    converted = convert_sync_abn(timm.create_model("mobilenetv3_small_100", features_only=True))
    converted.load_state_dict(net.state_dict())
    norms = [m for m in converted.modules() if isinstance(m, _BatchNorm)]
    assert norms and all(isinstance(m, ABN) and m.sync and m.activation == "identity" for m in norms)
    assert set(converted.state_dict()) == set(net.state_dict())
    x = torch.randn(2, 3, 64, 64)
    for mode in ("train", "eval"):
        getattr(net, mode)(), getattr(converted, mode)()
        for a, b in zip(net(x), converted(x)):
            torch.testing.assert_close(b, a)


def test_convert_sync_abn_leaves_an_unknown_batch_norm_subclass_as_it_is(caplog):
    class Scaled(nn.BatchNorm2d):
        def forward(self, x):
            return 2 * super().forward(x)

    model = nn.Sequential(Scaled(3))
    with caplog.at_level("WARNING"):
        convert_sync_abn(model)
    assert type(model[0]) is Scaled and "Scaled is not synchronised" in caplog.text


# ---------------------------------------------------------------- two-process synchronisation (gloo, CPU, tiny)
def _worker(rank, port, x, weight, bias, g, result_path):
    def body():
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
        m = ABN(x.shape[1]).train()
        with torch.no_grad():
            m.weight.copy_(weight)
            m.bias.copy_(bias)
        convert_sync_abn(m)
        part = slice(0, 3) if rank == 0 else slice(3, 4)  # unequal shares on purpose
        xi = x[part].clone().requires_grad_(True)
        y = m(xi)
        (y * g[part]).sum().backward()
        # sum the parameter gradients as DDP would
        gw, gb = m.weight.grad.clone(), m.bias.grad.clone()
        torch.distributed.all_reduce(gw)
        torch.distributed.all_reduce(gb)
        torch.save({"y": y.detach(), "gx": xi.grad, "gw": gw, "gb": gb, "rm": m.running_mean,
                    "rv": m.running_var}, f"{result_path}.{rank}")

    run_worker(body)


def test_sync_abn_two_processes_equals_one_process_on_the_whole_batch(tmp_path):
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed unavailable")
    torch.manual_seed(1)
    x, g = torch.randn(4, 5, 3, 4), torch.randn(4, 5, 3, 4)
    weight, bias = torch.tensor([0.5, -1.5, 0.2, -0.1, 1.0]), torch.randn(5)
    torch.multiprocessing.spawn(_worker, args=(free_port(), x, weight, bias, g, str(tmp_path / "r")), nprocs=2)
    r0, r1 = (torch.load(tmp_path / f"r.{i}", weights_only=True) for i in (0, 1))

    ref = ABN(5).train()
    with torch.no_grad():
        ref.weight.copy_(weight)
        ref.bias.copy_(bias)
    xr = x.clone().requires_grad_(True)
    y = ref(xr)
    (y * g).sum().backward()
    torch.testing.assert_close(torch.cat([r0["y"], r1["y"]]), y.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.cat([r0["gx"], r1["gx"]]), xr.grad, rtol=1e-4, atol=1e-5)
    for r in (r0, r1):
        torch.testing.assert_close(r["gw"], ref.weight.grad, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(r["gb"], ref.bias.grad, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(r["rm"], ref.running_mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(r["rv"], ref.running_var, rtol=1e-5, atol=1e-6)
