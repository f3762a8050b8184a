"""The dense CRF on network crops (evaluation's batches, FaceParser's): colours from their uint8 BGR pixels, and above
256x256 run at a size that fits and resized back."""
import torch
from helpers.crf import two_halves

from dml_csr.inference import crf_probs
from dml_csr.models import dense_crf


def test_a_batch_larger_than_the_crf_takes_is_resized_and_its_labels_follow_the_colour_edge(monkeypatch):
    monkeypatch.setattr(dense_crf, "MAX_PIXELS", 32 * 32)  # the real 256 x 256 takes minutes a step on a CPU
    h, w = 60, 64
    image, probs, truth = two_halves(h, w, seed=4)
    run = dense_crf.dense_crf
    seen = []
    monkeypatch.setattr(dense_crf, "dense_crf", lambda p, im, params: seen.append(p.shape) or run(p, im, params))
    out = crf_probs(probs, image, 5)
    assert seen == [(1, 2, 30, 33)] and out.shape == probs.shape  # run at the largest size that fits
    assert torch.allclose(out.sum(1), torch.ones(1, h, w), atol=1e-5)
    before = (probs.argmax(1)[0] == truth).float().mean().item()
    after = (out.argmax(1)[0] == truth).float().mean().item()
    assert before < 0.8 and after > 0.98, (before, after)  # the edge column blurs in the resizing
