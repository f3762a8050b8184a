"""Metrics against brute-force per-pixel counting on random label maps; the inverse mapping of predictions."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dml_csr.data.labels import get_spec
from dml_csr.data.transforms import EvalTransform
from dml_csr.evaluation.protocol import evaluate
from dml_csr.evaluation.metrics import ConfusionMatrix, format_scores, scores_from_confusion

C = 6
GROUPS = {"eyes": (2, 3), "mouth": (4, 5), "overall": (2, 3, 4, 5)}


def brute_force(pairs, num_classes, groups):
    """Scores by looping over pixels, independent of the confusion-matrix code."""
    tp, fp, fn = [0] * num_classes, [0] * num_classes, [0] * num_classes
    gtp = {g: 0 for g in groups}
    gfp = {g: 0 for g in groups}
    gfn = {g: 0 for g in groups}
    correct = total = 0
    for pred, gt in pairs:
        for p, t in zip(pred.ravel().tolist(), gt.ravel().tolist()):
            if t == 255:
                continue
            total += 1
            if p == t:
                correct += 1
                tp[t] += 1
            else:
                fp[p] += 1
                fn[t] += 1
            for g, members in groups.items():
                pin, tin = p in members, t in members
                gtp[g] += pin and tin
                gfp[g] += pin and not tin
                gfn[g] += tin and not pin
    def f1(a, b, c):
        return 2 * a / (2 * a + b + c) if a + b + c else math.nan
    def iou(a, b, c):
        return a / (a + b + c) if a + b + c else math.nan
    f1s = [f1(tp[k], fp[k], fn[k]) for k in range(num_classes)]
    ious = [iou(tp[k], fp[k], fn[k]) for k in range(num_classes)]
    def mean(xs):
        xs = [x for x in xs if not math.isnan(x)]
        return sum(xs) / len(xs)
    return {"f1": f1s, "iou": ious, "mean_f1": mean(f1s[1:]), "miou": mean(ious), "miou_fg": mean(ious[1:]),
            "pixel_accuracy": correct / total, "groups": {g: f1(gtp[g], gfp[g], gfn[g]) for g in groups}}


def random_pairs(seed, n=3, shape=(13, 17), absent=(), never_predicted=()):
    rng = np.random.default_rng(seed)
    keep_gt = [k for k in range(C) if k not in absent]
    keep_pred = [k for k in range(C) if k not in absent and k not in never_predicted]
    pairs = []
    for _ in range(n):
        gt = rng.choice(keep_gt, size=shape).astype(np.uint8)
        gt[rng.random(shape) < 0.1] = 255
        # mostly right, with confusions (including inside the merged sets)
        pred = np.where(rng.random(shape) < 0.6, gt, rng.choice(keep_pred, size=shape)).astype(np.uint8)
        pred[pred == 255] = rng.choice(keep_pred)
        pred[np.isin(pred, never_predicted)] = keep_pred[0]
        pairs.append((pred, gt))
    return pairs


def check(scores, ref):
    for k in range(C):
        r = scores["per_class"][str(k)]
        for key in ("f1", "iou"):
            assert (math.isnan(r[key]) and math.isnan(ref[key][k])) or r[key] == pytest.approx(ref[key][k], abs=1e-12)
    for key in ("mean_f1", "miou", "miou_fg", "pixel_accuracy"):
        assert scores[key] == pytest.approx(ref[key], abs=1e-12), key
    for g in GROUPS:
        assert scores["groups"][g] == pytest.approx(ref["groups"][g], abs=1e-12), g


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scores_match_brute_force(seed):
    pairs = random_pairs(seed)
    cm = ConfusionMatrix(C)
    for pred, gt in pairs:
        cm.update(pred, gt)
    check(cm.compute(groups=GROUPS), brute_force(pairs, C, GROUPS))


def test_class_absent_from_split_is_left_out_of_means():
    # class 5 nowhere (NaN, not counted); class 4 in the ground truth but never predicted (F1 = 0, counted)
    pairs = random_pairs(3, absent=(5,), never_predicted=(4,))
    cm = ConfusionMatrix(C)
    for pred, gt in pairs:
        cm.update(torch.from_numpy(pred), torch.from_numpy(gt))
    scores = cm.compute(groups=GROUPS)
    assert math.isnan(scores["per_class"]["5"]["f1"]) and math.isnan(scores["per_class"]["5"]["iou"])
    assert scores["per_class"]["4"]["f1"] == 0.0
    ref = brute_force(pairs, C, GROUPS)
    check(scores, ref)
    assert scores["mean_f1"] == pytest.approx(np.mean(ref["f1"][1:5]))


def test_merged_set_counts_inner_confusion_as_correct():
    gt = np.array([[2, 2, 3, 3, 0, 1]], np.uint8)
    pred = np.array([[3, 3, 2, 2, 0, 1]], np.uint8)  # eyes swapped left/right everywhere
    s = scores_from_confusion(_mat(pred, gt), groups={"eyes": (2, 3)})
    assert s["per_class"]["2"]["f1"] == 0.0 and s["groups"]["eyes"] == 1.0


def test_pooled_not_averaged_over_images():
    # image A: 1 pixel of class 1 wrong; image B: 99 pixels of class 1 right. Pooled F1 = 198/199, not (0+1)/2.
    cm = ConfusionMatrix(2)
    cm.update(np.array([0]), np.array([1]))
    cm.update(np.ones(99, np.int64), np.ones(99, np.int64))
    assert cm.compute()["per_class"]["1"]["f1"] == pytest.approx(198 / 199)


def test_update_errors_name_the_problem():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="outside"):
        cm.update(np.zeros(4, np.int64), np.array([0, 1, 7, 255]))
    with pytest.raises(ValueError, match="pixels"):
        cm.update(np.zeros(3, np.int64), np.zeros(4, np.int64))


def test_format_scores_lists_every_class_and_states_background():
    pairs = random_pairs(4)
    cm = ConfusionMatrix(C)
    for pred, gt in pairs:
        cm.update(pred, gt)
    s = cm.compute([f"c{k}" for k in range(C)], GROUPS)
    text = format_scores(s)
    assert all(f"c{k}" in text for k in range(C)) and "background included" in text
    assert f"{100 * s['miou']:6.2f}" in text


def _mat(pred, gt, n=4):
    cm = ConfusionMatrix(n)
    cm.update(pred, gt)
    return cm.mat.numpy()


# ------------------------------------------------------------------------------ inverse mapping inside evaluate()
COLOURS = np.array([(0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255)], np.uint8)  # BGR, one per class


class _ImageDataset:
    """Samples whose image paints each class in its own primary colour, at sizes unlike the network input."""

    def __init__(self, labels, input_size):
        self.labels = labels
        self.names = [f"s{i}" for i in range(len(labels))]
        self.tf = EvalTransform(input_size, "BGR", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # image / 255

    def load_label(self, i):
        return self.labels[i]

    def batch(self, idx, shift=0.0):
        samples = [self.tf(COLOURS[self.labels[i]], self.labels[i]) for i in idx]
        for s in samples:
            s["meta"]["center"] = [s["meta"]["center"][0] + shift, s["meta"]["center"][1]]
        return {"image": torch.stack([s["image"] for s in samples]), "meta": [s["meta"] for s in samples],
                "name": [self.names[i] for i in idx], "label": torch.stack([s["label"] for s in samples])}


class _Oracle(torch.nn.Module):
    """Reads the class off the colour, at ``stride`` (>1: predictions need upsampling, like DML-CSR's)."""

    def __init__(self, stride=1):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        g = x[:, :, ::self.stride, ::self.stride]
        return {"parsing": torch.cat([0.5 - g.amax(1, keepdim=True), g], 1)}


def _blocks(seed):
    rng = np.random.default_rng(seed)
    labels = []
    for h, w in [(70, 50), (45, 90)]:  # portrait and landscape: the inverse affine must undo the aspect padding
        lab = np.zeros((h, w), np.uint8)
        for k in range(1, 4):
            y, x = rng.integers(0, h - 16), rng.integers(0, w - 16)
            lab[y: y + 16, x: x + 16] = k
        labels.append(lab)
    return labels


def test_evaluate_maps_predictions_back_onto_original_labels():
    labels = _blocks(0)
    ds = _ImageDataset(labels, (64, 64))
    saved = {}
    cm = evaluate(_Oracle(), [ds.batch([0, 1])], ds, 4, device=torch.device("cpu"),
                  on_prediction=lambda name, lab: saved.__setitem__(name, lab))
    for i, name in enumerate(ds.names):
        assert saved[name].shape == labels[i].shape
        # resampling to 64x64 and back only moves block boundaries by under a pixel (a 1-pixel shift gives < 0.976)
        assert (saved[name] == labels[i]).mean() > 0.98
    pairs = [(saved[n], labels[i]) for i, n in enumerate(ds.names)]
    ref = brute_force(pairs, 4, {})
    scores = cm.compute()
    assert scores["pixel_accuracy"] == pytest.approx(ref["pixel_accuracy"], abs=1e-12)
    assert scores["miou"] == pytest.approx(ref["miou"], abs=1e-12)
    assert int(cm.mat.sum()) == sum(lab.size for lab in labels)  # every original pixel scored, no padding
    # the check is sensitive to the geometry: a 3-pixel error in the recorded centre is clearly visible
    shifted = evaluate(_Oracle(), [ds.batch([0, 1], shift=3.0)], ds, 4, device=torch.device("cpu")).compute()
    assert shifted["pixel_accuracy"] < scores["pixel_accuracy"] - 0.03
    # stride-2 logits are upsampled to the input before the inverse mapping
    coarse = evaluate(_Oracle(stride=2), [ds.batch([0, 1])], ds, 4, device=torch.device("cpu")).compute()
    assert coarse["pixel_accuracy"] > 0.94


class _Unsure(torch.nn.Module):
    """A random 3x3 convolution: spatially varying logits, so that what is warped back decides pixels."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        return {"parsing": 16 * self.conv(x)}


def test_paste_logits_gives_the_argmax_of_the_logits_warped_back():
    """FaRL maps its logits back bilinearly (zero outside the crop) and takes the argmax; ``paste="logits"`` warps the
    log-probabilities, which differ from the logits by one number a pixel, so the labels are those of the logits
    warped back: checked against the raw logits pasted back here. "smooth" (probabilities) answers otherwise on
    some pixels."""
    from dml_csr import inference

    labels = _blocks(1)
    ds = _ImageDataset(labels, (64, 64))
    batch = ds.batch([0, 1])
    model = _Unsure().eval()
    saved = {mode: {} for mode in ("logits", "smooth")}
    for mode in saved:
        evaluate(model, [batch], ds, 4, device=torch.device("cpu"), paste=mode,
                 on_prediction=lambda name, lab, mode=mode: saved[mode].__setitem__(name, lab))
    with torch.no_grad():
        logits = model(batch["image"].float() / 255)["parsing"]  # the transform's mean 0, std 1 on [0, 1] pixels
    for j, name in enumerate(ds.names):
        meta = batch["meta"][j]
        expected = inference.paste_back(logits[j], inference.inverse_of(meta), meta["size"]).argmax(0)
        assert (saved["logits"][name] == expected).all(), name
    differ = sum(int((saved["logits"][n] != saved["smooth"][n]).sum()) for n in ds.names)
    assert differ > 20, differ  # 90 of 7,650 pixels here
    with pytest.raises(ValueError, match="paste must be one of nearest, smooth, logits, got 'bicubic'"):
        evaluate(model, [batch], ds, 4, device=torch.device("cpu"), paste="bicubic")


def test_flip_testing_swaps_left_right_channels():
    spec = get_spec("synthetic")
    from dml_csr.data.labels import flip_permutation
    from dml_csr.inference import predict_probs

    class LeftHalf(torch.nn.Module):
        # predicts "left_eye" (4) on the image's left half, "right_eye" (5) on the right half, at half resolution
        def forward(self, x):
            b, _, h, w = x.shape
            out = torch.zeros(b, spec.num_classes, h // 2, w // 2)
            out[:, 4, :, : w // 4] = 10
            out[:, 5, :, w // 4:] = 10
            return {"parsing": out}

    x = torch.zeros(1, 3, 8, 8)
    plain = predict_probs(LeftHalf(), x).argmax(1)
    flipped = predict_probs(LeftHalf(), x, flip_perm=flip_permutation(spec).tolist()).argmax(1)
    # mirrored output swapped back: the flipped run agrees with the plain one, so the average keeps the labels
    assert torch.equal(plain, flipped)
    assert plain[0, 0, 0] == 4 and plain[0, 0, -1] == 5
