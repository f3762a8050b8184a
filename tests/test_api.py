"""FaceParser: input kinds and channel orders, output resolution, probabilities, flip equivariance, drawing,
crop-and-paste-back of detected faces, and the authors' checkpoint convention."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from helpers.tiny_checkpoint import one_thread, write_tiny_checkpoint  # noqa: F401 (fixture)

from dml_csr import FaceParser
from dml_csr.api import expand_box, haar_face_detector
from dml_csr.data.labels import flip_permutation, get_spec
from dml_csr.data.synthetic import render_face

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_tiny_checkpoint(str(tmp_path_factory.mktemp("ckpt") / "tiny.pt"))


@pytest.fixture(scope="module")
def parser(ckpt):
    return FaceParser.from_checkpoint(ckpt, device="cpu")


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


def test_labels_are_the_inverse_mapped_network_argmax(parser, face_bgr):
    from dml_csr.data.loader import collate_samples
    from dml_csr.data.transforms import batch_input, inverse_affine

    s = parser.transform(face_bgr)
    with torch.no_grad():
        logits = parser.model(batch_input(collate_samples([s])))["parsing"]
        logits = torch.nn.functional.interpolate(logits, size=(64, 64), mode="bilinear", align_corners=True)
    # the API replicates the border: the whole-image crop maps the last row just outside the network input
    expect = inverse_affine(logits.argmax(1)[0].to(torch.uint8).numpy(), s["meta"], mode="nearest",
                            border="replicate")
    assert np.array_equal(parser(face_bgr, channel_order="BGR"), expect)


def test_probabilities(parser, face_bgr):
    labels, probs = parser(face_bgr, channel_order="BGR", return_probs=True)
    assert probs.shape == (11,) + face_bgr.shape[:2] and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
    assert (probs.argmax(0) == labels).mean() > 0.9  # equal except near boundaries (bilinear vs nearest)


def test_flip_testing_averages_the_mirrored_input(ckpt, face_bgr):
    """flip=True: the mean of the probabilities of the network input and of its mirror, mirrored back with the
    left/right classes swapped, then mapped back onto the image."""
    from dml_csr.data.loader import collate_samples
    from dml_csr.data.transforms import batch_input, inverse_affine

    p = FaceParser.from_checkpoint(ckpt, flip=True)
    perm = flip_permutation(get_spec("synthetic"))
    _, a = p(face_bgr, channel_order="BGR", return_probs=True)
    s = p.transform(face_bgr)
    x = batch_input(collate_samples([s]))
    with torch.no_grad():
        def probs(inp):
            logits = p.model(inp)["parsing"]
            return torch.nn.functional.interpolate(logits, size=(64, 64), mode="bilinear",
                                                   align_corners=True).softmax(1)
        mean = (probs(x) + probs(x.flip(3)).flip(3)[:, torch.as_tensor(perm)]) / 2
    expected = inverse_affine(mean[0], s["meta"], mode="bilinear", border="replicate").numpy()
    np.testing.assert_allclose(a, expected, atol=1e-5)
    _, plain = FaceParser.from_checkpoint(ckpt)(face_bgr, channel_order="BGR", return_probs=True)
    assert np.abs(plain - a).max() > 1e-2  # the mirrored pass changes the answer


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


def test_expand_box_is_clipped_square():
    assert expand_box((10, 10, 20, 10), 100, 100, 0.5) == (0, 0, 40, 35)
    assert expand_box((40, 40, 10, 10), 100, 100, 0.5) == (35, 35, 55, 55)


def test_detected_faces_are_parsed_and_pasted_back(ckpt, face_bgr):
    h, w = face_bgr.shape[:2]
    canvas = np.full((150, 220, 3), 30, np.uint8)
    canvas[10:10 + h, 20:20 + w] = face_bgr
    canvas[60:60 + h, 140:140 + w] = face_bgr
    boxes = [(20 + 8, 10 + 10, w - 16, h - 20), (140 + 8, 60 + 10, w - 16, h - 20)]
    calls = []

    def detector(img):
        calls.append(img.shape)
        return boxes

    p = FaceParser.from_checkpoint(ckpt, detector=detector, margin=0.3)
    labels, probs = p(canvas, channel_order="BGR", detect=True, return_probs=True)
    assert calls == [canvas.shape] and labels.shape == canvas.shape[:2]
    inside = np.zeros(labels.shape, bool)
    for b in boxes:
        x0, y0, x1, y1 = expand_box(b, 150, 220, 0.3)
        inside[y0:y1, x0:x1] = True
        crop_labels = p(np.ascontiguousarray(canvas[y0:y1, x0:x1]), channel_order="BGR")
        fg = crop_labels != 0
        assert fg.any()
        assert np.array_equal(labels[y0:y1, x0:x1][fg], crop_labels[fg])
    assert (labels[~inside] == 0).all() and (probs[0][~inside] == 1).all()
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
    # no face: all background
    empty = FaceParser.from_checkpoint(ckpt, detector=lambda img: [])
    assert (empty(canvas, channel_order="BGR", detect=True) == 0).all()


@pytest.mark.skipif(hasattr(cv2, "CascadeClassifier"), reason="this OpenCV has the Haar cascade")
def test_missing_haar_cascade_names_the_fix():
    with pytest.raises(RuntimeError, match="opencv-python-headless>=4.7,<5"):
        haar_face_detector()


@pytest.mark.skipif(not hasattr(cv2, "CascadeClassifier"), reason="OpenCV >= 5 ships no Haar cascade")
def test_haar_detector_finds_synthetic_faces(ckpt):
    det = haar_face_detector()
    assert det(np.full((120, 120, 3), 128, np.uint8)) == []  # a flat image has no face
    img, label = render_face(1, size=(200, 200))[:2]  # a seed the frontal cascade finds (OpenCV 4.14)
    ys, xs = np.nonzero(label == 1)  # skin
    canvas = np.full((200, 420, 3), 90, np.uint8)
    canvas[:, :200], canvas[:, 220:] = img, img
    boxes = sorted(det(canvas))
    assert len(boxes) == 2
    for (x, y, w, h), dx in zip(boxes, (0, 220)):
        cx, cy = x + w / 2 - dx, y + h / 2
        assert xs.min() < cx < xs.max() and ys.min() < cy < ys.max()  # centred on the face
    p = FaceParser.from_checkpoint(ckpt)
    labels = p(canvas, channel_order="BGR", detect=True)
    inside = np.zeros(labels.shape, bool)
    for b in boxes:
        x0, y0, x1, y1 = expand_box(b, 200, 420, p.margin)
        inside[y0:y1, x0:x1] = True
    assert (labels[~inside] == 0).all() and (labels[inside] != 0).any()


def test_authors_metadata_sets_the_input_convention(parser):
    # the authors' files carry no metadata; load_model gives them official_meta (their model at 473, BGR input,
    # RGB ImageNet statistics). The parser must take its transform from it (loading itself: tests/models).
    from dml_csr.loading import official_meta

    meta = official_meta(11)
    p = FaceParser(parser.model, meta)
    assert p.transform.input_size == (473, 473) and p.transform.channel_order == "BGR"
    assert p.transform.mean == tuple(meta["mean"]) and p.classes == list(get_spec("helen").classes)
    assert np.array_equal(p.palette, get_spec("helen").palette)
    with pytest.raises(ValueError, match="registry"):
        FaceParser(parser.model, dict(meta, dataset="unknown"), flip=True)
