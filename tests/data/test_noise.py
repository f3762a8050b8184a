"""Label noise: each kind against the map it must give, written out here; the same draws for the same sample and
seed; the training split alone is corrupted."""
import numpy as np
import pytest

from dml_csr.data.noise import LabelNoise, corrupt_labels


def _face():
    lab = np.zeros((24, 24), np.uint8)
    lab[2:22, 2:22] = 1  # skin
    lab[6:8, 6:12] = 2  # a brow
    lab[10:13, 6:12] = 4  # the eye below it
    return lab


def _chebyshev_grow(mask, k):
    ys, xs = np.nonzero(mask)
    out = np.zeros_like(mask)
    for y, x in zip(ys, xs):
        out[max(0, y - k):y + k + 1, max(0, x - k):x + k + 1] = True
    return out


def test_rate_zero_changes_nothing_and_drop_relabels_every_part_as_its_surroundings():
    lab = _face()
    assert np.array_equal(corrupt_labels(lab, 0.0, np.random.default_rng(0)), lab)
    dropped = corrupt_labels(lab, 1.0, np.random.default_rng(0), kinds=["drop"])
    assert np.array_equal(dropped[2:22, 2:22], np.ones((20, 20), np.uint8))  # brow and eye went to skin...
    expected = lab.copy()
    expected[(lab == 2) | (lab == 4)] = 1
    assert np.array_equal(dropped, expected)  # ...the skin, the region the parts sit in, stays


def test_swap_exchanges_a_part_with_its_nearest_other_part():
    lab = _face()
    lab[18:20, 18:20] = 6  # a far-away part (a nose)
    out = corrupt_labels(lab, 1.0, np.random.default_rng(0), kinds=["swap"])
    # the brow (drawn first) and the eye, its nearest part, exchange labels; the eye is then corrupted already,
    # and the nose has no part left to swap with
    expected = lab.copy()
    expected[lab == 2], expected[lab == 4] = 4, 2
    assert np.array_equal(out, expected)


@pytest.mark.parametrize("seed", range(4))
def test_shift_moves_a_boundary_by_up_to_max_shift_outwards_or_inwards(seed):
    lab = np.zeros((20, 20), np.uint8)
    lab[2:18, 2:18] = 1
    lab[7:11, 6:14] = 4
    rng = np.random.default_rng(seed)
    out = corrupt_labels(lab, 1.0, rng, kinds=["shift"], max_shift=1)
    eye = lab == 4
    grown = _chebyshev_grow(eye, 1)
    shrunk = ~_chebyshev_grow(~eye, 1)
    # the skin is shifted too, so look at the eye only: it grew by one pixel, or lost its one-pixel rim to skin
    assert np.array_equal(out == 4, grown) or np.array_equal(out == 4, shrunk & (out == 4)) and \
        np.array_equal(out == 4, shrunk)


def test_the_draws_depend_on_the_seed_and_the_sample_name_only():
    lab = _face()
    a, b = LabelNoise(0.5, seed=3), LabelNoise(0.5, seed=3)
    assert all(np.array_equal(a(lab, f"s{i}"), b(lab, f"s{i}")) for i in range(10))
    assert any(not np.array_equal(a(lab, f"s{i}"), LabelNoise(0.5, seed=4)(lab, f"s{i}")) for i in range(10))
    with pytest.raises(ValueError, match="kinds"):
        corrupt_labels(lab, 1.0, np.random.default_rng(0), kinds=["blur"])


def test_only_the_training_split_is_corrupted(micro_cfg):
    from dml_csr.data.dataset import build_dataset

    cfg = micro_cfg("data.label_noise.rate=1.0", "data.label_noise.kinds=[drop]")
    train_ds = build_dataset(cfg, "train", train=True)
    assert train_ds.label_noise is not None
    assert build_dataset(cfg, "val", train=False).label_noise is None
    assert build_dataset(cfg, "train", train=False).label_noise is None  # e.g. scoring the training split
    clean = build_dataset(micro_cfg(), "train", train=True)
    assert clean.label_noise is None
    name = train_ds.names[0]
    clean_map = train_ds.load_label(0)
    noisy = train_ds.label_noise(clean_map, name)
    assert {4, 5} <= set(np.unique(clean_map).tolist()) and not {4, 5} & set(np.unique(noisy).tolist())  # no eyes


class _Scripted:
    """An rng whose draws are given: random() and integers() return the next of their lists."""

    def __init__(self, randoms, integers):
        self.randoms, self.ints = list(randoms), list(integers)

    def random(self):
        return self.randoms.pop(0)

    def integers(self, *args):
        return self.ints.pop(0)


def test_a_part_an_earlier_shift_took_whole_is_not_swapped():
    """The brow grows outwards by 3 over a one-pixel part below it (class 5); then 5 is drawn for a swap: it has no
    pixel left, so nothing is exchanged (the brow keeps its label) and the map is the grown brow's."""
    lab = _face()
    lab[9, 8] = 5
    rng = _Scripted(randoms=[0.0, 0.0, 0.9, 0.0], integers=[0, 3, 1])  # 2: shift by 3 outwards; 4: kept; 5: swap
    out = corrupt_labels(lab, 0.5, rng, kinds=["shift", "swap"], max_shift=3)
    expected = lab.copy()
    expected[_chebyshev_grow(lab == 2, 3)] = 2
    assert not rng.randoms and not rng.ints
    assert np.array_equal(out, expected)
