"""RoI tanh warping: the curve against its definition written out here, the warped crop's geometry against an
independent computation of where an image point lands, the paste-back that undoes it, and the warp carried from the
config through the checkpoint's meta to the parser and the evaluator."""
import math

import numpy as np
import pytest
import torch

from dml_csr import inference
from dml_csr.data import tanh_warp as tw
from dml_csr.data.labels import get_spec
from dml_csr.data.transforms import EvalTransform, TrainTransform, sample_affine, warp_keypoints


def _curve(c: float, k: float) -> float:
    """FaRL's piecewise curve, one coordinate: linear within 1 - k of the centre, tanh beyond."""
    if k == 0 or abs(c) <= 1 - k:
        return c
    return math.copysign(1 - k + k * math.tanh((abs(c) - 1 + k) / k), c)


@pytest.mark.parametrize("k", [0.0, 0.3, 0.8, 1.0])
def test_the_curve_is_the_definition_and_its_inverse_undoes_it(k):
    cs = np.array([-50.0, -3.0, -1.0, -0.85, -0.2, 0.0, 0.1, 0.5, 0.79, 0.9, 1.0, 2.5, 1e6])
    u = tw.warp_coords(cs, k)
    assert np.allclose(u, [_curve(c, k) for c in cs], atol=1e-12)
    inside = np.abs(cs) < 3
    if k:  # the whole plane inside (tanh rounds to 1 only far out), the order kept
        assert np.all(np.abs(u) <= 1) and np.all(np.abs(u[inside]) < 1) and np.all(np.diff(u[inside]) > 0)
    assert np.allclose(tw.unwarp_coords(u[inside], k), cs[inside], atol=1e-9)
    us = np.linspace(-0.999, 0.999, 101)
    assert np.allclose(tw.warp_coords(tw.unwarp_coords(us, k), k), us, atol=1e-9)


def test_the_curve_bends_with_slope_one_at_the_knee():
    k, knee, h = 0.8, 0.2, 1e-6
    for x in (knee - 10 * h, knee + 10 * h):
        slope = (tw.warp_coords(np.array([x + h]), k) - tw.warp_coords(np.array([x - h]), k))[0] / (2 * h)
        assert slope == pytest.approx(1.0, abs=1e-4)


def test_a_factor_outside_zero_to_one_is_one_line():
    for bad in (-0.1, 1.5, float("nan"), "x"):
        with pytest.raises(ValueError, match=r"tanh_warp = .*; expected a tanh warp factor from 0 \(none\) to 1"):
            EvalTransform((32, 48), tanh_warp=bad)


def _dot_image(h, w, x, y):
    img = np.zeros((h, w, 3), np.uint8)
    img[y - 1:y + 2, x - 1:x + 2] = 255
    return img


@pytest.mark.parametrize("k", [0.5, 0.8])
def test_an_image_point_lands_where_the_affine_then_the_curve_send_it(k):
    """A bright 3x3 dot at a known image point: its centroid in the warped (48 x 64, non-square) input lies where
    the crop's affine, then the curve per axis (pixel centres at (q + 0.5) / n * 2 - 1), put it: computed here."""
    t = EvalTransform((48, 64), "BGR", (0, 0, 0), (1, 1, 1), tanh_warp=k)
    for x, y in ((20, 30), (70, 12), (50, 75)):
        s = t(_dot_image(90, 80, x, y))
        m = sample_affine(s["meta"])
        qx, qy = m @ np.array([x, y, 1.0])
        ex = (_curve((qx + 0.5) / 64 * 2 - 1, k) + 1) / 2 * 64 - 0.5
        ey = (_curve((qy + 0.5) / 48 * 2 - 1, k) + 1) / 2 * 48 - 0.5
        weight = s["image"][0].numpy().astype(np.float64)
        ys, xs = np.mgrid[0:48, 0:64]
        cx, cy = (weight * xs).sum() / weight.sum(), (weight * ys).sum() / weight.sum()
        assert abs(cx - ex) < 0.35 and abs(cy - ey) < 0.35, (x, y, cx, cy, ex, ey)
        # keypoints follow the same map
        assert np.allclose(warp_keypoints(np.array([[x, y]], np.float32), s["meta"])[0], (ex, ey), atol=1e-4)
    assert s["meta"]["tanh_warp"] == k


def _blocks(h, w, seed):
    rng = np.random.default_rng(seed)
    lab = np.zeros((h, w), np.uint8)
    for c in range(1, 5):
        y, x = rng.integers(0, h - 20), rng.integers(0, w - 20)
        lab[y:y + 20, x:x + 20] = c
    return lab


