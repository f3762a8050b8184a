"""Detectors: a real photo's faces found one by one with their five landmarks in our keypoint order, and the
fallback order."""
from __future__ import annotations

import importlib.util
import logging

import cv2
import numpy as np
import pytest
from helpers.photos import PLACEMENTS, astronaut, group_photo

from dml_csr.photos import detection
from dml_csr.photos.detection import build_detector
from dml_csr.photos.faces import Face

HAS_YUFACE = importlib.util.find_spec("yuface") is not None
needs_yuface = pytest.mark.skipif(not HAS_YUFACE, reason="yuface is not installed (CPython 3.10/3.11 wheels)")


def _match(found: list[Face], truth: list[np.ndarray]) -> list[Face]:
    """The found face nearest to each true face (by the mean of its landmarks)."""
    centres = np.array([f.points.mean(0) for f in found])
    return [found[int(np.linalg.norm(centres - t.mean(0), axis=1).argmin())] for t in truth]


@needs_yuface
def test_yuface_finds_every_face_of_a_group_photo_with_its_landmarks():
    canvas, _, truth = group_photo()
    faces = build_detector("yuface")(canvas)
    assert len(faces) == len(truth)
    for face, pts, (_, angle, _, _) in zip(_match(faces, truth), truth, PLACEMENTS):
        # each point in our order, within the detector's accuracy: a fifth of the eye distance on the upright
        # copies, half of it on those turned by 20-25 degrees (it places their points nearer upright)
        err = np.linalg.norm(face.points - pts, axis=1) / np.linalg.norm(pts[0] - pts[1])
        assert err.max() < (0.2 if abs(angle) <= 10 else 0.6) and err.mean() < 0.4
        x, y, w, h = face.box
        assert x < pts[:, 0].min() and pts[:, 0].max() < x + w and y < pts[:, 1].min() and pts[:, 1].max() < y + h
        assert 0.5 < face.score <= 1.0
    img, face = astronaut()
    (one,) = build_detector("yuface")(img)
    assert one.points[0, 0] > one.points[1, 0]  # the subject's left eye is on the image's right


@needs_yuface
def test_yuface_detects_large_photos_downscaled_and_maps_back():
    """2200 px wide, past the 960 px yuface detects well at: detected at 960 px and mapped back, the faces are those
    of the 1100 px photo (also detected at 960 px) at twice the coordinates."""
    canvas, _, truth = group_photo()
    big = cv2.resize(canvas, None, fx=2, fy=2, interpolation=cv2.INTER_LINEAR)
    small = build_detector("yuface")(canvas)
    faces = build_detector("yuface")(big)
    assert len(faces) == len(small) == len(truth)
    for face, ref in zip(_match(faces, [2 * f.points + 0.5 for f in small]), small):
        assert np.abs(face.points - (2 * ref.points + 0.5)).max() < 3.0
        assert np.allclose(face.box[2:], 2 * np.asarray(ref.box[2:]), atol=3.0)


def test_auto_falls_back_to_the_haar_cascade_with_a_warning(monkeypatch, caplog):
    def unavailable(**kwargs):
        raise RuntimeError("not here")

    monkeypatch.setitem(detection.DETECTORS, "yuface", unavailable)
    monkeypatch.setitem(detection.DETECTORS, "yunet", unavailable)
    with caplog.at_level(logging.WARNING):
        det = build_detector("auto")
    assert "yuface: not here; yunet: not here" in caplog.text and "Haar" in caplog.text
    img, face = astronaut()
    found = det(img)
    assert found and all(f.points is None for f in found)
    x, y, w, h = max(found, key=lambda f: f.box[2]).box
    cx, cy = face["landmarks"].mean(0)
    assert x < cx < x + w and y < cy < y + h


def test_unknown_detector_names_the_choices():
    with pytest.raises(ValueError, match="detector 'nope' is unknown; expected auto, yuface, yunet, haar"):
        build_detector("nope")
    with pytest.raises(ValueError, match="faces file 'missing.json' does not exist"):
        build_detector("missing.json")


def test_yunet_rows_become_faces_in_our_order(monkeypatch, tmp_path):
    """cv2.FaceDetectorYN gives rows (x, y, w, h, 5 x (x, y) image-left eye first, score); a stand-in net with a
    known row shows the reordering, the score and the input size set to the image's."""
    row = np.array([[10, 20, 30, 40, 15, 30, 35, 30, 25, 40, 17, 50, 33, 50, 0.87]], np.float32)
    calls = []

    class Net:
        def setInputSize(self, size):
            calls.append(size)

        def detect(self, image):
            return 1, row

    monkeypatch.setattr(cv2, "FaceDetectorYN", type("YN", (), {"create": staticmethod(lambda *a: Net())}),
                        raising=False)
    (face,) = detection.yunet_detector(model_path=str(tmp_path / "m.onnx"))(np.zeros((60, 80, 3), np.uint8))
    assert calls == [(80, 60)] and face.box == (10, 20, 30, 40) and face.score == pytest.approx(0.87)
    np.testing.assert_array_equal(face.points, [[35, 30], [15, 30], [25, 40], [33, 50], [17, 50]])


