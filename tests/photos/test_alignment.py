"""Alignment: the similarity fit, the landmark crop against its template on a real photo, the paste-back against
the inverse warp computed by hand, and the compositing of overlapping faces."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from helpers.photos import astronaut, group_photo

from dml_csr.data.face_template import landmarks_in_input, measure_template
from dml_csr.photos.alignment import composite, crop_region, face_affine, paste_probs, similarity_transform
from dml_csr.photos.detection import Face


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


def _bilinear(probs: np.ndarray, x: float, y: float) -> np.ndarray:
    """Probabilities (C, h, w) at a point, by hand: the four neighbours, clamped to the border."""
    h, w = probs.shape[1:]
    x0, y0 = int(np.floor(x)), int(np.floor(y))
    fx, fy = x - x0, y - y0

    def at(i, j):
        return probs[:, min(max(j, 0), h - 1), min(max(i, 0), w - 1)]
    return ((1 - fx) * (1 - fy) * at(x0, y0) + fx * (1 - fy) * at(x0 + 1, y0) + (1 - fx) * fy * at(x0, y0 + 1)
            + fx * fy * at(x0 + 1, y0 + 1))


@pytest.mark.parametrize("dst,size", [([[5, 7], [12, 13]], (90, 120)),    # scale 0.92, 40.6 degrees
                                      ([[-5, -5], [-2.5, -5]], (240, 300))])  # 0.25: a face 4x the crop
def test_paste_back_is_the_inverse_warp(dst, size):
    """A photo pixel takes the crop's probabilities at the point its forward warp lands on."""
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(11), (48, 40)).transpose(2, 0, 1).astype(np.float32)  # (11, 48, 40)
    m = similarity_transform(np.array([[0, 0], [10, 0]]), np.array(dst, float))
    H, W = size
    region = crop_region(m, (48, 40), size)
    pasted, cover = paste_probs(probs, m, region)
    x0, y0, x1, y1 = region
    assert pasted.shape == (11, y1 - y0, x1 - x0) and cover.shape == pasted.shape[1:]
    checked = 0
    for _ in range(300):
        X, Y = rng.integers(x0, x1), rng.integers(y0, y1)
        u, v = m @ [X, Y, 1.0]
        if 0.5 < u < 38.5 and 0.5 < v < 46.5:  # well inside the crop
            # OpenCV rounds the sub-pixel position to 1/32 of a pixel: within 1/64 of the neighbours' difference
            np.testing.assert_allclose(pasted[:, Y - y0, X - x0], _bilinear(probs, u, v), atol=8e-3)
            assert cover[Y - y0, X - x0] == pytest.approx(1.0, abs=1e-3)
            checked += 1
        elif not (-1.5 < u < 40.5 and -1.5 < v < 48.5):  # well outside
            assert cover[Y - y0, X - x0] == 0
    assert checked > 50
    # the region holds every pixel the crop reaches: pasted over the whole photo, nothing lands outside it, and
    # inside it the values are the region's own
    full, full_cover = paste_probs(probs, m, (0, 0, W, H))
    outside = np.ones((H, W), bool)
    outside[y0:y1, x0:x1] = False
    assert full_cover[outside].max() == 0 and full_cover.sum() > 0.3 * 40 * 48 / np.linalg.det(m[:, :2])
    np.testing.assert_allclose(full[:, y0:y1, x0:x1] * cover, pasted * cover, atol=1e-6)


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


def test_a_warped_sample_maps_back_through_its_own_affine():
    """EvalTransform.warp keeps the affine; inverse_affine and sample_affine use it (not the whole-image crop)."""
    from dml_csr.data.transforms import EvalTransform, inverse_affine, sample_affine

    m = np.array([[0.5, 0.0, -3.0], [0.0, 0.5, -1.0]])
    sample = EvalTransform((16, 16)).warp(np.zeros((40, 50, 3), np.uint8), m)
    np.testing.assert_allclose(sample_affine(sample["meta"]), m)
    np.testing.assert_allclose(sample_affine(sample["meta"], inv=True), [[2, 0, 6], [0, 2, 2]])
    lab = np.zeros((16, 16), np.uint8)
    lab[4:8, 4:8] = 3  # input pixels 4..7 are image pixels 14..20 (x) and 10..16 (y)
    back = inverse_affine(lab, sample["meta"])
    assert back.shape == (40, 50) and (back[11:16, 15:20] == 3).all() and back[:9].max() == 0
