"""Exact batch-norm re-estimation: every norm layer's statistics over the whole set, in one process and across two."""
import datetime
import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from helpers.distributed import free_port, run_worker
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from dml_csr.training.norm_stats import norm_layers, reestimate_bn


class InplaceLeakyBN(_BatchNorm):
    """A stand-in for the project's ABN: a _BatchNorm subclass, |gamma| scale, leaky ReLU written IN PLACE into its
    input (as inplace_abn does), so a hook reading the input after forward would see the wrong values."""

    def _check_input_dim(self, x):
        pass

    def forward(self, x):
        y = F.batch_norm(x, self.running_mean, self.running_var, self.weight.abs() + self.eps, self.bias,
                         self.training, self.momentum, self.eps)
        x.copy_(F.leaky_relu(y, 0.01))
        return x


class Toy(nn.Module):
    def __init__(self, sync=True):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 1)
        self.bn_a = nn.BatchNorm2d(3)
        self.abn = InplaceLeakyBN(3)  # directly after another norm layer
        self.conv2 = nn.Conv2d(3, 4, 1)
        self.sbn = nn.SyncBatchNorm(4) if sync else nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 5)
        self.bn1d = nn.BatchNorm1d(5, momentum=None)  # cumulative-average flavour
        with torch.no_grad():
            for m in (self.bn_a, self.abn, self.sbn, self.bn1d):
                m.weight.uniform_(-2, 2)
                m.bias.normal_()

    def forward(self, x):
        y = self.abn(self.bn_a(self.conv(x)))
        y = self.sbn(self.conv2(y)).relu()
        return {"parsing": self.bn1d(self.fc(y.mean((2, 3))))}


def _bn_train(x, m, weight=None):
    return F.batch_norm(x, None, None, m.weight if weight is None else weight, m.bias, True, 0.0, m.eps)


def _manual_inputs(model, x):
    """Inputs of each norm layer in train mode (batch statistics), computed without the module code."""
    ins = {}
    y = model.conv(x)
    ins["bn_a"] = y
    y = _bn_train(y, model.bn_a)
    ins["abn"] = y
    y = F.leaky_relu(_bn_train(y, model.abn, model.abn.weight.abs() + model.abn.eps), 0.01)
    y = model.conv2(y)
    ins["sbn"] = y
    y = _bn_train(y, model.sbn).relu()
    ins["bn1d"] = model.fc(y.mean((2, 3)))
    return ins


def _expected_stats(model, batches):
    per_layer = {}
    with torch.no_grad():
        for b in batches:
            for k, v in _manual_inputs(model, b["image"]).items():
                per_layer.setdefault(k, []).append(v.transpose(0, 1).reshape(v.shape[1], -1).double())
    return {k: (torch.cat(v, 1).mean(1), torch.cat(v, 1).var(1, unbiased=True)) for k, v in per_layer.items()}


def _batches(seed=0, sizes=(4, 4, 3)):
    g = torch.Generator().manual_seed(seed)
    return [{"image": torch.randn(n, 2, 3, 3, generator=g) * (1 + i) + i} for i, n in enumerate(sizes)]


def test_norm_layers_found():
    names = [n for n, _ in norm_layers(Toy())]
    assert names == ["bn_a", "abn", "sbn", "bn1d"]


def test_reestimate_bn_equals_exact_statistics():
    torch.manual_seed(0)
    model = Toy().eval()
    batches = _batches()
    expected = _expected_stats(model, batches)
    tracked = {n: m.num_batches_tracked.item() for n, m in norm_layers(model)}
    assert reestimate_bn(model, batches, device="cpu") == 3
    for name, m in norm_layers(model):
        mean, var = expected[name]
        assert torch.allclose(m.running_mean.double(), mean, atol=1e-5), name
        assert torch.allclose(m.running_var.double(), var, atol=1e-5, rtol=1e-5), name
        assert m.num_batches_tracked.item() == tracked[name]
    # mode and momentum restored
    assert not any(m.training for m in model.modules())
    assert model.bn_a.momentum == 0.1 and model.bn1d.momentum is None
    # exact pooled statistics, not the average of per-batch statistics (unequal batches make them differ)
    bn1d_in = [_manual_inputs(model, b["image"])["bn1d"].double() for b in batches]
    mean_of_vars = torch.stack([v.var(0) for v in bn1d_in]).mean(0)
    assert not torch.allclose(model.bn1d.running_var.double(), mean_of_vars, atol=1e-3)


