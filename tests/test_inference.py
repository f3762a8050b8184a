"""predict_probs: resampling only when sizes differ, multi-scale averaging, flip with channel swap, output size;
paste_back against the inverse warp computed by hand; the input transform of a model's metadata."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dml_csr.data.transforms import EvalTransform, sample_affine
from dml_csr.inference import input_transform, inverse_of, paste_back, predict_probs
from dml_csr.photos.alignment import crop_region, similarity_transform


class Recorder(torch.nn.Module):
    """Logits = a fixed 1x1 conv of the input at ``stride``; records the input sizes it saw."""

    def __init__(self, stride=1, classes=4):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, classes, 1)
        self.stride = stride
        self.seen = []

    def forward(self, x):
        self.seen.append(tuple(x.shape[-2:]))
        return {"parsing": self.conv(x[..., ::self.stride, ::self.stride])}


def test_full_resolution_output_is_not_resampled():
    m = Recorder(stride=1)
    x = torch.randn(2, 3, 9, 7)
    p = predict_probs(m, x)
    assert torch.allclose(p, torch.softmax(m.conv(x), 1), atol=1e-6)


def test_strided_output_is_upsampled_to_the_requested_size():
    m = Recorder(stride=4)
    x = torch.randn(1, 3, 16, 16)
    p = predict_probs(m, x, size=(20, 12))
    ref = torch.softmax(F.interpolate(m.conv(x[..., ::4, ::4]), size=(20, 12), mode="bilinear", align_corners=True),
                        1)
    assert p.shape == (1, 4, 20, 12) and torch.allclose(p, ref, atol=1e-6)


def test_multi_scale_is_the_mean_of_the_per_scale_probabilities():
    m = Recorder(stride=1)
    x = torch.randn(1, 3, 16, 20)
    p = predict_probs(m, x, scales=(0.5, 1.0, 1.5))
    assert m.seen == [(8, 10), (16, 20), (24, 30)]
    parts = []
    for s in (0.5, 1.0, 1.5):
        xs = x if s == 1.0 else F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=True)
        logits = F.interpolate(m.conv(xs), size=(16, 20), mode="bilinear", align_corners=True) if s != 1.0 \
            else m.conv(xs)
        parts.append(torch.softmax(logits, 1))
    assert torch.allclose(p, sum(parts) / 3, atol=1e-5)
    assert torch.allclose(p.sum(1), torch.ones(1, 16, 20), atol=1e-5)


def test_flip_averages_with_the_mirrored_and_swapped_prediction():
    m = Recorder(stride=1)
    x = torch.randn(1, 3, 6, 8)
    perm = [0, 2, 1, 3]  # classes 1 and 2 are a left/right pair
    p = predict_probs(m, x, flip_perm=perm)
    mirrored = torch.softmax(m.conv(x.flip(3)), 1).flip(3)[:, perm]
    assert torch.allclose(p, (torch.softmax(m.conv(x), 1) + mirrored) / 2, atol=1e-6)
    # equivariance: flip-tested prediction of the mirrored input = mirrored, swapped prediction of the input
    q = predict_probs(m, x.flip(3), flip_perm=perm)
    assert torch.allclose(q, p.flip(3)[:, perm], atol=1e-6)


def _bilinear(probs: np.ndarray, x: float, y: float) -> np.ndarray:
    """Probabilities (C, h, w) at a point, by hand: the four neighbours, clamped to the border."""
    h, w = probs.shape[1:]
    x0, y0 = int(np.floor(x)), int(np.floor(y))
    fx, fy = x - x0, y - y0

    def at(i, j):
        return probs[:, min(max(j, 0), h - 1), min(max(i, 0), w - 1)]
    return ((1 - fx) * (1 - fy) * at(x0, y0) + fx * (1 - fy) * at(x0 + 1, y0) + (1 - fx) * fy * at(x0, y0 + 1)
            + fx * fy * at(x0 + 1, y0 + 1))


@pytest.mark.parametrize("dst,size", [([[5, 7], [12, 13]], (90, 120)),    # scale 0.92, 40.6 degrees
                                      ([[-5, -5], [-2.5, -5]], (240, 300))])  # 0.25: a face 4x the crop
def test_paste_back_is_the_inverse_warp(dst, size):
    """A photo pixel takes the crop's probabilities at the point its forward warp lands on."""
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(11), (48, 40)).transpose(2, 0, 1).astype(np.float32)  # (11, 48, 40)
    m = similarity_transform(np.array([[0, 0], [10, 0]]), np.array(dst, float))
    inv = cv2.invertAffineTransform(m)
    H, W = size
    region = crop_region(m, (48, 40), size)

    def paste(window):
        return (paste_back(probs, inv, size, mode="bilinear", border="replicate", window=window),
                paste_back(np.ones((48, 40), np.float32), inv, size, mode="bilinear", window=window))
    pasted, cover = paste(region)
    x0, y0, x1, y1 = region
    assert pasted.shape == (11, y1 - y0, x1 - x0) and cover.shape == pasted.shape[1:]
    checked = 0
    for _ in range(300):
        X, Y = rng.integers(x0, x1), rng.integers(y0, y1)
        u, v = m @ [X, Y, 1.0]
        if 0.5 < u < 38.5 and 0.5 < v < 46.5:  # well inside the crop
            # OpenCV rounds the sub-pixel position to 1/32 of a pixel: within 1/64 of the neighbours' difference
            np.testing.assert_allclose(pasted[:, Y - y0, X - x0], _bilinear(probs, u, v), atol=8e-3)
            assert cover[Y - y0, X - x0] == pytest.approx(1.0, abs=1e-3)
            checked += 1
        elif not (-1.5 < u < 40.5 and -1.5 < v < 48.5):  # well outside
            assert cover[Y - y0, X - x0] == 0
    assert checked > 50
    # the region holds every pixel the crop reaches: pasted over the whole photo, nothing lands outside it, and
    # inside it the values are the region's own
    full, full_cover = paste(None)
    outside = np.ones((H, W), bool)
    outside[y0:y1, x0:x1] = False
    assert full_cover[outside].max() == 0 and full_cover.sum() > 0.3 * 40 * 48 / np.linalg.det(m[:, :2])
    np.testing.assert_allclose(full[:, y0:y1, x0:x1] * cover, pasted * cover, atol=1e-6)


