"""The scoring switches behind other papers' numbers, each against a brute-force computation written out here:
``--score-at input`` (the ground truth warped onto the network input, nearest: SegFace's way) and ``--align
landmarks`` (each face through the similarity of its own five landmarks onto the checkpoint's template: FaRL's
framing without the tanh warp); both recorded in metrics.json and named in the printed summary."""
from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers.scripts import run_script
from helpers.tiny_checkpoint import write_config, write_tiny_checkpoint

from dml_csr.checkpoint import load_checkpoint, load_model, save_checkpoint
from dml_csr.data.dataset import read_split_list
from dml_csr.data.synthetic import write_dataset

SIZE = 64  # the tiny checkpoint's square input
# a landmark template (fractions of the input), the subject's left eye first: on the image's right
TEMPLATE = [[0.63, 0.42], [0.37, 0.42], [0.5, 0.56], [0.6, 0.7], [0.4, 0.7]]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("framing")
    root = str(tmp / "data")
    write_dataset(root, {"test": 3}, seed=4, size=(56, 72))  # not square: the letterbox of the crop matters
    cfg = write_config(str(tmp / "tiny.yaml"), root)
    ckpt = write_tiny_checkpoint(str(tmp / "run" / "best.pt"))
    templated = str(tmp / "run" / "templated.pt")
    c = load_checkpoint(ckpt)
    save_checkpoint(templated, c["model"], {**c["meta"], "crop": {"kind": "template", "points": TEMPLATE,
                                                                   "input_size": [SIZE, SIZE]}}, c["config"])
    return tmp, root, cfg, ckpt, templated


