"""Several datasets in one run (data.roots): two roots weighted 3:1 give 3:1 of an epoch's samples, the order is a
function of (seed, epoch), ranks get disjoint shares, a stop in the middle of an epoch resumes bit for bit, and a root
of another class order joins through its class map."""
import os
import signal

import numpy as np
import pytest
import torch

from dml_csr.checkpoint import RunPaths, load_checkpoint
from dml_csr.config import ConfigError
from dml_csr.data.loader import EpochSampler
from dml_csr.data.mixture import MixedDataset, build_training_set, largest_remainder
from dml_csr.data.synthetic import write_dataset
from dml_csr.training import trainer as trainer_mod
from dml_csr.training.trainer import train


@pytest.fixture(scope="module")
def second_root(tmp_path_factory):
    """4 train faces in CelebAMask-HQ's order (mapped into the model's Helen order by name) and a test split."""
    root = str(tmp_path_factory.mktemp("second"))
    write_dataset(root, {"train": 4, "test": 2}, seed=9, size=(64, 64), order="synthetic19")
    return root


def _roots(first, second, weights=(3, 1)):
    return (f"data.roots=[{{root: {first}, weight: {weights[0]}}}, "
            f"{{root: {second}, dataset: synthetic19, class_map: synthetic, weight: {weights[1]}}}]")


def test_the_order_is_a_function_of_seed_and_epoch_and_ranks_share_it(micro_cfg, tiny_synthetic, second_root):
    ds = build_training_set(micro_cfg(_roots(tiny_synthetic, second_root, (1, 1))))
    assert ds.draws() == [8, 8]  # the second root's 4 samples twice, each repeat with an index of its own
    first, again, other = ds.epoch_order(0, 3), ds.epoch_order(0, 3), ds.epoch_order(0, 4)
    assert first == again and first != other and len(set(first)) == 16
    assert sorted(ds.locate(i)[1] for i in first if ds.locate(i)[0] == 1) == [0, 0, 1, 1, 2, 2, 3, 3]
    shares = [EpochSampler(len(ds), 2, 0, 3, rank, 2, order=first).indices for rank in (0, 1)]
    assert not set(shares[0]) & set(shares[1]) and sorted(shares[0] + shares[1]) == sorted(first)
    assert largest_remainder(10, [1, 1, 1]) == [4, 3, 3] and largest_remainder(7, [3, 1]) == [5, 2]


MID = ("train.epochs=2", "train.val_every=1", "train.keep_last=100")


def test_weights_3_to_1_draw_3_to_1_and_a_stop_mid_epoch_resumes_bit_identically(micro_cfg, tiny_synthetic,
                                                                                  second_root, monkeypatch):
    """A straight run of two epochs (16 draws each: 12 of the first root, 4 of the second), and one stopped by
    SIGTERM after the second of its second epoch's four steps, then resumed: the same weights and optimiser."""
    roots = _roots(tiny_synthetic, second_root)
    straight = micro_cfg(roots, *MID, "name=mix_straight")
    assert build_training_set(straight).draws() == [12, 4]
    seen = []
    real_get = MixedDataset.__getitem__

    def spy(self, i):
        seen.append(self.locate(i[0]))
        return real_get(self, i)

    monkeypatch.setattr(MixedDataset, "__getitem__", spy)
    train(straight, progress=False)
    epoch = seen[:16]  # the first epoch's 4 batches of 4 (validation reads one root's dataset: no draws)
    assert [r for r, _ in epoch].count(0) == 12 and [r for r, _ in epoch].count(1) == 4
    assert {i for r, i in epoch if r == 0} == set(range(12))  # every sample of the first root before a repeat
    assert sorted(i for r, i in epoch if r == 1) == [0, 1, 2, 3]
    assert len(seen) == 32 and seen[16:] != epoch  # the second epoch: another order

    cfg = micro_cfg(roots, *MID, "name=mix_stopped")
    real = trainer_mod.RunLog.step

    def step(self, step, terms, lr):
        real(self, step, terms, lr)
        if step == 6:  # the second of the second epoch's four batches
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(trainer_mod.RunLog, "step", step)
    assert train(cfg, progress=False)["stopped"]
    assert os.path.basename(RunPaths(cfg.run_dir).checkpoints()[-1]) == "epoch_0001_batch_000002.pt"
    monkeypatch.setattr(trainer_mod.RunLog, "step", real)
    train(cfg, resume=cfg.run_dir, progress=False)
    a, b = (load_checkpoint(RunPaths(c.run_dir).checkpoints()[-1]) for c in (straight, cfg))
    assert a["train_state"]["step"] == b["train_state"]["step"] == 8
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for g1, g2 in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(g1["momentum_buffer"], g2["momentum_buffer"])


