"""FaceParser: input kinds and channel orders, output resolution, probabilities, flip equivariance, drawing,
crop-and-paste-back of detected faces, and the authors' checkpoint convention."""
from __future__ import annotations

import importlib.util

import cv2
import numpy as np
import pytest
import torch
from helpers.tiny_checkpoint import one_thread  # noqa: F401 (fixture)

from dml_csr import FaceParser
from dml_csr.photos.alignment import box_affine, crop_region
from dml_csr.photos.detection import haar_detector
from dml_csr.photos.faces import Face
from dml_csr.data.labels import flip_permutation, get_spec
from dml_csr.data.synthetic import render_face

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def face_bgr():
    img = render_face(3, size=(72, 56))[0]
    return img


def test_metadata_comes_from_the_checkpoint(parser):
    spec = get_spec("synthetic")
    assert parser.classes == list(spec.classes) and parser.num_classes == 11
    assert parser.transform.input_size == (64, 64) and parser.transform.channel_order == "BGR"
    assert np.array_equal(parser.palette, spec.palette)


def test_every_input_kind_gives_the_same_labels_at_the_image_size(parser, face_bgr, tmp_path):
    from PIL import Image

    path = str(tmp_path / "face.png")
    cv2.imwrite(path, face_bgr)
    rgb = face_bgr[..., ::-1].copy()
    ref = parser(path)
    assert ref.shape == face_bgr.shape[:2] and ref.dtype == np.uint8
    assert np.array_equal(parser(rgb), ref)
    assert np.array_equal(parser(face_bgr, channel_order="BGR"), ref)
    assert np.array_equal(parser(Image.fromarray(rgb)), ref)
    assert np.array_equal(parser(np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])), ref)  # RGBA


def test_list_input_and_batching_agree_with_single_calls(ckpt, face_bgr):
    p1 = FaceParser.from_checkpoint(ckpt, batch_size=1)
    p8 = FaceParser.from_checkpoint(ckpt, batch_size=8)
    images = [face_bgr, face_bgr[5:45, 3:], cv2.resize(face_bgr, (90, 40))]
    out1 = p1(images, channel_order="BGR")
    out8 = p8(images, channel_order="BGR")
    assert isinstance(out8, list) and len(out8) == 3
    for im, a, b in zip(images, out1, out8):
        assert a.shape == im.shape[:2]
        assert (a == b).mean() > 0.999  # batched convolutions may differ in the last bits


class _Stripes(torch.nn.Module):
    """A stand-in network whose answer depends only on the input pixel: class 1 + (column // 6) % 10, sure."""

    def forward(self, x):
        cols = torch.arange(x.shape[3]) // 6 % 10 + 1
        logits = torch.nn.functional.one_hot(cols, 11).T.float()[None, :, None, :] * 30.0
        return {"parsing": logits.expand(x.shape[0], 11, x.shape[2], x.shape[3])}


def _meta(input_size=(64, 64)) -> dict:
    return {"classes": list(get_spec("synthetic").classes), "dataset": "synthetic", "channel_order": "BGR",
            "mean": [0.0] * 3, "std": [1.0] * 3, "input_size": list(input_size)}


