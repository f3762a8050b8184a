"""Training on faces framed by their own landmarks (``data.align: landmarks``): each sample through the similarity of
its five points onto a template (the root's, or FaRL's five points), the random scale, rotation and flip on top;
checked against OpenCV's warp of matrices built here, against facer's constants for FaRL's template, and through a
training whose checkpoint the evaluator then frames the same way without being told."""
from __future__ import annotations

import json
import logging
import os
import shutil

import cv2
import numpy as np
import pytest
from helpers.scripts import run_script

from dml_csr import FaceParser
from dml_csr.checkpoint import load_checkpoint
from dml_csr.config import ConfigError
from dml_csr.data.dataset import BadSampleError, build_dataset
from dml_csr.data.face_template import FARL_TEMPLATE, write_template
from dml_csr.data.labels import get_spec
from dml_csr.data.synthetic import render_face, write_dataset
from dml_csr.data.transforms import EvalTransform, TrainTransform, box_to_center_scale, get_affine_transform
from dml_csr.photos.faces import Face
from dml_csr.training.trainer import train

SIZE = 64
TEMPLATE = [[0.62, 0.44], [0.38, 0.44], [0.5, 0.56], [0.58, 0.7], [0.42, 0.7]]  # subject's left eye first


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = str(tmp_path_factory.mktemp("aligned"))
    write_dataset(r, {"train": 8, "val": 2, "test": 3}, seed=5, size=(72, 56))  # not square
    write_template(r, {"kind": "template", "points": TEMPLATE, "input_size": [SIZE, SIZE]})
    return r


def _landmarks(root, split, name):
    return np.loadtxt(os.path.join(root, split, "landmarks", f"{name}.txt"), skiprows=1)


def _similarity(src, dst):
    """Least squares over [a -b tx; b a ty], written out."""
    rows = [[x, -y, 1, 0] for x, y in src] + [[y, x, 0, 1] for x, y in src]
    a, b, tx, ty = np.linalg.lstsq(np.array(rows), np.concatenate([dst[:, 0], dst[:, 1]]), rcond=None)[0]
    return np.array([[a, -b, tx], [b, a, ty]])


def test_farls_template_is_facers_standard_face_on_its_512_grid():
    """facer's get_face_align_matrix: std = pts / 256 - 1, target = (std + 1) * (512 - 1) / 2; its list starts with
    the image-left eye (the subject's right), ours with the subject's left."""
    facer = np.array([196.0, 226.0, 316.0, 226.0, 256.0, 286.0, 220.0, 360.4, 292.0, 360.4]).reshape(5, 2)
    target = (facer / 256.0 - 1 + 1) * 511 / 2
    ours = np.array(FARL_TEMPLATE["points"]) * 512
    np.testing.assert_allclose(ours, target[[1, 0, 2, 4, 3]], atol=1e-3)
    assert FARL_TEMPLATE["input_size"] == [512, 512]


@pytest.mark.parametrize("scale,rotation,flip", [(1.3, 0.0, False), (0.8, 25.0, False), (1.1, 0.0, True),
                                                 (1.0, -40.0, False)])
def test_a_random_draw_around_a_framing_is_the_whole_image_crops_draw(scale, rotation, flip):
    """Given the whole image's own crop as the framing, the augmented sample is the whole-image path's with the same
    draw (scale, rotation; a flip without rotation): one meaning of the random parameters in both framings."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (50, 70, 3), np.uint8)
    label = rng.integers(0, 11, (50, 70), np.uint8)
    t = TrainTransform((SIZE, SIZE), get_spec("helen"), flip=True)
    t.sample_params = lambda _: (scale, rotation, flip)
    center, box = box_to_center_scale(50, 70, (SIZE, SIZE))
    framing = get_affine_transform(center, box, 0.0, (SIZE, SIZE))
    whole = t(image, label, rng)
    framed = t(image, label, rng, affine=framing)
    assert np.abs(np.asarray(framed["meta"]["affine"]) - _whole_matrix(center, box, scale, rotation, flip)).max() < 1e-3
    for key in ("image", "label"):
        differ = (whole[key].numpy().astype(int) != framed[key].numpy().astype(int)).mean()
        assert differ < 0.01, key  # pixels exactly on a rounding boundary of the two float paths may differ


def _whole_matrix(center, box, scale, rotation, flip):
    """The authors' crop matrix of the scaled, rotated box; a flip samples the mirrored source."""
    m = get_affine_transform(center, box * scale, rotation, (SIZE, SIZE))
    if flip:
        m = m.copy()
        m[:, 2] += m[:, 0] * 69
        m[:, 0] = -m[:, 0]
    return m