def test_the_paste_back_undoes_the_warp_and_needs_it():
    """Labels through the warped crop and back (nearest) are the image's own but for a pixel's worth along the
    block edges, more so in the squeezed rim; pasted back as if unwarped, they are not."""
    lab = _blocks(90, 70, 0)
    t = EvalTransform((64, 48), "BGR", (0, 0, 0), (1, 1, 1), tanh_warp=0.8)
    s = t(np.stack([lab * 50] * 3, -1).astype(np.uint8), lab)
    inverse = inference.inverse_of(s["meta"])
    back = inference.paste_back(s["label"], inverse, (90, 70), mode="nearest", tanh_warp=0.8)
    assert (back == lab).mean() > 0.94, (back == lab).mean()
    unwarped = (inference.paste_back(s["label"], inverse, (90, 70), mode="nearest") == lab).mean()
    assert unwarped < 0.85, unwarped
    # scores go back bilinearly through the same map, a window at a time as the photo pipeline pastes
    onehot = torch.nn.functional.one_hot(s["label"].long().clamp_max(4), 5).permute(2, 0, 1).float()
    full = inference.paste_back(onehot, inverse, (90, 70), tanh_warp=0.8)
    part = inference.paste_back(onehot, inverse, (90, 70), tanh_warp=0.8, window=(10, 20, 50, 70))
    assert np.allclose(part, full[:, 20:70, 10:50]) and (full.argmax(0) == lab).mean() > 0.94


def test_training_crops_warp_image_and_label_alike():
    """Random scale, rotation and flip with the warp: every labelled pixel of the crop has its class's colour."""
    spec = get_spec("synthetic")
    lab = _blocks(80, 100, 1)
    colours = np.array([(0, 0, 0), (250, 0, 0), (0, 250, 0), (0, 0, 250), (250, 250, 0)], np.uint8)
    t = TrainTransform((40, 56), spec, "BGR", (0, 0, 0), (1, 1, 1), flip=False, tanh_warp=0.8)
    for seed in range(3):
        s = t(colours[lab], lab, np.random.default_rng(seed))
        img, out = s["image"].permute(1, 2, 0).numpy(), s["label"].numpy()
        seen = out != 255
        agree = (np.abs(img.astype(int) - colours[np.where(seen, out, 0)].astype(int)).max(-1) < 60)[seen]
        assert agree.mean() > 0.97 and seen.mean() > 0.3, (seed, agree.mean(), seen.mean())


# --------------------------------------------------------------------------- from the config to the parser and scores
def test_the_config_bounds_the_factor_and_the_meta_carries_it():
    from dml_csr.checkpoint import make_meta
    from dml_csr.config import ConfigError, load_config
    from dml_csr.data.dataset import build_transform

    base = ["data.dataset=synthetic", "data.root=unused"]
    with pytest.raises(ConfigError, match=r"'data.tanh_warp' = 1.5 is out of range; expected between 0 and 1"):
        load_config(None, base + ["data.tanh_warp=1.5"])
    cfg = load_config(None, base + ["data.tanh_warp=0.8"])
    assert make_meta(cfg)["tanh_warp"] == 0.8 and "tanh_warp" not in make_meta(load_config(None, base))
    assert build_transform(cfg, True).tanh_warp == build_transform(cfg, False).tanh_warp == 0.8
    meta = {**make_meta(cfg), "tanh_warp": 2}
    with pytest.raises(ValueError, match=r"'tanh_warp' = 2; expected a RoI tanh warp factor from 0 \(none\) to 1"):
        inference.input_transform(meta)


