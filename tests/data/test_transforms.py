import json
import os

import numpy as np
import pytest
import torch
from helpers import FIXTURES

from dml_csr.data.labels import flip_permutation, get_spec
from dml_csr.data.loader import collate_samples
from dml_csr.data.transforms import (EvalTransform, TrainTransform, batch_input, box_to_center_scale,
                                     get_affine_transform, normalize_images, sample_affine)
from dml_csr.inference import inverse_of, paste_back

SPEC = get_spec("helen")


def apply(m, pts):
    return pts @ m[:, :2].T + m[:, 2]


def test_affine_equals_the_authors_matrices():
    """Their get_affine_transform on whole images (tests/fixtures/golden/affine.json: 108 cases of image and output
    sizes, square and not, rotations and scale factors): our centre/scale and both matrices, every entry to 1e-6
    (the same arithmetic: float32 point triples solved by cv2.getAffineTransform, so in fact equal)."""
    cases = json.load(open(os.path.join(FIXTURES, "golden", "affine.json")))["cases"]
    assert len(cases) == 108
    for c in cases:
        (w, h), out = c["image_wh"], tuple(c["output_hw"])
        center, scale = box_to_center_scale(h, w, out)
        scale = scale * c["scale_factor"]
        np.testing.assert_allclose(center, c["center"], atol=1e-6)
        fwd = get_affine_transform(center, scale, c["rotation_deg"], out)
        inv = get_affine_transform(center, scale, c["rotation_deg"], out, inv=True)
        np.testing.assert_allclose(fwd, c["forward"], atol=1e-6, rtol=0, err_msg=str(c))
        np.testing.assert_allclose(inv, c["inverse"], atol=1e-6, rtol=0, err_msg=str(c))
    # 512 -> 473: the box width lands on all 473 output pixels, centred at 236.5 (not 472 pixels centred at 236)
    m = get_affine_transform(*box_to_center_scale(512, 512, (473, 473)), 0.0, (473, 473))
    assert m[0, 0] == pytest.approx(473 / 511) and apply(m, np.array([[255.5, 255.5]]))[0] == pytest.approx([236.5] * 2)


def test_affine_inverse_and_center():
    m = get_affine_transform((50.0, 30.0), (100.0, 100.0), 25.0, (64, 80))
    mi = get_affine_transform((50.0, 30.0), (100.0, 100.0), 25.0, (64, 80), inv=True)
    pts = np.array([[0.0, 0.0], [13.0, 77.0], [50.0, 30.0]])
    np.testing.assert_allclose(apply(mi, apply(m, pts)), pts, atol=1e-4)  # float32 points: 1e-5 px rounding
    np.testing.assert_allclose(apply(m, pts[2:]), [[40.0, 32.0]], atol=1e-4)  # centre -> output centre (W/2, H/2)
    assert np.isclose(np.linalg.norm(m[:, 0]), 80 / 100.0)  # uniform scale: the box width spans the output width


def test_flipped_samples_map_back_through_the_inverse():
    meta = {"center": [30.0, 20.0], "scale": [61.0, 61.0], "rotation": 10.0, "flip": True, "size": (41, 61),
            "input_size": (32, 32)}
    fwd, inv = sample_affine(meta), sample_affine(meta, inv=True)
    pts = np.array([[0.0, 0.0], [60.0, 40.0], [12.5, 33.0]])
    np.testing.assert_allclose(apply(inv, apply(fwd, pts)), pts, atol=1e-4)
    mirrored = get_affine_transform(meta["center"], meta["scale"], 10.0, (32, 32))
    np.testing.assert_allclose(apply(fwd, pts), apply(mirrored, np.stack([60 - pts[:, 0], pts[:, 1]], 1)), atol=1e-9)


def test_affine_rotation_is_counter_clockwise_like_opencv():
    import cv2
    ours = get_affine_transform((20.0, 10.0), (40.0, 40.0), 30.0, (41, 41))
    ref = cv2.getRotationMatrix2D((20.0, 10.0), 30.0, 41 / 40)  # the box width onto the 41 output pixels
    np.testing.assert_allclose(ours[:, :2], ref[:, :2], atol=1e-5)


def _force(t, s=1.0, r=0.0, f=False):
    t.sample_params = lambda rng: (s, r, f)
    return t


