"""The loaders: the epoch order (equal interleaved shares, resume part-way, a cap), the evaluation shards, collation,
worker seeding and skipped samples coming back from worker processes."""
import logging
import multiprocessing
import os
import signal

import torch

from dml_csr.config import load_config
from dml_csr.data.dataset import build_dataset
from dml_csr.data.loader import EpochSampler, ShardSampler, build_loader, collate_samples


def cfg_for(root, dataset="helen", **over):
    sets = [f"data.dataset={dataset}", f"data.root={root}", "data.input_size=[32,32]", "data.batch_size=2",
            "data.workers=0", "eval.batch_size=2"] + [f"{k}={v}" for k, v in over.items()]
    return load_config(None, sets)


def loader_for(cfg, split, train):
    ds = build_dataset(cfg, split, train)
    bs = cfg.data.batch_size if train else cfg.eval.batch_size
    return build_loader(ds, batch_size=bs, workers=cfg.data.workers, seed=cfg.seed, train=train)


def _sample_path(root, name, kind):
    return os.path.join(root, "train", kind, name + (".jpg" if kind == "images" else ".png"))


def test_build_loader_batches_and_is_reproducible(prepared):
    cfg = cfg_for(prepared, **{"data.workers": 2})
    batches = []
    for _ in range(2):
        b = next(iter(loader_for(cfg, "train", True)))
        batches.append(b)
    a, b = batches
    assert a["image"].shape == (2, 3, 32, 32) and a["edge"].shape == (2, 32, 32)
    assert isinstance(a["meta"], list) and isinstance(a["meta"][0], dict) and len(a["name"]) == 2
    assert a["name"] == b["name"] and torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    ev = loader_for(cfg, "val", False)
    assert sum(len(x["name"]) for x in ev) == 3  # no drop_last, no shuffle
    assert loader_for(cfg, "train", True).drop_last


def test_synthetic_data_goes_through_the_same_loader(tmp_path):
    from dml_csr.data.synthetic import write_dataset
    root = str(tmp_path / "syn")
    write_dataset(root, {"train": 2, "val": 2}, size=(48, 48))
    cfg = cfg_for(root, dataset="synthetic")
    b = next(iter(loader_for(cfg, "train", True)))
    assert b["label"].shape == (2, 32, 32) and int(b["label"][b["label"] != 255].max()) < 11
    assert len(build_dataset(cfg, "valid", False)) == 2


def test_skip_bad_in_worker_processes_reaches_the_main_dataset(prepared, caplog):
    os.remove(_sample_path(prepared, "train_2", "labels"))
    cfg = cfg_for(prepared, **{"data.workers": 2, "data.skip_bad": "true"})
    loader = loader_for(cfg, "val", False)  # clean split: nothing skipped
    list(loader)
    assert loader.dataset.pop_skipped() == []
    loader = loader_for(cfg, "train", False)
    with caplog.at_level(logging.WARNING):
        names = [n for b in loader for n in b["name"]]
    assert "train_2" not in names and len(names) == 6  # replaced by the next sample
    assert loader.dataset.pop_skipped() == ["train_2"]
    assert "1 unusable sample(s) skipped" in caplog.text


def test_a_bad_sample_in_a_worker_process_is_its_own_one_line_error(prepared):
    """Without skip_bad, an empty image read in a worker stops the pass with the sample's one-line message, not
    torch's "Caught ... in DataLoader worker process 0" and the worker's traceback."""
    from dml_csr.data.dataset import UnreadableFileError

    open(_sample_path(prepared, "train_2", "images"), "wb").close()
    loader = loader_for(cfg_for(prepared, **{"data.workers": 1}), "train", False)
    try:
        list(loader)
    except UnreadableFileError as e:
        assert str(e) == f"image file '{_sample_path(prepared, 'train_2', 'images')}' is empty (0 bytes)"
        # the workers ignore SIGTERM: left waiting, they would hang the interpreter's exit, which joins them
        assert not multiprocessing.active_children()
    else:
        raise AssertionError("the empty image was read")


def test_epoch_sampler_shares_resume_and_cap():
    full = EpochSampler(23, batch_size=3, seed=5, epoch=2).indices
    assert len(full) == 21 and len(set(full)) == 21  # full batches only, no repeats
    assert full == EpochSampler(23, 3, 5, 2).indices != EpochSampler(23, 3, 5, 3).indices  # (seed, epoch) only
    # two ranks: interleaved equal shares; batch i of both together is batch i of one process with twice the batch
    r0, r1 = (EpochSampler(23, 2, 5, 2, rank=r, world=2).indices for r in (0, 1))
    assert len(r0) == len(r1) == 10 and not set(r0) & set(r1)
    one = EpochSampler(23, 4, 5, 2).indices
    assert [sorted(r0[i:i + 2] + r1[i:i + 2]) for i in range(0, 10, 2)] == [sorted(one[i:i + 4]) for i in
                                                                          range(0, 20, 4)]
    assert EpochSampler(23, 3, 5, 2, skip_batches=2).indices == full[6:]  # resume after two batches
    assert EpochSampler(23, 3, 5, 2, limit_batches=2).indices == full[:6]


def test_shard_sampler_covers_every_sample_once():
    shards = [ShardSampler(7, rank=r, world=3).indices for r in range(3)]
    assert sorted(sum(shards, [])) == list(range(7)) and shards[0] == [0, 3, 6]


def test_collate_keeps_channels_last_images_and_lists():
    img = torch.arange(2 * 3 * 4, dtype=torch.uint8).view(2, 4, 3).permute(2, 0, 1)  # (3, H, W) channels-last view
    batch = collate_samples([{"image": img, "name": "a", "meta": {"k": 1}, "skipped": ["x"]},
                             {"image": img, "name": "b", "meta": {"k": 2}}])
    assert batch["image"].shape == (2, 3, 2, 4) and batch["image"].is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(batch["image"][1], img) and batch["name"] == ["a", "b"] and batch["skipped"] == ["x"]


def test_a_stop_signal_as_a_worker_starts_is_ignored_not_fatal(prepared, monkeypatch):
    """Torch's worker ends itself on SIGTERM until our worker_init_fn ignores it; a SIGTERM to the process group in
    that window (torchrun passing one on as an epoch's workers start) used to kill the worker and fail the run."""
    import dml_csr.data.loader as loader_module

    seed_worker = loader_module.seed_worker

    def signalled_as_it_starts(worker_id):
        os.kill(os.getpid(), signal.SIGTERM)  # in the worker, before the real worker_init_fn
        seed_worker(worker_id)

    monkeypatch.setattr(loader_module, "seed_worker", signalled_as_it_starts)
    cfg = cfg_for(prepared, **{"data.workers": 1})
    batch = next(iter(loader_for(cfg, "train", True)))
    assert batch["image"].shape == (2, 3, 32, 32)
    # the main process's mask is as it was: its own stop handler still hears the signals
    assert not {signal.SIGINT, signal.SIGTERM} & signal.pthread_sigmask(signal.SIG_BLOCK, [])
