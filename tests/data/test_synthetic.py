"""Synthetic faces: deterministic, exact labels, every class present, left parts on the subject's left."""
import os

import cv2
import numpy as np
import pytest

from dml_csr.data.labels import get_spec
from dml_csr.data.synthetic import _sample_seed, render_face, write_dataset


def test_render_is_deterministic_by_seed():
    a = render_face(7, (96, 80))
    b = render_face(7, (96, 80))
    c = render_face(8, (96, 80))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])
    assert a[0].shape == (96, 80, 3) and a[0].dtype == np.uint8 and a[1].shape == (96, 80)


@pytest.mark.parametrize("order", ["synthetic", "synthetic19"])
def test_every_class_appears_and_labels_are_in_range(order):
    spec = get_spec(order)
    seen = np.zeros(spec.num_classes, bool)
    for seed in range(40):
        _, lab, _ = render_face(seed, (128, 128), order)
        assert lab.max() < spec.num_classes
        seen[np.unique(lab)] = True
    assert seen.all(), [spec.classes[i] for i in np.where(~seen)[0]]


def _centroid_x(lab, cls):
    ys, xs = np.nonzero(lab == cls)
    return xs.mean()


@pytest.mark.parametrize("order", ["synthetic", "synthetic19"])
def test_left_parts_lie_on_the_subjects_left(order):
    """The subject's left is the image's right in a frontal picture (rotations stay within +-30 degrees)."""
    spec = get_spec(order)
    for seed in range(20):
        _, lab, kps = render_face(seed, (160, 160), order, second_face_prob=0.0)
        for a, b in spec.flip_pairs:
            if (lab == a).sum() > 3 and (lab == b).sum() > 3:
                assert spec.classes[a].startswith(("left", "l_")), spec.classes[a]
                assert _centroid_x(lab, a) > _centroid_x(lab, b), (seed, spec.classes[a])
        assert kps[0, 0] > kps[1, 0]  # the left-eye keypoint too


def test_labels_match_the_painted_parts():
    """Each labelled part has the colour it was painted with: eyes are bright, brows dark, lips red-ish."""
    img, lab, _ = render_face(3, (192, 192), second_face_prob=0.0)
    eyes = img[np.isin(lab, [4, 5])].astype(float).mean(0)
    brows = img[np.isin(lab, [2, 3])].astype(float).mean(0)
    assert eyes.mean() > brows.mean() + 40


def test_write_dataset_layout_and_resume(tmp_path):
    root = str(tmp_path / "syn")
    info = write_dataset(root, {"train": 3, "val": 2, "test": 1}, seed=5, size=(64, 64))
    assert info["counts"] == {"train": 3, "val": 2, "test": 1}
    lines = open(os.path.join(root, "val_list.txt")).read().split("\n")
    assert lines[0] == "images/val_00000.jpg labels/val_00000.png"
    lab = cv2.imread(os.path.join(root, "val", "labels", "val_00000.png"), cv2.IMREAD_UNCHANGED)
    _, expected, _ = render_face(_sample_seed(5, "val", 0), (64, 64))
    assert np.array_equal(lab, expected)  # the PNG holds the exact label map
    assert sum(info["pixel_histogram"].values()) == 6 * 64 * 64
    assert open(os.path.join(root, "label_names.txt")).readline().strip() == "bg"
    mtime = os.path.getmtime(os.path.join(root, "train", "images", "train_00000.jpg"))
    write_dataset(root, {"train": 4, "val": 2, "test": 1}, seed=5, size=(64, 64))  # resumes: keeps existing files
    assert os.path.getmtime(os.path.join(root, "train", "images", "train_00000.jpg")) == mtime
    assert os.path.exists(os.path.join(root, "train", "images", "train_00003.jpg"))