def test_nearest_paste_is_the_authors_protocol():
    """paste="nearest": each photo pixel takes the network's answer at the input pixel nearest to where the
    whole-image crop (the authors' matrix) sends it, and background where that lies outside the input -- the padding
    and the photo's last column -- as the evaluation scores; computed here pixel by pixel."""
    from dml_csr.data.transforms import box_to_center_scale, get_affine_transform

    h, w = 50, 90  # wider than tall: the crop pads above and below
    labels = FaceParser(_Stripes(), _meta(), paste="nearest")(np.zeros((h, w, 3), np.uint8), channel_order="BGR")
    center, scale = box_to_center_scale(h, w, (64, 64))
    fwd = get_affine_transform(center, scale, 0, (64, 64))
    ys, xs = np.mgrid[0:h, 0:w]
    u, v = fwd[0, 0] * xs + fwd[0, 1] * ys + fwd[0, 2], fwd[1, 0] * xs + fwd[1, 1] * ys + fwd[1, 2]
    ui, vi = np.floor(u + 0.5).astype(int), np.floor(v + 0.5).astype(int)
    inside = (ui >= 0) & (ui < 64) & (vi >= 0) & (vi < 64)
    expected = np.where(inside, 1 + ui.clip(0, 63) // 6 % 10, 0)
    clear = (np.abs(u - np.floor(u) - 0.5) > 0.01) & (np.abs(v - np.floor(v) - 0.5) > 0.01)  # not on a tie
    assert clear.mean() > 0.9 and (labels[clear] == expected[clear]).all()
    assert (labels[:, -1] == 0).all() and (expected[:, :-1] != 0).all()  # only the last column is outside


def test_probabilities_and_smooth_labels(parser, ckpt, face_bgr):
    """The default paste="smooth": labels are the argmax of the bilinearly mapped probabilities, at the image's
    resolution; on an image 8x the network input they follow boundaries the nearest protocol draws as steps."""
    labels, probs = parser(face_bgr, channel_order="BGR", return_probs=True)
    assert probs.shape == (11,) + face_bgr.shape[:2] and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
    assert np.array_equal(probs.argmax(0), labels)
    big = cv2.resize(face_bgr, (448, 576), interpolation=cv2.INTER_CUBIC)
    smooth = parser(big, channel_order="BGR")
    steps = FaceParser.from_checkpoint(ckpt, paste="nearest")(big, channel_order="BGR")
    assert (smooth == steps).mean() > 0.9

    # a row where some label changes from the row above: nearest-neighbour labels change only where the network's
    # 64 rows change, the smooth ones wherever the interpolated boundary passes
    def rows_with_a_boundary(lab):
        return int((lab[1:] != lab[:-1]).any(1).sum())
    assert rows_with_a_boundary(steps) <= 64
    assert rows_with_a_boundary(smooth) > 1.5 * rows_with_a_boundary(steps)


class _Ramp(torch.nn.Module):
    """A stand-in network whose probabilities are a known smooth function of the input column u:
    softmax(slope * u / (W - 1) + offset), whatever the pixels."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.slope, self.offset = torch.randn(11, generator=g) * 2, torch.randn(11, generator=g)

    def probs(self, u: np.ndarray, width: int) -> np.ndarray:
        z = self.slope.numpy()[:, None, None] * (u / (width - 1))[None] + self.offset.numpy()[:, None, None]
        e = np.exp(z - z.max(0))
        return e / e.sum(0)

    def forward(self, x):
        u = torch.arange(x.shape[3], dtype=torch.float32) / (x.shape[3] - 1)
        logits = self.slope[:, None] * u[None] + self.offset[:, None]
        return {"parsing": logits[None, :, None, :].expand(x.shape[0], 11, x.shape[2], x.shape[3])}


def test_flip_testing_averages_the_mirrored_input(face_bgr):
    """flip=True: the mean of the probabilities of the network input and of its mirror, mirrored back with the
    left/right classes swapped, then mapped back onto the image: at photo pixel p, whose input column is u,
    (P(u) + P(W - 1 - u)[perm]) / 2 for the stand-in network's P, computed here from its formula."""
    from dml_csr.data.transforms import box_to_center_scale, get_affine_transform

    net, (h, w) = _Ramp(), face_bgr.shape[:2]
    _, got = FaceParser(net, _meta(), flip=True)(face_bgr, channel_order="BGR", return_probs=True)
    perm = flip_permutation(get_spec("synthetic"))
    center, scale = box_to_center_scale(h, w, (64, 64))
    fwd = get_affine_transform(center, scale, 0, (64, 64))
    ys, xs = np.mgrid[0:h, 0:w]
    u = np.clip(fwd[0, 0] * xs + fwd[0, 1] * ys + fwd[0, 2], 0, 63)  # edges replicated
    expected = (net.probs(u, 64) + net.probs(63 - u, 64)[perm]) / 2
    np.testing.assert_allclose(got, expected, atol=5e-4)
    _, plain = FaceParser(net, _meta())(face_bgr, channel_order="BGR", return_probs=True)
    np.testing.assert_allclose(plain, net.probs(u, 64), atol=5e-4)
    assert np.abs(plain - got).max() > 5e-2  # the mirrored pass changes the answer


def test_colorize_and_overlay(parser):
    labels = np.array([[0, 1], [4, 255]], np.uint8)
    col = parser.colorize(labels)
    assert np.array_equal(col[0, 1], parser.palette[1]) and np.array_equal(col[1, 0], parser.palette[4])
    assert np.array_equal(col[1, 1], [255, 255, 255])
    img = np.full((2, 2, 3), 100, np.uint8)
    ov = parser.overlay(img, labels, alpha=0.5)
    assert np.array_equal(ov[0, 0], [100, 100, 100])  # background untouched
    np.testing.assert_allclose(ov[0, 1], (100 + parser.palette[1].astype(float)) / 2, atol=1)
    with pytest.raises(ValueError, match="shape"):
        parser.overlay(img, np.zeros((3, 3), np.uint8))


def test_bad_inputs_are_named(parser, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        parser(str(tmp_path / "nope.jpg"))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="bad.jpg"):
        parser(str(bad))
    with pytest.raises(ValueError, match="float32"):
        parser(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match=r"shape \(0, 0, 3\); expected a non-empty image"):
        parser(np.zeros((0, 0, 3), np.uint8))
    with pytest.raises(ValueError, match="1x1 pixels cannot be cropped"):
        parser(np.zeros((1, 1, 3), np.uint8))


class _Brightness(torch.nn.Module):
    """A stand-in network whose answer is known at every pixel: skin where the input is bright, background where it
    is dark, soft in between (the logit is 20 x (grey - 0.5) with the input scaled to [0, 1])."""

    def forward(self, x):
        grey = x.mean(1, keepdim=True)
        logits = torch.full((x.shape[0], 11) + x.shape[2:], -30.0)
        logits[:, :1] = 0.0
        logits[:, 1:2] = 20.0 * (grey - 0.5)
        return {"parsing": logits}


def _brightness_parser(**kwargs) -> FaceParser:
    meta = {"classes": list(get_spec("synthetic").classes), "dataset": "synthetic", "channel_order": "BGR",
            "mean": [0.0] * 3, "std": [1.0] * 3, "input_size": [96, 96]}
    return FaceParser(_Brightness(), meta, **kwargs)


def test_detected_faces_are_aligned_parsed_and_composited_back():
    """Five copies of a real portrait placed at different scales and angles, their true landmarks given as the
    detection: every copy is warped onto the template, parsed, and its probabilities pasted back, so the photo's
    labels are the stand-in network's answer on the photo itself wherever a crop covers it, background elsewhere."""
    from helpers.photos import group_photo

    from dml_csr.photos.alignment import face_affine

    canvas, _, points = group_photo()
    faces = [Face(tuple(p.min(0) - 20) + tuple(np.ptp(p, 0) + 40), p) for p in points]
    crop = {"kind": "template", "points": [[0.62, 0.45], [0.38, 0.45], [0.5, 0.58], [0.6, 0.7], [0.4, 0.7]]}
    p = _brightness_parser(crop=crop)
    labels, probs = p.parse_faces(canvas, faces, channel_order="BGR", return_probs=True)
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
    covered = np.zeros(labels.shape, bool)
    for f in faces:
        m = face_affine(f, p.crop, (96, 96))
        np.testing.assert_allclose(f.points @ m[:, :2].T + m[:, 2], np.asarray(crop["points"]) * 96, atol=3.0)
        inside = cv2.warpAffine(np.ones((96, 96), np.uint8), cv2.invertAffineTransform(m), labels.shape[::-1],
                                flags=cv2.INTER_NEAREST)
        covered |= cv2.erode(inside, np.ones((5, 5), np.uint8)).astype(bool)
    grey = canvas.astype(np.float32).mean(2) / 255
    truth = np.where(grey > 0.5, 1, 0)
    assert (labels[covered] == truth[covered]).mean() > 0.97
    far = cv2.dilate(covered.astype(np.uint8), np.ones((9, 9), np.uint8)) == 0
    assert (labels[far] == 0).all() and (probs[0][far] == 1).all()
    assert 0.02 < covered.mean() < 0.5  # the faces are a part of the photo


def test_box_only_faces_are_cropped_square_around_the_box(face_bgr):
    """A face without landmarks (the Haar cascade, a user's box): the crop is the square around its box grown by
    the margin; the pasted labels cover exactly that square."""
    canvas = np.full((150, 220, 3), 30, np.uint8)
    canvas[40:80, 60:100] = 230
    p = _brightness_parser(margin=0.25)
    labels = p.parse_faces(canvas, [(60, 40, 40, 40)], channel_order="BGR")
    assert (labels[40:80, 60:100] == 1).mean() > 0.99 and (labels[:30] == 0).all() and (labels[:, :45] == 0).all()
    np.testing.assert_allclose(box_affine((60, 40, 40, 40), (96, 96), 0.25), [[1.6, 0, -80], [0, 1.6, -48]])
    # the square of side 60 around (80, 60) at 1.6 input pixels a photo pixel: input u = -1 .. 96 (bilinear reach)
    # is photo x = (u + 80) / 1.6 = 49.4 .. 110, y = (v + 48) / 1.6 = 29.4 .. 90; one pixel more each side, exclusive
    assert crop_region(box_affine((60, 40, 40, 40), (96, 96), 0.25), (96, 96), (150, 220)) == (48, 28, 112, 92)
    empty = _brightness_parser(detector=lambda img: [])
    assert (empty(canvas, channel_order="BGR", detect=True) == 0).all()


@pytest.mark.skipif(hasattr(cv2, "CascadeClassifier"), reason="this OpenCV has the Haar cascade")
def test_missing_haar_cascade_names_the_fix():
    with pytest.raises(RuntimeError, match="opencv-python-headless>=4.7,<5"):
        haar_detector()


@pytest.mark.skipif(not hasattr(cv2, "CascadeClassifier"), reason="OpenCV >= 5 ships no Haar cascade")
def test_haar_detector_finds_synthetic_faces(ckpt):
    det = haar_detector()
    assert det(np.full((120, 120, 3), 128, np.uint8)) == []  # a flat image has no face
    img, label = render_face(1, size=(200, 200))[:2]  # a seed the frontal cascade finds (OpenCV 4.14)
    ys, xs = np.nonzero(label == 1)  # skin
    canvas = np.full((200, 420, 3), 90, np.uint8)
    canvas[:, :200], canvas[:, 220:] = img, img
    faces = sorted(det(canvas), key=lambda f: f.box)
    assert len(faces) == 2 and all(f.points is None for f in faces)
    for (x, y, w, h), dx in zip((f.box for f in faces), (0, 220)):
        cx, cy = x + w / 2 - dx, y + h / 2
        assert xs.min() < cx < xs.max() and ys.min() < cy < ys.max()  # centred on the face
    p = FaceParser.from_checkpoint(ckpt, detector="haar")
    labels = p(canvas, channel_order="BGR", detect=True)
    inside = np.zeros(labels.shape, bool)
    for f in faces:
        x0, y0, x1, y1 = crop_region(box_affine(f.box, (64, 64), p.margin), (64, 64), labels.shape)
        inside[y0:y1, x0:x1] = True
    assert (labels[~inside] == 0).all() and (labels[inside] != 0).any()


def test_authors_metadata_sets_the_input_convention(parser):
    # the authors' files carry no metadata; load_model gives them official_meta (their model at 473, BGR input,
    # RGB ImageNet statistics). The parser must take its transform from it (loading itself: tests/models).
    from dml_csr.checkpoint import official_meta

    meta = official_meta(11)
    p = FaceParser(parser.model, meta)
    assert p.transform.input_size == (473, 473) and p.transform.channel_order == "BGR"
    assert p.transform.mean == tuple(meta["mean"]) and p.classes == list(get_spec("helen").classes)
    assert np.array_equal(p.palette, get_spec("helen").palette)
    with pytest.raises(ValueError, match="registry"):
        FaceParser(parser.model, dict(meta, dataset="unknown"), flip=True)


class _Pattern(torch.nn.Module):
    """A stand-in network whose answer depends on where a pixel lies in the aligned crop, not on the photo: class
    1 + (column // 8) % 5 + 5 * ((row // 12) % 2). A face aligned otherwise (turned, shifted) gets other labels."""

    def forward(self, x):
        rows = torch.arange(x.shape[2])[:, None] // 12 % 2 * 5
        cols = torch.arange(x.shape[3])[None, :] // 8 % 5 + 1
        labels = torch.nn.functional.one_hot(rows + cols, 11).permute(2, 0, 1).float() * 30.0
        return {"parsing": labels[None].expand(x.shape[0], 11, x.shape[2], x.shape[3])}


@pytest.mark.skipif(importlib.util.find_spec("yuface") is None, reason="yuface is not installed")
def test_a_turned_portrait_parses_as_the_upright_one():
    """The portrait turned by 90, 180 and 270 degrees: its face is found each time and aligned as upright, so the
    labels, turned back, agree with the upright parse on the face's pixels."""
    from helpers.photos import astronaut

    from dml_csr.data.face_template import landmarks_in_input, measure_template

    img, face = astronaut()
    crop = measure_template(landmarks_in_input(face["landmarks"], img.shape[:2], (96, 96))[None], (96, 96))
    parser = FaceParser(_Pattern(), _meta((96, 96)), crop=crop, detector="yuface")
    x, y, w, h = face["box"]
    upright = parser.parse(img, channel_order="BGR", detect=True)
    assert len(upright.faces) == 1 and (upright.labels[y:y + h, x:x + w] > 0).all()
    for k in (1, 2, 3):
        turned = parser.parse(np.ascontiguousarray(np.rot90(img, k)), channel_order="BGR", detect=True)
        back = np.rot90(turned.labels, -k)
        agree = (back[y:y + h, x:x + w] == upright.labels[y:y + h, x:x + w]).mean()
        print(f"turned by {90 * k} degrees: {100 * agree:.2f} % of the face's labels as upright")
        assert len(turned.faces) == 1 and agree >= 0.95


@pytest.mark.parametrize("kwargs,expected", [
    ({"scales": []}, "scales = []; expected one or more numbers"),
    ({"scales": [1.0, float("nan")]}, "scales = [1.0, nan]; expected comma-separated numbers, each a finite number "
                                      "> 0 and <= 8"),
    ({"batch_size": 0}, "batch_size = 0; expected a whole number >= 1 and <= 4096"),
    ({"margin": float("inf")}, "margin = inf; expected a finite number >= 0 and <= 10"),
    ({"precision": "fp8"}, "precision = 'fp8'; expected one of fp32, bf16, fp16"),
])
def test_constructor_numbers_that_are_not_finite_or_out_of_range_are_named(kwargs, expected):
    with pytest.raises(ValueError) as e:
        _brightness_parser(**kwargs)
    assert str(e.value).startswith(expected) and "\n" not in str(e.value)


@pytest.mark.parametrize("key,value,expected", [
    ("std", [0, 0, 0], "'std' = [0, 0, 0]; expected 3 finite numbers > 0"),
    ("mean", [0.5, float("nan"), 0.5], "'mean' = [0.5, nan, 0.5]; expected 3 finite numbers"),
    ("input_size", [100000, 100000], "'input_size' = [100000, 100000]; expected [height, width], whole numbers "
                                     "from 8 to 4096"),
])
def test_metadata_out_of_range_is_named_before_any_image(key, value, expected):
    meta = {"classes": list(get_spec("synthetic").classes), "dataset": "synthetic", "channel_order": "BGR",
            "mean": [0.0] * 3, "std": [1.0] * 3, "input_size": [96, 96], key: value}
    with pytest.raises(ValueError) as e:
        FaceParser(_Brightness(), meta)
    assert str(e.value) == f"model metadata: {expected}"


class _Noisy(torch.nn.Module):
    """A stand-in network right about two pixels in three: class 1 where the input is bright, 0 where it is dark, plus
    fixed noise (the other nine classes out of play)."""

    def forward(self, x):
        side = (x[:, 0] > 0.4).long()  # mean 0, std 1: the input is pixel / 255
        noise = torch.randn(x.shape[0], 2, *x.shape[-2:], generator=torch.Generator().manual_seed(5))
        logits = torch.full((x.shape[0], 11, *x.shape[-2:]), -20.0)
        logits[:, :2] = noise + 0.6 * torch.nn.functional.one_hot(side, 2).permute(0, 3, 1, 2)
        return {"parsing": logits}


def test_crf_iterations_clean_a_noisy_answer_along_the_photos_colour_edge():
    """crf_iterations: a dense CRF on each crop's probabilities before the paste-back (Liu et al.'s CNN-CRF); on a
    photo of two flat halves a noisy network's labels follow the edge after five steps. Out of range is refused."""
    photo = np.zeros((64, 64, 3), np.uint8)
    photo[:, 32:] = 200
    truth = np.zeros((64, 64), np.uint8)
    truth[:, 32:] = 1
    plain = FaceParser(_Noisy(), _meta())(photo, channel_order="BGR")
    crf = FaceParser(_Noisy(), _meta(), crf_iterations=5)(photo, channel_order="BGR")
    assert 0.55 < (plain == truth).mean() < 0.8 and (crf == truth).mean() > 0.95
    with pytest.raises(ValueError, match="crf_iterations = 51; expected"):
        FaceParser(_Noisy(), _meta(), crf_iterations=51)
    # crf_kernels: with the kernels' weights at 0 the CRF moves nothing; kernels without iterations are refused
    off = FaceParser(_Noisy(), _meta(), crf_iterations=5, crf_kernels={"bilateral_weight": 0, "spatial_weight": 0})
    assert (off(photo, channel_order="BGR") == plain).all()
    with pytest.raises(ValueError, match=r"crf_kernels \{'bilateral_rgb': 20\} set the dense CRF's kernels; they need "
                                         "crf_iterations >= 1"):
        FaceParser(_Noisy(), _meta(), crf_kernels={"bilateral_rgb": 20})
    with pytest.raises(ValueError, match="dense CRF setting 'theta_b' is unknown"):
        FaceParser(_Noisy(), _meta(), crf_iterations=1, crf_kernels={"theta_b": 20})