def test_the_second_roots_labels_arrive_in_the_models_classes(micro_cfg, tiny_synthetic, second_root):
    ds = build_training_set(micro_cfg(_roots(tiny_synthetic, second_root)))
    label19 = ds.parts[1].class_map.source
    assert label19.name == "synthetic19" and ds.parts[1].spec.name == "synthetic"
    raw = np.array([[0, 3, 13, 6, 17, 255]], np.uint8)  # background, eye_g, hair, l_brow, neck, ignore
    assert ds.parts[1].class_map.apply(raw).tolist() == [[0, 255, 10, 2, 255, 255]]


def test_bad_roots_are_one_line_naming_the_entry(micro_cfg, tiny_synthetic, second_root, tmp_path):
    cfg = micro_cfg(f"data.roots=[{{root: {tiny_synthetic}}}, {{root: {second_root}, dataset: synthetic19}}]",
                    "data.val_split=val")
    with pytest.raises(FileNotFoundError) as e:  # fine by classes (matched by name), but no val... and no train
        build_training_set(micro_cfg(f"data.roots=[{{root: {tiny_synthetic}}}, {{root: {tmp_path}}}]"))
    assert str(e.value).startswith(f"data.roots[1]: no 'train_list.txt' in '{tmp_path}'") and "\n" not in str(e.value)
    assert len(build_training_set(cfg).parts) == 2
    with pytest.raises(ConfigError, match=r"'data.roots\[0\].weight' = 0.0; expected a positive number"):
        micro_cfg(f"data.roots=[{{root: {tiny_synthetic}, weight: 0}}]")
    with pytest.raises(ConfigError, match=r"unknown key 'data.roots\[0\].wieght'"):
        micro_cfg(f"data.roots=[{{root: {tiny_synthetic}, wieght: 2}}]")
    with pytest.raises(ConfigError, match=r"data.roots\[1\].class_map = 'celebamask_hq': the model's classes are"):
        build_training_set(micro_cfg(f"data.roots=[{{root: {tiny_synthetic}}}, {{root: {second_root}, "
                                     f"dataset: synthetic19, class_map: celebamask_hq}}]"))


def test_inverse_frequency_reads_every_roots_histogram_by_its_share(micro_cfg, tiny_synthetic, second_root):
    """loss.class_weights=inverse_frequency over two roots: each root's train histogram (info.json), the second's
    read in Helen's order (CelebAMask-HQ index -> Helen index, written out), times the share of it an epoch draws."""
    import json

    from dml_csr.data.labels import get_spec
    from dml_csr.data.mixture import training_histogram

    to_helen = {0: 0, 1: 1, 2: 6, 4: 4, 5: 5, 6: 2, 7: 3, 10: 8, 11: 7, 12: 9, 13: 10}  # the rest: ignored
    first = json.load(open(os.path.join(tiny_synthetic, "info.json")))["pixel_histogram_by_split"]["train"]
    second = json.load(open(os.path.join(second_root, "info.json")))["pixel_histogram_by_split"]["train"]
    helen, celeba = get_spec("synthetic").classes, get_spec("synthetic19").classes
    expected = np.array([first[c] for c in helen], float) * 12 / 12  # 12 draws of its 12 samples
    for k, c in enumerate(celeba):
        if k in to_helen:
            expected[to_helen[k]] += second[c] * 4 / 4  # 4 draws of its 4 samples
    got = training_histogram(micro_cfg(_roots(tiny_synthetic, second_root)), get_spec("synthetic"))
    assert got.tolist() == pytest.approx(expected.tolist())
    doubled = training_histogram(micro_cfg(_roots(tiny_synthetic, second_root, (1, 1))), get_spec("synthetic"))
    assert doubled.tolist() != pytest.approx(expected.tolist())  # 8 draws of each: the second counted twice


def test_label_noise_corrupts_every_roots_training_labels_in_the_models_classes(micro_cfg, tiny_synthetic,
                                                                              second_root):
    """data.label_noise (every part dropped) reaches both roots, the second one's labels after its class map: its
    eyes (Helen's 4 and 5 once mapped) become their surroundings."""
    cfg = micro_cfg(_roots(tiny_synthetic, second_root), "data.label_noise.rate=1.0", "data.label_noise.kinds=[drop]")
    ds = build_training_set(cfg)
    assert all(p.label_noise is not None for p in ds.parts)
    assert all(p.label_noise is None for p in build_training_set(micro_cfg(_roots(tiny_synthetic, second_root))).parts)
    second = ds.parts[1]
    mapped = second.load_label(0)
    assert {4, 5} <= set(np.unique(mapped).tolist())
    noisy = second.label_noise(mapped, second.names[0])
    assert not {4, 5} & set(np.unique(noisy).tolist())