def test_a_warped_sample_maps_back_through_its_own_affine():
    """EvalTransform.warp keeps the affine; inverse_of and sample_affine use it (not the whole-image crop)."""
    m = np.array([[0.5, 0.0, -3.0], [0.0, 0.5, -1.0]])
    sample = EvalTransform((16, 16)).warp(np.zeros((40, 50, 3), np.uint8), m)
    np.testing.assert_allclose(sample_affine(sample["meta"]), m)
    np.testing.assert_allclose(sample_affine(sample["meta"], inv=True), [[2, 0, 6], [0, 2, 2]])
    lab = np.zeros((16, 16), np.uint8)
    lab[4:8, 4:8] = 3  # input pixels 4..7 are image pixels 14..20 (x) and 10..16 (y)
    back = paste_back(lab, inverse_of(sample["meta"]), sample["meta"]["size"], mode="nearest")
    assert back.shape == (40, 50) and (back[11:16, 15:20] == 3).all() and back[:9].max() == 0


def test_nearest_paste_back_is_the_authors_protocol_by_hand():
    """Each image pixel takes the label at the input pixel nearest to where the whole-image crop sends it, and
    background where that lies outside the input (the authors' evaluation); computed here pixel by pixel."""
    rng = np.random.default_rng(3)
    size, input_size = (70, 90), (40, 48)
    pred = rng.integers(1, 11, input_size).astype(np.uint8)
    meta = EvalTransform(input_size)(np.zeros(size + (3,), np.uint8))["meta"]
    back = paste_back(pred, inverse_of(meta), size, mode="nearest")
    fwd = sample_affine(meta)  # image -> input, the authors' forward matrix
    ys, xs = np.mgrid[0:size[0], 0:size[1]]
    u, v = fwd[0, 0] * xs + fwd[0, 1] * ys + fwd[0, 2], fwd[1, 0] * xs + fwd[1, 1] * ys + fwd[1, 2]
    ui, vi = np.floor(u + 0.5).astype(int), np.floor(v + 0.5).astype(int)
    inside = (ui >= 0) & (ui < input_size[1]) & (vi >= 0) & (vi < input_size[0])
    expected = np.where(inside, pred[vi.clip(0, input_size[0] - 1), ui.clip(0, input_size[1] - 1)], 0)
    clear = (np.abs(u - np.floor(u) - 0.5) > 0.01) & (np.abs(v - np.floor(v) - 0.5) > 0.01)  # not on a rounding tie
    assert clear.mean() > 0.9 and (back[clear] == expected[clear]).all()
    assert (back[~inside & clear] == 0).all() and (~inside).any()  # the padding and the last column: background