def test_flip_swaps_left_and_right():
    lab = np.zeros((32, 32), np.uint8)
    lab[5:10, 2:8] = SPEC.index("left_eye")
    lab[20:25, 3:9] = SPEC.index("left_brow")
    lab[12:16, 20:30] = SPEC.index("nose")
    img = np.dstack([lab * 10] * 3).astype(np.uint8)
    t = _force(TrainTransform((32, 32), SPEC, flip=True), f=True)
    plain = _force(TrainTransform((32, 32), SPEC, flip=True), f=False)
    out, ref = t(img, lab), plain(img, lab)
    # the authors' crop centres the box at W/2, so the mirror of output column X is column W - X (not W - 1 - X)
    expected = flip_permutation(SPEC)[ref["label"].numpy()[:, ::-1]]
    np.testing.assert_array_equal(out["label"].numpy()[:, 1:], expected[:, :-1])
    assert (out["label"] == SPEC.index("left_eye")).sum() == 0 and (out["label"] == SPEC.index("right_eye")).sum() > 0
    # the image is mirrored too
    np.testing.assert_array_equal(out["image"].permute(1, 2, 0).numpy()[:, 1:],
                                  ref["image"].permute(1, 2, 0).numpy()[:, ::-1][:, :-1])


def _square_label(h=90, w=120):
    lab = np.zeros((h, w), np.uint8)
    lab[20:60, 30:70] = 1
    lab[50:80, 80:110] = 2
    lab[0:6, :] = 3
    return lab