def test_reestimate_bn_max_batches_custom_forward_and_train_mode_kept():
    torch.manual_seed(1)
    model = Toy().train()
    batches = _batches(1)
    expected = _expected_stats(model, batches[:1])
    calls = []

    def forward(m, batch, device):
        calls.append(device)
        return m(batch["image"].to(device))

    assert reestimate_bn(model, batches, forward, torch.device("cpu"), max_batches=1) == 1
    assert calls == [torch.device("cpu")]
    assert torch.allclose(model.sbn.running_mean.double(), expected["sbn"][0], atol=1e-5)
    assert all(m.training for m in model.modules())


def _ddp_worker(rank, world, port, state, batches, out_dir):
    def body():
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60))
        model = Toy(sync=False)
        model.load_state_dict(state)
        reestimate_bn(model, batches[rank::world], device="cpu")
        torch.save({n: (m.running_mean, m.running_var) for n, m in norm_layers(model)},
                   os.path.join(out_dir, f"rank{rank}.pt"))

    run_worker(body)


def test_reestimate_bn_reduces_across_processes(tmp_path):
    torch.manual_seed(2)
    model = Toy(sync=False)
    batches = _batches(2, sizes=(3, 2, 4))
    expected = _expected_stats(model, batches)
    mp.spawn(_ddp_worker, args=(2, free_port(), model.state_dict(), batches, str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        for name, (mean, var) in expected.items():
            assert torch.allclose(got[name][0].double(), mean, atol=1e-5), (rank, name)
            assert torch.allclose(got[name][1].double(), var, atol=1e-5, rtol=1e-5), (rank, name)


# ------------------------------------------------------------------------- every training image, the remainder too
def test_reestimation_over_a_split_not_divisible_by_the_batch_sees_every_image(tmp_path):
    """13 faces in batches of 4 (a training epoch uses 12): the first norm layer's statistics are those of its input
    over all 13 images, computed here image by image; the loader holds each image once, in batches of 4, 3, 3, 3."""
    from dml_csr.data.dataset import FaceParsingDataset
    from dml_csr.data.labels import get_spec
    from dml_csr.data.loader import build_norm_loader
    from dml_csr.data.synthetic import write_dataset
    from dml_csr.data.transforms import EvalTransform

    write_dataset(str(tmp_path), {"train": 13}, seed=3, size=(32, 32))
    ds = FaceParsingDataset(str(tmp_path), "train", get_spec("synthetic"),
                            EvalTransform((32, 32), "BGR", (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)))
    loader = build_norm_loader(ds, batch_size=4, workers=0, seed=5, epoch=-2)
    batches = list(loader)
    assert sorted(n for b in batches for n in b["name"]) == sorted(ds.names)
    assert [len(b["name"]) for b in batches] == [4, 3, 3, 3]

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1),
                          nn.BatchNorm2d(2))
    reestimate_bn(model, loader)
    with torch.no_grad():
        x = (torch.stack([ds[i]["image"] for i in range(len(ds))]).float() / 255 - 0.5) / 0.25  # BGR kept
        y = model[0](x).double().permute(1, 0, 2, 3).reshape(4, -1)  # every pixel of every image, per channel
    n = y.shape[1]
    mean = y.sum(1) / n
    var = ((y - mean[:, None]) ** 2).sum(1) / (n - 1)
    assert torch.allclose(model[1].running_mean.double(), mean, atol=1e-5, rtol=0)
    assert torch.allclose(model[1].running_var.double(), var, rtol=1e-5)