def test_eval_samples_are_each_face_warped_onto_the_template(root, micro_cfg):
    cfg = micro_cfg(f"data.root={root}", "data.align=landmarks", "data.keypoints=true")
    ds = build_dataset(cfg, "test", train=False)
    dst = np.array(TEMPLATE) * SIZE
    for i, name in enumerate(ds.names):
        sample = ds[i]
        image = cv2.imread(os.path.join(root, "test", "images", f"{name}.jpg"))
        label = cv2.imread(os.path.join(root, "test", "labels", f"{name}.png"), cv2.IMREAD_UNCHANGED)
        m = _similarity(_landmarks(root, "test", name), dst)
        np.testing.assert_allclose(sample["meta"]["affine"], m, atol=1e-6)
        want = cv2.warpAffine(image, m, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
        assert np.abs(sample["image"].permute(1, 2, 0).numpy().astype(int) - want).max() <= 1
        want = cv2.warpAffine(label, m, (SIZE, SIZE), flags=cv2.INTER_NEAREST, borderValue=255)
        assert (sample["label"].numpy() == want).mean() > 0.999
        # the landmarks land where the least-squares fit puts them: near the template
        pts = sample["keypoints"].numpy()
        np.testing.assert_allclose(pts, _landmarks(root, "test", name) @ m[:, :2].T + m[:, 2], atol=1e-3)


def test_training_samples_are_the_template_framing_under_the_random_draw(root, micro_cfg):
    """A face's eye-to-eye vector in the training input is the template framing's, shrunk by the drawn scale and
    turned by the drawn rotation (counter-clockwise on screen, so its angle in y-down pixels falls)."""
    cfg = micro_cfg(f"data.root={root}", "data.align=landmarks", "data.keypoints=true", "data.rotation=30",
                    "data.scale_range=[0.7, 1.3]")
    ds = build_dataset(cfg, "train", train=True)
    dst = np.array(TEMPLATE) * SIZE
    for seed in range(4):
        sample = ds[(seed % len(ds), seed)]
        name, meta = sample["name"], sample["meta"]
        framed = _landmarks(root, "train", name) @ _similarity(_landmarks(root, "train", name), dst)[:, :2].T
        s = np.random.default_rng(seed)  # the dataset draws (scale, rotation) first from the sample's seed
        scale, rot = s.uniform(0.7, 1.3), s.uniform(-30, 30)
        assert meta["rotation"] == pytest.approx(rot)
        eyes = sample["keypoints"].numpy()
        got, want = eyes[0] - eyes[1], framed[0] - framed[1]
        assert np.linalg.norm(got) == pytest.approx(np.linalg.norm(want) / scale, rel=1e-4)
        turned = np.degrees(np.arctan2(got[1], got[0]) - np.arctan2(want[1], want[0]))
        assert (turned + rot + 180) % 360 - 180 == pytest.approx(0, abs=1e-3)


def test_a_run_records_the_framing_and_the_evaluator_follows_it(root, micro_cfg, tmp_path, caplog):
    cfg = micro_cfg(f"data.root={root}", "data.align=landmarks", "data.template=farl", "train.epochs=1",
                    f"output_dir={tmp_path}", "name=aligned")
    train(cfg, progress=False)
    ckpt = os.path.join(cfg.run_dir, "best.pt")
    crop = load_checkpoint(ckpt)["meta"]["crop"]
    assert crop["align"] == "landmarks" and crop["points"] == FARL_TEMPLATE["points"]
    r = run_script("evaluate", "--config", os.path.join(cfg.run_dir, "config.yaml"), "--checkpoint", ckpt,
                   "--no-progress")
    assert r.returncode == 0, r.stderr
    rec = json.load(open(os.path.join(cfg.run_dir, "eval_test_landmarks", "metrics.json")))
    assert rec["protocol"]["align"] == "landmarks" and rec["protocol"]["alignment"]["template"] == crop["points"]
    r = run_script("evaluate", "--config", os.path.join(cfg.run_dir, "config.yaml"), "--checkpoint", ckpt,
                   "--no-progress", "--align", "whole")
    assert r.returncode == 0, r.stderr
    whole = json.load(open(os.path.join(cfg.run_dir, "eval_test", "metrics.json")))
    assert whole["protocol"]["align"] == "whole" and whole["confusion"] != rec["confusion"]
    # in Python: a whole image is not what this model saw, said once; a face given with its landmarks is
    parser, image = FaceParser.from_checkpoint(ckpt), np.zeros((40, 40, 3), np.uint8)
    with caplog.at_level(logging.WARNING, logger="dml_csr.photos.pipeline"):
        parser(image), parser(image)
        parser.parse(image, faces=[Face((5, 5, 30, 30), np.array(TEMPLATE) * 40)])
    assert sum("framed by their landmarks" in r.getMessage() for r in caplog.records) == 1


def test_what_cannot_frame_is_named_in_one_line(root, micro_cfg, tmp_path):
    with pytest.raises(ConfigError, match="data.template = farl .* with data.align=landmarks"):
        micro_cfg(f"data.root={root}", "data.template=farl")
    bare = str(tmp_path / "bare")
    shutil.copytree(root, bare)
    os.remove(os.path.join(bare, "face_template.json"))
    with pytest.raises(ValueError, match=r"face_template\.json' does not hold one; run scripts/measure_template\.py"):
        build_dataset(micro_cfg(f"data.root={bare}", "data.align=landmarks"), "train", train=True)
    with pytest.raises(ValueError, match=r"data.template=farl is FaRL's square framing .* \[64, 48\] is not square"):
        build_dataset(micro_cfg(f"data.root={bare}", "data.align=landmarks", "data.template=farl",
                                "data.input_size=[64, 48]"), "val", train=False)
    ds = build_dataset(micro_cfg(f"data.root={bare}", "data.align=landmarks", "data.template=farl"), "val",
                       train=False)
    os.remove(os.path.join(bare, "val", "landmarks", f"{ds.names[0]}.txt"))
    with pytest.raises(BadSampleError, match=r"landmark file '.*\.txt' is missing \(--align landmarks and "
                                             r"data\.align=landmarks"):
        ds[0]
    with open(os.path.join(bare, "val", "landmarks", f"{ds.names[1]}.txt"), "w") as f:
        f.write("5\n" + "3 4\n" * 5)
    with pytest.raises(BadSampleError, match="landmark file .* landmarks coincide"):
        ds[1]
    with open(os.path.join(bare, "val", "landmarks", f"{ds.names[1]}.txt"), "w") as f:
        f.write("5\n1 2\nnan 4\n5 6\n7 8\n9 10\n")
    with pytest.raises(BadSampleError, match="landmark file .* holds a coordinate that is not a finite number"):
        ds[1]
    with open(os.path.join(bare, "val", "landmarks", f"{ds.names[1]}.txt"), "w") as f:
        f.write("1 2\n3 4\n")  # no count line
    with pytest.raises(BadSampleError, match="landmark file .* is malformed; expected a count line"):
        ds[1]
    assert isinstance(ds.transform, EvalTransform)


def test_int8_calibration_frames_faces_as_the_model_was_trained(root):
    """Calibration and agreement images of a model trained with data.align=landmarks are its framing (the split's
    landmark files; the rendered faces' keypoints), not whole-image crops."""
    from dml_csr.photos.quantize import calibration_batch

    meta = {"input_size": [SIZE, SIZE], "channel_order": "BGR", "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25],
            "crop": {"kind": "template", "points": TEMPLATE, "input_size": [SIZE, SIZE], "align": "landmarks"}}
    got = calibration_batch(root, "test", meta, 3)
    names = sorted(os.listdir(os.path.join(root, "test", "images")))
    for x, name in zip(got, names):  # evenly spaced: all three test samples, in the list's order
        image = cv2.imread(os.path.join(root, "test", "images", name))
        m = _similarity(_landmarks(root, "test", name[:-4]), np.array(TEMPLATE) * SIZE)
        want = (cv2.warpAffine(image, m, (SIZE, SIZE), flags=cv2.INTER_LINEAR) / 255.0 - 0.5) / 0.25
        assert np.abs(x.transpose(1, 2, 0) - want).max() < 4 / 255 / 0.25 + 1e-6  # OpenCV's fixed-point bilinear
    image, _, points = render_face(7, size=(2 * SIZE, 2 * SIZE))
    m = _similarity(points, np.array(TEMPLATE) * SIZE)
    want = (cv2.warpAffine(image, m, (SIZE, SIZE), flags=cv2.INTER_LINEAR) / 255.0 - 0.5) / 0.25
    rendered = calibration_batch("synthetic", "train", meta, 1, seed=7)[0]
    assert np.abs(rendered.transpose(1, 2, 0) - want).max() < 4 / 255 / 0.25 + 1e-6
    measured = {k: v for k, v in meta["crop"].items() if k != "align"}  # a template measured on whole-image crops
    whole = calibration_batch(root, "test", {**meta, "crop": measured}, 3)
    assert np.abs(whole - got).mean() > 0.1  # keeps the whole-image crop
