"""The dense CRF of Liu et al.'s CNN-CRF baseline against Krähenbühl and Koltun's mean field written out here from
their definitions (every pixel pair's kernel, the compatibility as a matrix, the update as their Algorithm 1), in
float64 numpy; and what it is for: labels that follow the image's colour edges."""
import math
import re

import numpy as np
import pytest
import torch
from helpers.crf import two_halves

from dml_csr.models.dense_crf import MAX_PIXELS, CRFParams, dense_crf


def reference_mean_field(probs: np.ndarray, image: np.ndarray, p: CRFParams) -> np.ndarray:
    """probs (C, H, W), image (3, H, W) RGB -> Q (C, H, W), float64. Each kernel's message to pixel i: the paper's sum
    over j != i ("none"); or the sum over every j, i included, divided by the kernel's row sum D_i ("row", the code
    released with the paper); or each term k_ij Q_j divided by sqrt(D_i D_j) ("symmetric", pydensecrf's default)."""
    c, h, w = probs.shape
    ys, xs = np.mgrid[0:h, 0:w]
    pos = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
    rgb = image.reshape(3, -1).T.astype(np.float64)
    dpos = ((pos[:, None, :] - pos[None, :, :]) ** 2).sum(-1)
    dcol = ((rgb[:, None, :] - rgb[None, :, :]) ** 2).sum(-1)
    appearance = np.exp(-dpos / (2 * p.bilateral_xy ** 2) - dcol / (2 * p.bilateral_rgb ** 2))
    smoothness = np.exp(-dpos / (2 * p.spatial_xy ** 2))
    n = h * w
    mu = 1.0 - np.eye(c)  # Potts: a cost for every pair of different labels
    unary = -np.log(np.maximum(probs.reshape(c, n).T.astype(np.float64), 1e-8))  # (N, C)

    def message(kernel, q):
        if p.normalization == "none":
            return (kernel * (1.0 - np.eye(n))) @ q
        d = kernel.sum(1)  # the diagonal, exp(0) = 1, included
        if p.normalization == "row":
            return (kernel @ q) / d[:, None]
        return (kernel / np.sqrt(d[:, None] * d[None, :])) @ q

    def normalise(e):
        e = np.exp(e - e.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)
    q = normalise(-unary)
    for _ in range(p.iterations):
        weighted = p.bilateral_weight * message(appearance, q) + p.spatial_weight * message(smoothness, q)
        pairwise = weighted @ mu.T  # sum over l' of mu(l, l') times the message of l'
        q = normalise(-unary - pairwise)
    return q.T.reshape(c, h, w)


def _random_case(seed: int, c: int, h: int, w: int):
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(2 * torch.randn(1, c, h, w, generator=g), 1)
    image = torch.randint(0, 256, (1, 3, h, w), generator=g, dtype=torch.uint8)
    return probs, image


SMALL = dict(iterations=3, bilateral_weight=4.0, bilateral_xy=2.0, bilateral_rgb=40.0, spatial_weight=2.0,
             spatial_xy=1.5)


@pytest.mark.parametrize("params", [CRFParams(), CRFParams(normalization="row"), CRFParams(normalization="none"),
                                    CRFParams(**SMALL), CRFParams(**SMALL, normalization="none")])
def test_mean_field_equals_the_definition_written_out(params):
    probs, image = _random_case(0, 4, 9, 11)
    expected = reference_mean_field(probs[0].numpy(), image[0].numpy(), params)
    got = dense_crf(probs, image, params)
    assert got.shape == probs.shape and got.dtype == torch.float32
    np.testing.assert_allclose(got[0].numpy(), expected, atol=5e-4)
    assert not np.allclose(expected, probs[0].numpy(), atol=1e-2)  # the CRF moved the probabilities