def _within_one_pixel(back, lab):
    """Every mapped-back pixel's label occurs within one pixel of it in the original."""
    h, w = lab.shape
    pad = np.pad(lab, 1, constant_values=254)
    ok = np.zeros((h, w), bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            ok |= pad[1 + dy: 1 + dy + h, 1 + dx: 1 + dx + w] == back
    return ok


@pytest.mark.parametrize("params", [(1.0, 0.0, False), (0.8, 23.0, True), (1.2, -17.0, False)])
def test_train_samples_map_back_within_one_pixel(params):
    lab = _square_label()
    t = _force(TrainTransform((240, 240), SPEC, flip=True), *params)
    s = t(np.zeros(lab.shape + (3,), np.uint8), lab)
    pred = s["label"].numpy().astype(np.uint8)
    if params[2]:  # a prediction of the flipped sample names left/right as seen: swap back to compare with the GT
        pred = np.where(pred == 255, 255, flip_permutation(SPEC)[np.minimum(pred, 10)]).astype(np.uint8)
    back = paste_back(pred, inverse_of(s["meta"]), s["meta"]["size"], mode="nearest", fill=254)
    seen = back != 254  # zooming in (scale < 1) leaves the original's margins outside the crop
    assert seen.mean() > (0.6 if params[0] < 1 else 0.99)
    assert _within_one_pixel(back, lab)[seen].all()
    assert (back[seen] != 255).all()


def test_eval_paste_back_numpy_and_torch_agree():
    lab = _square_label()
    s = EvalTransform((200, 200))(np.zeros(lab.shape + (3,), np.uint8), lab)
    inv, size = inverse_of(s["meta"]), s["meta"]["size"]
    back_np = paste_back(s["label"].numpy().astype(np.uint8), inv, size, mode="nearest")
    back_t = paste_back(s["label"].long(), inv, size, mode="nearest")  # e.g. a prediction on the device, int64
    assert back_np.shape == lab.shape and back_t.shape == lab.shape and back_t.dtype == np.int64
    # the authors' crop maps the box [0, w-1] onto [0, W]: the image's last column lands just outside the W network
    # pixels and maps back to the fill (background), as in their evaluation; every other pixel within one pixel
    assert (back_np[:, -1] == 0).all() and _within_one_pixel(back_np, lab)[:, :-1].all()
    assert _within_one_pixel(back_t, lab)[:, :-1].all()
    # logits (C, h, w) bilinear: argmax after mapping back reproduces the map
    logits = torch.nn.functional.one_hot(s["label"].long().clamp(max=10), 11).permute(2, 0, 1).float()
    back_l = paste_back(logits, inv, size, mode="bilinear")
    assert back_l.shape == (11,) + lab.shape
    assert _within_one_pixel(back_l.argmax(0), lab).mean() > 0.995
    # numpy many-channel logits too
    back_ln = paste_back(logits.numpy(), inv, size, mode="bilinear")
    np.testing.assert_allclose(back_ln, back_l, atol=2e-2)


def test_eval_transform_outputs_and_ignore_border():
    lab = _square_label(60, 120)  # wide image: padded top and bottom
    s = EvalTransform((64, 64))(np.full(lab.shape + (3,), 200, np.uint8), lab)
    assert s["image"].shape == (3, 64, 64) and s["image"].dtype == torch.uint8  # normalised later, on the device
    assert (s["image"][:, 18:46] == 200).all() and (s["image"][:, :14] == 0).all()  # 60 rows -> rows 16-47
    for k in ("label", "edge", "semantic_edge"):
        assert s[k].shape == (64, 64) and s[k].dtype == torch.uint8
    assert (s["label"][:10] == 255).all() and (s["edge"][:10] == 255).all()  # outside the image: ignore
    assert s["meta"]["size"] == (60, 120)
    assert set(torch.unique(s["edge"]).tolist()) == {0, 1, 255}


def test_channel_order_and_normalisation_are_literal():
    img = np.zeros((4, 4, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 10, 20, 30  # B, G, R
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 0.125)
    bgr = batch_input(collate_samples([EvalTransform((4, 4), "BGR", mean, std)(img)]))[0, :, 1, 1]
    rgb = batch_input(collate_samples([EvalTransform((4, 4), "RGB", mean, std)(img)]))[0, :, 1, 1]
    np.testing.assert_allclose(bgr.numpy(), [(10 / 255 - .1) / .5, (20 / 255 - .2) / .25, (30 / 255 - .3) / .125],
                               rtol=1e-5)
    np.testing.assert_allclose(rgb.numpy(), [(30 / 255 - .1) / .5, (20 / 255 - .2) / .25, (10 / 255 - .3) / .125],
                               rtol=1e-5)


@pytest.mark.parametrize("order", ["BGR", "RGB"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_normalize_images_matches_the_formula_in_every_layout(order, channels_last):
    g = torch.Generator().manual_seed(0)
    hwc = torch.randint(0, 256, (2, 5, 7, 3), generator=g, dtype=torch.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    ref = hwc.permute(0, 3, 1, 2).double()
    if order == "RGB":
        ref = ref.flip(1)
    ref = (ref / 255 - torch.tensor(mean, dtype=torch.float64).view(3, 1, 1)) / torch.tensor(std).double().view(3, 1, 1)
    for x in (hwc.permute(0, 3, 1, 2), hwc.permute(0, 3, 1, 2).contiguous()):  # channels-last view and NCHW
        out = normalize_images(x, order, mean, std, channels_last)
        assert out.dtype == torch.float32 and out.shape == (2, 3, 5, 7)
        assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        torch.testing.assert_close(out.double(), ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(normalize_images(x[0], order, mean, std), out[0])  # (3, H, W) too
    with pytest.raises(ValueError, match="uint8"):
        normalize_images(x.float(), order, mean, std)


def test_collate_keeps_channels_last_images_and_batch_input_checks_the_convention():
    lab = _square_label(30, 40)
    img = np.random.default_rng(0).integers(0, 256, lab.shape + (3,), dtype=np.uint8)
    samples = [EvalTransform((16, 16))(img, lab), EvalTransform((16, 16))(img[::-1].copy(), lab[::-1].copy())]
    batch = collate_samples(samples)
    assert batch["image"].is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(batch["image"], torch.stack([s["image"].contiguous() for s in samples]))
    assert batch_input(batch).is_contiguous() and batch_input(batch, channels_last=True).is_contiguous(
        memory_format=torch.channels_last)
    with pytest.raises(ValueError, match=r"meta\['pixels'\]"):
        batch_input({"image": batch["image"], "meta": [{}, {}]})
    samples[1]["meta"]["pixels"]["channel_order"] = "RGB"
    with pytest.raises(ValueError, match="different pixel conventions"):
        batch_input(collate_samples(samples))
    with pytest.raises(ValueError, match="collate_samples"):  # torch's default collate: meta is a dict of lists
        batch_input(torch.utils.data.default_collate([EvalTransform((16, 16))(img, lab)] * 2))
    float_input = torch.randn(2, 3, 16, 16)
    assert batch_input({"image": float_input}) is float_input  # already network input: left alone


def test_random_parameters_stay_in_range_and_jitter_runs():
    t = TrainTransform((48, 48), SPEC, scale_range=(0.75, 1.25), rotation=30, rotation_prob=0.5, color_jitter=0.4)
    rng = np.random.default_rng(0)
    draws = [t.sample_params(rng) for _ in range(400)]
    s, r, f = map(np.array, zip(*draws))
    assert s.min() >= 0.75 and s.max() <= 1.25 and np.abs(r).max() <= 30
    assert 0.35 < (r == 0).mean() < 0.65 and 0.35 < f.mean() < 0.65
    official = TrainTransform((48, 48), SPEC, rotation=30, sampling="normal")
    r2 = np.array([official.sample_params(rng)[1] for _ in range(400)])
    assert np.abs(r2).max() <= 60 and np.abs(r2).max() > 30
    lab = _square_label()
    out = t(np.full(lab.shape + (3,), 128, np.uint8), lab, np.random.default_rng(1))
    plain = TrainTransform((48, 48), SPEC, scale_range=(0.75, 1.25), rotation=30, rotation_prob=0.5)
    ref = plain(np.full(lab.shape + (3,), 128, np.uint8), lab, np.random.default_rng(1))
    assert torch.equal(out["label"], ref["label"])  # jitter draws after the geometry: same warp
    assert not torch.equal(out["image"], ref["image"])


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="channel_order"):
        EvalTransform((8, 8), "BRG")
    with pytest.raises(ValueError, match="sampling"):
        TrainTransform((8, 8), SPEC, sampling="beta")
