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