def test_the_spatial_taps_end_without_changing_the_answer_and_the_kernel_may_be_rebuilt_each_step():
    """40x40 pixels: the spatial kernel's taps (7.5 theta = 23 px each side) end inside the image; with no memory to
    keep the bilateral matrix it is rebuilt in blocks every iteration. Both give the definition's numbers."""
    probs, image = _random_case(1, 3, 40, 40)
    for params in (CRFParams(iterations=2), CRFParams(iterations=2, normalization="none")):
        expected = reference_mean_field(probs[0].numpy(), image[0].numpy(), params)
        for memory_mib in (2048, 0):
            np.testing.assert_allclose(dense_crf(probs, image, params, memory_mib=memory_mib)[0].numpy(), expected,
                                       atol=5e-4)


def test_labels_follow_the_colour_edge():
    """Two flat colours split down the middle, the network's answer noisy (two in three pixels right): five
    mean-field steps label every pixel by its side."""
    image, probs, truth = two_halves(48, 64, seed=3)
    before = (probs.argmax(1)[0] == truth).float().mean().item()
    after = (dense_crf(probs, image).argmax(1)[0] == truth).float().mean().item()
    assert 0.55 < before < 0.8 and after > 0.99, (before, after)


def test_no_iterations_give_the_probabilities_back_and_bad_input_is_one_line():
    probs, image = _random_case(2, 3, 8, 8)
    assert torch.equal(dense_crf(probs, image, CRFParams(iterations=0)), probs)
    side = math.isqrt(MAX_PIXELS) + 1
    with pytest.raises(ValueError, match=f"{side}x{side} = {side * side:,} pixels; expected at most {MAX_PIXELS:,}"):
        dense_crf(torch.ones(1, 2, side, side), torch.zeros(1, 3, side, side))
    with pytest.raises(ValueError, match=r"same B, H and W; got \(1, 3, 8, 8\) and \(1, 3, 8, 9\)"):
        dense_crf(probs, torch.zeros(1, 3, 8, 9))
    for bad, message in [(dict(iterations=51), "iterations = 51; expected a whole number >= 0 and <= 50"),
                         (dict(iterations=2.5), "iterations = 2.5; expected a whole number"),
                         (dict(bilateral_weight=math.inf), "bilateral_weight = inf; expected a finite number"),
                         (dict(bilateral_xy=0.0), "bilateral_xy = 0.0; expected a finite number >= 0.001"),
                         (dict(spatial_xy=-3), "spatial_xy = -3; expected a finite number >= 0.001"),
                         (dict(normalization="mean"), "normalization = 'mean'; expected 'symmetric', 'row' or 'none'")]:
        with pytest.raises(ValueError, match=re.escape(message)):
            CRFParams(**bad)
    kept = CRFParams(iterations=5.0, bilateral_weight=np.float32(10))  # as the computation takes them
    assert type(kept.iterations) is int and type(kept.bilateral_weight) is float
    for p, im in [(torch.full_like(probs, math.nan), image), (probs - 0.5, image), (probs, image.float() * math.inf),
                  (probs[..., :0], image[..., :0])]:
        with pytest.raises(ValueError, match="dense_crf"):
            dense_crf(p, im)


def test_a_confident_small_part_of_a_close_colour_survives_the_normalised_messages():
    """A 6x6 part the network is sure of (0.99), 40 red levels from the 128x128 face around it: under the default
    symmetric normalisation every message stays about its kernel's weight and the part keeps its label after five
    steps; the paper's plain sum, which grows with the thousands of similar pixels around it, swallows it."""
    h = w = 128
    image = torch.full((1, 3, h, w), 120, dtype=torch.uint8)
    image[:, 0, 60:66, 60:66] = 160
    probs = torch.full((1, 2, h, w), 0.01)
    probs[:, 0] = 0.99
    probs[:, :, 60:66, 60:66] = torch.tensor([0.01, 0.99]).view(2, 1, 1)

    def part(q):
        return (q.argmax(1)[0, 60:66, 60:66] == 1).float().mean().item()
    assert part(dense_crf(probs, image)) == 1.0
    assert part(dense_crf(probs, image, CRFParams(normalization="none"))) == 0.0
