import numpy as np
import pytest
import torch

from dml_csr.data.edges import binary_edges, binary_edges_torch, semantic_edges, semantic_edges_torch


def brute_force(label: np.ndarray, width: int, ignore: int = 255):
    """Per-pixel loop over the city-block neighbourhood: the definition, written plainly."""
    h, w = label.shape
    binary = np.zeros((h, w), np.int64)
    semantic = np.zeros((h, w), np.int64)
    for y in range(h):
        for x in range(w):
            v = label[y, x]
            if v == ignore:
                binary[y, x] = semantic[y, x] = ignore
                continue
            for dy in range(-width, width + 1):
                for dx in range(-width, width + 1):
                    if not 0 < abs(dy) + abs(dx) <= width:
                        continue
                    yy, xx = y + dy, x + dx
                    if 0 <= yy < h and 0 <= xx < w and label[yy, xx] != ignore and label[yy, xx] != v:
                        binary[y, x] = 1
                        semantic[y, x] = v
    return binary, semantic


def random_labels(seed, shape=(17, 23), num_classes=5):
    rng = np.random.default_rng(seed)
    # blocky maps with some single-pixel noise and ignored pixels
    lab = np.kron(rng.integers(0, num_classes, (shape[0] // 4 + 1, shape[1] // 4 + 1)), np.ones((4, 4), np.int64))
    lab = lab[: shape[0], : shape[1]]
    noise = rng.random(shape) < 0.05
    lab[noise] = rng.integers(0, num_classes, noise.sum())
    lab[rng.random(shape) < 0.08] = 255
    return lab.astype(np.uint8)


@pytest.mark.parametrize("width", [1, 2, 3])
@pytest.mark.parametrize("seed", [0, 1])
def test_numpy_edges_match_brute_force(width, seed):
    lab = random_labels(seed)
    b, s = brute_force(lab, width)
    np.testing.assert_array_equal(binary_edges(lab, width).astype(np.int64), b)
    np.testing.assert_array_equal(semantic_edges(lab, width).astype(np.int64), s)
    assert 0 < (b == 1).sum() < (b != 255).sum()  # the case is not trivial


@pytest.mark.parametrize("width", [1, 2])
def test_torch_edges_match_brute_force_batched(width):
    labs = np.stack([random_labels(s) for s in range(3)])
    t = torch.from_numpy(labs).long()
    bt, st = binary_edges_torch(t, width), semantic_edges_torch(t, width)
    assert bt.dtype == torch.int64 and bt.shape == t.shape
    for i in range(3):
        b, s = brute_force(labs[i], width)
        np.testing.assert_array_equal(bt[i].numpy(), b)
        np.testing.assert_array_equal(st[i].numpy(), s)


def test_ignored_pixels_make_no_edge():
    lab = np.ones((5, 5), np.uint8)
    lab[2, 2] = 255
    b = binary_edges(lab)
    assert b[2, 2] == 255 and (b[lab != 255] == 0).all()


def test_width_must_be_positive():
    with pytest.raises(ValueError, match="edge width"):
        binary_edges(np.zeros((4, 4), np.uint8), 0)
