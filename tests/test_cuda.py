"""The CUDA paths, skipped on a machine without CUDA (``pytest -m cuda`` selects them; scripts/gpu_check.py runs
them): mixed-precision training steps against fp32, channels_last and compile against eager, inplace-abn's kernels
against our ABN, synchronised batch norm under NCCL, pinned and non-blocking copies in the loader path."""
from __future__ import annotations

import copy
import os

import pytest
import torch
from helpers.tiny_checkpoint import TINY

from dml_csr.config import load_config
from dml_csr.data.labels import get_spec
from dml_csr.models import build_model

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
DEV = torch.device("cuda")


def _tiny(edge_heads: bool = True):
    cfg = load_config(None, ["data.dataset=synthetic", "data.root=unused"] + TINY)
    cfg.model.edge_heads = edge_heads
    torch.manual_seed(0)
    return cfg, build_model(cfg.model, 11, get_spec("synthetic").classes).to(DEV)


def _batch(size: int = 64, n: int = 4) -> dict:
    g = torch.Generator().manual_seed(0)
    label = torch.randint(0, 11, (n, size, size), generator=g)
    return {"image": torch.randn(n, 3, size, size, generator=g).to(DEV), "label": label.to(DEV),
            "edge": (torch.rand(n, size, size, generator=g) > 0.9).long().to(DEV),
            "semantic_edge": torch.where(torch.rand(n, size, size, generator=g) > 0.9, label, 0).to(DEV)}


@pytest.mark.parametrize("precision,tol", [("fp16", 2e-2), ("bf16", 5e-2)])
def test_mixed_precision_training_steps_stay_finite_and_near_fp32(precision, tol):
    """Five SGD steps on one batch: every loss finite, each within ``tol`` (relative) of fp32's."""
    from dml_csr.losses import build_criterion

    cfg, ref = _tiny()
    crit = build_criterion(cfg, get_spec("synthetic").classes, None)
    batch = _batch()

    def losses(model, prec):
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        scaler = torch.amp.GradScaler("cuda") if prec == "fp16" else None
        out = []
        for _ in range(5):
            with torch.autocast("cuda", dtype=torch.float16 if prec == "fp16" else torch.bfloat16,
                                enabled=prec != "fp32"):
                outputs = model(batch["image"])
            loss = crit({k: v.float() for k, v in outputs.items()}, batch)["total"]
            opt.zero_grad()
            (scaler.scale(loss) if scaler else loss).backward()
            if scaler:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            out.append(loss.item())
        return torch.tensor(out)
    base = losses(copy.deepcopy(ref), "fp32")
    mixed = losses(copy.deepcopy(ref), precision)
    assert torch.isfinite(mixed).all()
    assert ((mixed - base).abs() / base.abs()).max() < tol, (base, mixed)


def test_channels_last_and_compile_give_the_eager_logits():
    _, model = _tiny(edge_heads=False)
    model.eval()
    x = torch.randn(2, 3, 96, 96, device=DEV)
    with torch.no_grad():
        ref = model(x)["parsing"]
        cl = copy.deepcopy(model).to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
        compiled = torch.compile(copy.deepcopy(model))(x)
    torch.testing.assert_close(cl["parsing"], ref, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(compiled["parsing"], ref, rtol=1e-3, atol=1e-3)


def test_inplace_abn_kernels_on_cuda_equal_our_abn():
    from dml_csr.models.norm import inplace_abn_available, make_norm

    if not inplace_abn_available():
        pytest.skip("inplace-abn is not installed (scripts/install_inplace_abn.sh)")
    ours, theirs = make_norm("abn")(32).to(DEV), make_norm("inplace_abn")(32).to(DEV)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(4, 32, 17, 19, device=DEV)
    for mode in ("train", "eval"):
        ours.train(mode == "train")
        theirs.train(mode == "train")
        a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = ours(a), theirs(b * 1.0)
        torch.testing.assert_close(yb, ya, rtol=1e-4, atol=1e-4)
        (ya * ya).sum().backward()
        (yb * yb).sum().backward()
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-3, atol=1e-3)


def test_sync_bn_under_nccl_with_one_process_equals_plain_batch_norm(tmp_path):
    import torch.distributed as dist

    from dml_csr.models import convert_sync_abn

    if not dist.is_nccl_available():
        pytest.skip("this PyTorch build has no NCCL")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29531")
    dist.init_process_group("nccl", rank=0, world_size=1, init_method=f"file://{tmp_path}/store")
    try:
        _, model = _tiny()
        synced = convert_sync_abn(copy.deepcopy(model))
        x = torch.randn(2, 3, 64, 64, device=DEV)
        a, b = model(x)["parsing"], synced(x)["parsing"]
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
        b.sum().backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in synced.parameters()
                   if p.requires_grad and p.grad is not None)
    finally:
        dist.destroy_process_group()


def test_the_loader_pins_memory_and_copies_without_blocking(tmp_path):
    from dml_csr.data.dataset import FaceParsingDataset
    from dml_csr.data.loader import build_loader
    from dml_csr.data.synthetic import write_dataset
    from dml_csr.data.transforms import TrainTransform
    from dml_csr.training.engine import to_device

    write_dataset(str(tmp_path), {"train": 4}, size=(64, 64))
    spec = get_spec("synthetic")
    ds = FaceParsingDataset(str(tmp_path), "train", spec, TrainTransform((64, 64), spec))
    loader = build_loader(ds, batch_size=2, workers=1, seed=0, train=True)
    assert loader.pin_memory
    batch = next(iter(loader))
    assert batch["image"].is_pinned() and batch["label"].is_pinned()
    on_gpu = to_device(batch, DEV)
    torch.cuda.synchronize()
    assert on_gpu["image"].is_cuda and on_gpu["image"].dtype == torch.float32
    assert torch.equal(on_gpu["label"].cpu(), batch["label"].long())