def test_paste_back_fills_every_channel_and_checks_its_arguments():
    probs = np.full((6, 4, 4), 0.25, np.float32)  # six channels: OpenCV alone would fill only the first
    shift = np.array([[1.0, 0.0, 10.0], [0.0, 1.0, 10.0]])  # input pixel (x, y) -> image pixel (x + 10, y + 10)
    out = paste_back(probs, shift, (20, 20), mode="bilinear", fill=-1.0)
    assert out.shape == (6, 20, 20) and (out[:, 0, 0] == -1).all() and (out[:, 12, 12] == 0.25).all()
    assert paste_back(probs, shift, (20, 20), window=(8, 9, 13, 15)).shape == (6, 6, 5)
    with pytest.raises(ValueError, match="mode must be one of nearest, bilinear, got 'cubic'"):
        paste_back(probs, shift, (20, 20), mode="cubic")
    with pytest.raises(ValueError, match="border must be one of constant, replicate"):
        paste_back(probs, shift, (20, 20), border="reflect")


def test_the_input_transform_comes_from_the_metadata():
    meta = {"input_size": [64, 48], "channel_order": "RGB", "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.1]}
    t = input_transform(meta)
    assert (t.input_size, t.channel_order, t.mean, t.std) == ((64, 48), "RGB", (0.5, 0.4, 0.3), (0.2, 0.2, 0.1))
    with pytest.raises(KeyError, match="model metadata lacks 'channel_order', 'std'"):
        input_transform({"input_size": [64, 48], "mean": [0.5] * 3})


def test_evaluation_the_parser_video_and_the_web_demo_use_the_one_transform_and_paste_back(
        ckpt, tiny_synthetic, tmp_path, monkeypatch):
    """One function builds a model's input transform and one maps its predictions back: every consumer calls them."""
    from helpers.tiny_checkpoint import write_config

    from dml_csr import FaceParser, inference
    from dml_csr.config import load_config
    from dml_csr.evaluation.protocol import score_checkpoint
    from dml_csr.photos.faces import Face
    from dml_csr.photos.server import make_server
    from dml_csr.photos.video import VideoParser

    calls = {"input_transform": 0, "paste_back": 0}

    def counting(name):
        original = getattr(inference, name)

        def wrapper(*args, **kwargs):
            calls[name] += 1
            return original(*args, **kwargs)
        return wrapper

    def used(run) -> tuple[int, int]:
        before = dict(calls)
        run()
        return calls["input_transform"] - before["input_transform"], calls["paste_back"] - before["paste_back"]

    for name in calls:
        monkeypatch.setattr(inference, name, counting(name))
    cfg = load_config(write_config(str(tmp_path / "c.yaml"), tiny_synthetic), [])
    transforms, pastes = used(lambda: score_checkpoint(cfg, ckpt, out=str(tmp_path / "eval"), progress=False))
    assert transforms == 1 and pastes == 4  # the test split's four images
    parser = None

    def make_parser():
        nonlocal parser
        parser = FaceParser.from_checkpoint(ckpt)
    assert used(make_parser) == (1, 0)
    image = np.zeros((50, 40, 3), np.uint8)
    assert used(lambda: parser(image)) == (0, 1)
    face = Face((5.0, 5.0, 30.0, 30.0))
    assert used(lambda: parser.parse(image, faces=[face])) == (0, 2)  # the probabilities and the crop's coverage
    video = VideoParser(parser, detect=True)
    assert used(lambda: video(image, [face])) == (0, 2)
    server = make_server(parser, "127.0.0.1", 0)
    try:
        assert used(lambda: server.parse(image)) == (0, 1)
    finally:
        server.server_close()
