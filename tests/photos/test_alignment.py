"""Alignment: the similarity fit, the landmark crop against its template on a real photo, and the compositing of
overlapping faces."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from helpers.photos import astronaut, group_photo

from dml_csr.data.face_template import landmarks_in_input, measure_template
from dml_csr.photos.alignment import composite, face_affine, similarity_transform
from dml_csr.photos.faces import Face


def test_similarity_transform_recovers_a_known_similarity():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    a, k = np.deg2rad(33.0), 1.7
    m = np.array([[k * np.cos(a), -k * np.sin(a), 12.0], [k * np.sin(a), k * np.cos(a), -7.5]])
    np.testing.assert_allclose(similarity_transform(src, src @ m[:, :2].T + m[:, 2]), m, atol=1e-9)
    mirrored = src * [-1, 1]  # no reflection: the fit keeps a positive determinant
    assert np.linalg.det(similarity_transform(src, mirrored)[:, :2]) > 0
    with pytest.raises(ValueError, match="landmarks coincide"):
        similarity_transform(np.ones((5, 2)), src)


def test_landmark_crops_of_a_real_photo_land_on_the_template_and_agree():
    """Every copy of the portrait in the group photo, warped by its landmarks, puts them on the template, and the
    five crops show the same face: they differ from each other far less than the portrait's own crop from a
    crop shifted by a tenth of the face."""
    canvas, _, truth = group_photo()
    img, face = astronaut()
    size = (128, 128)
    crop = measure_template(landmarks_in_input(face["landmarks"], (160, 160), size)[None], size)
    tpl = np.asarray(crop["points"]) * 128
    crops = []
    for pts in truth:
        m = face_affine(Face((0, 0, 1, 1), pts.astype(np.float32)), crop, size)
        # the points of a similarity of the portrait: the fit is exact up to float32 landmarks
        np.testing.assert_allclose(pts @ m[:, :2].T + m[:, 2], tpl, atol=1e-3)
        crops.append(cv2.warpAffine(canvas, m, size[::-1], flags=cv2.INTER_LINEAR).astype(np.float32))
    centre = (slice(32, 96), slice(32, 96))
    spread = max(np.abs(c[centre] - crops[3][centre]).mean() for c in crops)
    m0 = face_affine(Face((0, 0, 1, 1), face["landmarks"].astype(np.float32)), crop, size)
    shifted = m0.copy()
    shifted[0, 2] += 0.1 * np.linalg.norm(tpl[0] - tpl[1]) * 2.5
    ref = cv2.warpAffine(img, m0, size[::-1]).astype(np.float32)
    moved = cv2.warpAffine(img, shifted, size[::-1]).astype(np.float32)
    assert spread < 0.5 * np.abs(ref[centre] - moved[centre]).mean()


def test_composite_weights_faces_by_coverage_and_foreground():
    a = np.zeros((3, 4, 4), np.float32)
    a[1] = 1.0  # face A: all class 1, sure
    b = np.zeros((3, 4, 4), np.float32)
    b[0], b[2] = 0.5, 0.5  # face B: unsure between background and class 2
    half = np.full((4, 4), 0.5, np.float32)
    probs, union = composite([(a, np.ones((4, 4), np.float32), (0, 0, 4, 4)), (b, half, (2, 0, 6, 4))], 3)
    assert union == (0, 0, 6, 4) and probs.shape == (3, 4, 6)
    np.testing.assert_allclose(probs[:, 0, 0], [0, 1, 0], atol=1e-6)  # A alone
    # B alone, half covered: half its answer, the rest background
    np.testing.assert_allclose(probs[:, 0, 5], [0.75, 0, 0.25], atol=1e-6)
    # both: weights 1 * (1 - 0 + 1e-3) and 0.5 * (1 - 0.5 + 1e-3)
    wa, wb = 1.001, 0.5 * 0.501
    np.testing.assert_allclose(probs[:, 0, 2], (wa * a[:, 0, 0] + wb * b[:, 0, 0]) / (wa + wb), atol=1e-6)
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-6)
    assert composite([], 3)[1] is None