def _turned(points: np.ndarray, k: int, h: int, w: int) -> np.ndarray:
    """Pixel coordinates of ``points`` of an (h, w) image in ``np.rot90(image, k)``: each quarter turn
    counter-clockwise sends (x, y) to (y, width - 1 - x) of the image as it stands then."""
    for _ in range(k):
        points = np.stack([points[:, 1], w - 1 - points[:, 0]], 1)
        h, w = w, h
    return points


@needs_yuface
@pytest.mark.parametrize("k", [1, 2, 3])
def test_a_turned_portrait_is_found_with_its_landmarks_on_its_face(k):
    """The portrait turned by 90, 180 and 270 degrees: upright yuface finds nothing or puts the five points as if the
    face were upright (on the hair and forehead); searching the turned photo finds it with its landmarks where the
    turned portrait has them."""
    img, face = astronaut()
    turned = np.ascontiguousarray(np.rot90(img, k))
    truth = _turned(face["landmarks"], k, *img.shape[:2])
    upright_only = build_detector("yuface", rotations=False)(turned)
    assert not upright_only or np.linalg.norm(upright_only[0].points - truth, axis=1).max() > 10
    (found,) = build_detector("yuface")(turned)
    eyes = np.linalg.norm(truth[0] - truth[1])
    assert np.linalg.norm(found.points - truth, axis=1).max() < 0.1 * eyes
    x, y, w, h = found.box
    assert (x < truth[:, 0]).all() and (truth[:, 0] < x + w).all() and (y < truth[:, 1]).all() \
        and (truth[:, 1] < y + h).all()


def test_the_turned_photo_is_searched_only_without_a_confident_upright_face():
    """A stand-in detector that sees a face confidently only with the bright corner top left: it is asked once when
    the upright photo has a confident face, else turn after turn until one has, and that turn's face comes back in
    the photo's coordinates; without a confident turn every turn is tried and the best face wins."""
    from dml_csr.photos.detection import any_rotation

    calls = []
    pts = np.array([[30.0, 20.0], [20.0, 20.0], [25.0, 25.0], [29.0, 31.0], [21.0, 31.0]])

    def detect(image):
        calls.append(image.shape)
        top_left = image[:5, :5].mean() > 100
        return [Face((15.0, 12.0, 20.0, 25.0), pts, 0.95 if top_left else 0.6)]

    image = np.zeros((60, 80, 3), np.uint8)
    image[:5, :5] = 255
    assert [f.score for f in any_rotation(detect)(image)] == [0.95] and len(calls) == 1
    for k in (1, 2, 3):  # the corner turned away: found again after turning it back, mapped onto the photo
        calls.clear()
        turned = np.ascontiguousarray(np.rot90(image, k))
        (face,) = any_rotation(detect)(turned)
        assert face.score == 0.95 and len(calls) == 1 + (4 - k)  # turned back by 4 - k quarter turns
        np.testing.assert_allclose(face.points, _turned(pts, k, 60, 80), atol=1e-6)
        corners = _turned(np.array([[15.0, 12.0], [34.0, 36.0]]), k, 60, 80)
        np.testing.assert_allclose(face.box[:2], corners.min(0), atol=1e-6)
        np.testing.assert_allclose(np.add(face.box[:2], face.box[2:]), corners.max(0) + 1, atol=1e-6)
    calls.clear()
    (face,) = any_rotation(detect, confident=0.99)(np.ascontiguousarray(np.rot90(image, 1)))
    assert len(calls) == 4 and face.score == 0.95


def test_landmarks_that_cannot_be_a_face_are_refused():
    from dml_csr.photos.detection import plausible

    _, face = astronaut()
    ours = face["landmarks"]
    assert plausible(Face((0, 0, 1, 1), ours)) and plausible(Face((0, 0, 1, 1)))  # a box alone is kept
    # what upright yuface gives for the portrait turned by 90 degrees: eyes 10 px apart, the mouth 32 px below
    assert not plausible(Face((0, 0, 1, 1), [[140, 275], [130, 275], [145, 290], [139, 306], [131, 308]]))
    assert not plausible(Face((0, 0, 1, 1), np.repeat(ours[:1], 5, 0)))  # all five on one point
    assert not plausible(Face((0, 0, 1, 1), ours[[1, 0, 2, 4, 3]]))  # mirrored: the mouth above the eyes
    upside_down = ours.copy()
    upside_down[3:, 1] = 2 * ours[:2, 1].mean() - ours[3:, 1]  # mouth as far above the eyes as it was below
    upside_down[2, 1] = 2 * ours[:2, 1].mean() - ours[2, 1]
    assert not plausible(Face((0, 0, 1, 1), upside_down))