def test_a_warped_model_is_parsed_and_scored_through_its_own_warp(tmp_path, tiny_synthetic, caplog):
    """Training writes the factor into the checkpoint; the evaluator and FaceParser take it from there (not from the
    config), so a model is always pasted back through the crop it was trained on."""
    import json
    import os

    import cv2
    from helpers.photos import PHOTO
    from helpers.scripts import run_script
    from helpers.tiny_checkpoint import write_tiny_checkpoint

    from dml_csr.photos.parser import FaceParser

    warped = write_tiny_checkpoint(str(tmp_path / "warped.pt"), overrides=("data.tanh_warp=0.8",))
    plain = write_tiny_checkpoint(str(tmp_path / "plain.pt"))
    parser = FaceParser.from_checkpoint(warped, detector=None)
    assert parser.transform.tanh_warp == 0.8
    photo = cv2.imread(PHOTO)
    a = parser(photo, channel_order="BGR")
    b = FaceParser.from_checkpoint(plain, detector=None)(photo, channel_order="BGR")
    assert a.shape == b.shape == photo.shape[:2] and (a != b).mean() > 0.01  # same weights, another crop
    cfg = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "synthetic_dml_csr_tiny.yaml")
    out = tmp_path / "scores"
    r = run_script("evaluate", "--config", cfg, "--set", f"data.root={tiny_synthetic}", "data.input_size=[64,64]",
                   "data.workers=0", "--checkpoint", warped, "--split", "test", "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "trained on crops with RoI tanh warp 0.8, the config says data.tanh_warp=0; using the checkpoint's" in \
        caplog.text
    protocol = json.load(open(out / "metrics.json"))["protocol"]
    assert protocol["input_convention"]["tanh_warp"] == 0.8
    assert "mapped back with the inverse evaluation affine and the RoI tanh warp (factor 0.8), nearest" in \
        protocol["resolution"]["scored_at"]


def test_training_on_warped_crops_records_the_factor_in_its_checkpoints(micro_cfg):
    import os

    from dml_csr.checkpoint import load_model
    from dml_csr.training.trainer import train

    cfg = micro_cfg("train.epochs=1", "train.iters_per_epoch=1", "data.tanh_warp=0.8", "name=warped")
    train(cfg, progress=False)
    _, meta = load_model(os.path.join(cfg.run_dir, "best.pt"))
    assert meta["tanh_warp"] == 0.8


# ------------------------------------------------------------------- every paste path goes back through the warp
COLOURS = np.array([(0, 0, 0), (250, 0, 0), (0, 250, 0), (0, 0, 250), (250, 250, 0)], np.uint8)


class _ColourOracle(torch.nn.Module):
    """Reads each pixel's class off its colour (the network input, normalised with mean 0 and std 1)."""

    def forward(self, x):
        d = ((x[:, None] - torch.tensor(COLOURS / 255.0, dtype=x.dtype)[None, :, :, None, None]) ** 2).sum(2)
        return {"parsing": -20 * d}


class _Split:
    """Colour-coded samples through a warped evaluation crop, as a loader and its dataset give them."""

    def __init__(self, labels, input_size, k):
        self.labels, self.names = labels, [f"s{i}" for i in range(len(labels))]
        t = EvalTransform(input_size, "BGR", (0, 0, 0), (1, 1, 1), tanh_warp=k)
        samples = [t(COLOURS[lab], lab) for lab in labels]
        self.batch = {"image": torch.stack([s["image"] for s in samples]), "meta": [s["meta"] for s in samples],
                      "name": self.names, "label": torch.stack([s["label"] for s in samples])}

    def load_label(self, i):
        return self.labels[i]


@pytest.mark.parametrize("paste", ["nearest", "smooth", "logits"])
def test_the_evaluator_scores_warped_predictions_on_the_original_labels(paste):
    from dml_csr.evaluation.protocol import evaluate

    labels = [_blocks(90, 70, 2), _blocks(60, 100, 3)]
    split = _Split(labels, (64, 48), 0.8)
    scores = evaluate(_ColourOracle(), [split.batch], split, 5, device=torch.device("cpu"), paste=paste).compute()
    assert scores["pixel_accuracy"] > 0.95, scores["pixel_accuracy"]


def test_whole_photos_and_face_crops_go_back_through_the_warp_and_faces_cover_their_own_crop():
    from dml_csr.photos import pipeline
    from dml_csr.photos.alignment import box_affine

    lab = _blocks(120, 90, 4)
    meta = {"input_size": [64, 48], "channel_order": "BGR", "mean": [0, 0, 0], "std": [1, 1, 1], "tanh_warp": 0.8}
    predictor = pipeline.Predictor(_ColourOracle(), meta)
    assert predictor.transform.tanh_warp == 0.8
    for paste in ("smooth", "nearest"):
        (parse,) = pipeline.parse_whole(predictor, [COLOURS[lab]], paste)
        assert (parse.labels == lab).mean() > 0.95, paste
    # a rotated face crop on stripes: its labels come back through the warp (53 % of them without it), over the
    # region its affine covers (not the box around it, which the warped crop, holding the whole photo, would fill)
    lab = np.zeros((120, 90), np.uint8)
    for i in range(0, 90, 6):
        lab[:, i:i + 6] = 1 + (i // 6) % 4
    lab[::7] = 0
    m = box_affine((25, 30, 40, 40), (64, 48), 0.1)
    c, s = np.cos(0.5), np.sin(0.5)
    rot = np.array([[c, -s, 32 - 32 * c + 24 * s], [s, c, 24 - 32 * s - 24 * c]])  # about the crop's centre
    m = rot @ np.vstack([m, [0, 0, 1]])
    (probs, _), = predictor.predict([COLOURS[lab]], [m])
    warped, _ = pipeline.paste_faces(lab.shape, [m], [probs], 5, (64, 48), tanh_warp=0.8)
    ones = np.zeros((5, 64, 48), np.float32)
    ones[1] = 1  # class 1 wherever the crop reaches
    covered = [pipeline.paste_faces(lab.shape, [m], [ones], 5, (64, 48), tanh_warp=k)[0] == 1 for k in (0.0, 0.8)]
    assert (covered[0] == covered[1]).all() and 0.05 < covered[0].mean() < 0.5
    assert (warped[covered[0]] == lab[covered[0]]).mean() > 0.9  # 0.94 here


def test_large_windows_are_pasted_a_tile_at_a_time_with_the_same_answer(monkeypatch):
    lab = _blocks(90, 70, 5)
    s = EvalTransform((64, 48), "BGR", (0, 0, 0), (1, 1, 1), tanh_warp=0.8)(COLOURS[lab], lab)
    inverse = inference.inverse_of(s["meta"])
    whole = inference.paste_back(s["label"], inverse, (90, 70), mode="nearest", tanh_warp=0.8)
    monkeypatch.setattr(inference, "REMAP_TILE", 16)
    assert (inference.paste_back(s["label"], inverse, (90, 70), mode="nearest", tanh_warp=0.8) == whole).all()
    with pytest.raises(ValueError, match=r"tanh_warp = 1.5; expected a tanh warp factor from 0 \(none\) to 1"):
        inference.paste_back(s["label"], inverse, (90, 70), tanh_warp=1.5)