def _predict(model, image_bgr, affine):
    """The model's argmax at the input: the image warped (bilinear, black outside), BGR, (x / 255 - mean) / std."""
    warped = cv2.warpAffine(image_bgr, affine, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    x = torch.from_numpy(((warped / 255.0 - mean) / std).transpose(2, 0, 1)[None].astype(np.float32))
    with torch.no_grad():
        logits = model(x)["parsing"]
    logits = F.interpolate(logits, size=(SIZE, SIZE), mode="bilinear", align_corners=True)
    return logits.argmax(1)[0].numpy().astype(np.uint8)


def _confusion(pairs, n=11):
    mat = np.zeros((n, n), np.int64)
    for pred, gt in pairs:
        keep = gt != 255
        mat += np.bincount(gt[keep].astype(np.int64) * n + pred[keep], minlength=n * n).reshape(n, n)
    return mat


def _mean_f1(mat):
    tp = np.diag(mat).astype(float)
    denom = 2 * tp + (mat.sum(0) - tp) + (mat.sum(1) - tp)
    f1 = np.array([2 * t / d if d else np.nan for t, d in zip(tp, denom)])
    return np.nanmean(f1[1:])


def _samples(root):
    for name, image_path, label_path in read_split_list(root, "test"):
        lm = os.path.join(root, "test", "landmarks", f"{name}.txt")
        yield cv2.imread(image_path), cv2.imread(label_path, cv2.IMREAD_UNCHANGED), np.loadtxt(lm, skiprows=1)


def _evaluate(cfg, ckpt, out, *switches):
    r = run_script("evaluate", "--config", cfg, "--checkpoint", ckpt, "--split", "test", "--out", str(out),
                   "--no-progress", *switches)
    assert r.returncode == 0, r.stderr
    return json.load(open(out / "metrics.json")), r.stdout


def test_score_at_input_scores_the_ground_truth_warped_onto_the_input(setup):
    tmp, root, cfg, ckpt, _ = setup
    rec, printed = _evaluate(cfg, ckpt, tmp / "input", "--score-at", "input")
    model, _ = load_model(ckpt)
    pairs = []
    for image, gt, _ in _samples(root):
        h, w = gt.shape
        k = SIZE / max(w - 1, h - 1)  # the whole image, its longer side onto the input, centred, aspect kept
        affine = np.array([[k, 0, SIZE / 2 - k * (w - 1) / 2], [0, k, SIZE / 2 - k * (h - 1) / 2]])
        gt_in = cv2.warpAffine(gt, affine, (SIZE, SIZE), flags=cv2.INTER_NEAREST, borderValue=255)
        pairs.append((_predict(model, image, affine), gt_in))
    mat = _confusion(pairs)
    assert mat.sum() < 3 * SIZE * SIZE  # the letterbox is ignored
    assert rec["confusion"] == mat.tolist()
    assert rec["scores"]["mean_f1"] == pytest.approx(_mean_f1(mat))
    proto = rec["protocol"]
    assert proto["score_at"] == "input" and proto["align"] == "whole" and "network input" in proto["resolution"][
        "scored_at"]
    assert "--score-at input, --align whole" in printed


def test_align_landmarks_frames_each_face_by_its_own_five_points(setup):
    tmp, root, cfg, _, templated = setup
    rec, printed = _evaluate(cfg, templated, tmp / "landmarks", "--align", "landmarks")
    model, _ = load_model(templated)
    dst = np.array(TEMPLATE) * SIZE
    pairs = []
    for image, gt, points in _samples(root):
        # the least-squares similarity [a -b tx; b a ty] from the sample's five points onto the template
        rows = [[x, -y, 1, 0] for x, y in points] + [[y, x, 0, 1] for x, y in points]
        a, b, tx, ty = np.linalg.lstsq(np.array(rows), np.concatenate([dst[:, 0], dst[:, 1]]), rcond=None)[0]
        affine = np.array([[a, -b, tx], [b, a, ty]])
        pred = _predict(model, image, affine)
        back = cv2.warpAffine(pred, cv2.invertAffineTransform(affine), gt.shape[::-1], flags=cv2.INTER_NEAREST,
                              borderValue=0)  # outside the crop: background, as the authors' paste-back
        pairs.append((back, gt))
    mat = _confusion(pairs)
    assert mat.sum() == sum(int((gt != 255).sum()) for _, gt, _ in _samples(root))
    assert rec["confusion"] == mat.tolist()
    assert rec["scores"]["mean_f1"] == pytest.approx(_mean_f1(mat))
    assert rec["protocol"]["align"] == "landmarks" and rec["protocol"]["alignment"]["template"] == TEMPLATE
    assert "--align landmarks" in printed
    whole, _ = _evaluate(cfg, templated, tmp / "whole")
    assert whole["confusion"] != rec["confusion"]  # the framing changes what is scored


def test_the_switches_name_their_folder_and_refuse_what_cannot_work(setup):
    tmp, root, cfg, ckpt, templated = setup
    r = run_script("evaluate", "--config", cfg, "--checkpoint", ckpt, "--align", "landmarks", "--no-progress",
                   "--out", str(tmp / "x"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "records the whole-image crop" in r.stderr and ckpt in r.stderr
    r = run_script("evaluate", "--config", cfg, "--checkpoint", templated, "--split", "test", "--no-progress",
                   "--score-at", "input", "--align", "landmarks")
    assert r.returncode == 0, r.stderr
    assert os.path.isfile(os.path.join(os.path.dirname(templated), "eval_test_input_landmarks", "metrics.json"))
    r = run_script("evaluate", "--config", cfg, "--checkpoint", templated, "--score-at", "input", "--paste", "smooth")
    assert r.returncode == 2 and "drop --paste" in r.stderr.strip().splitlines()[-1]  # argparse's usage, then it
    os.rename(os.path.join(root, "test", "landmarks"), os.path.join(root, "test", "moved"))
    try:
        r = run_script("evaluate", "--config", cfg, "--checkpoint", templated, "--align", "landmarks",
                       "--no-progress", "--out", str(tmp / "y"))
    finally:
        os.rename(os.path.join(root, "test", "moved"), os.path.join(root, "test", "landmarks"))
    assert r.returncode == 2 and "landmarks" in r.stderr and "is missing (--align landmarks" in r.stderr
