"""An aligned copy of a prepared root: faces taken by the 5-point similarity onto the template, labels and landmarks
warped with them."""
import os

import cv2
import numpy as np

from dml_csr.data.dataset import read_five_points
from dml_csr.data.synthetic import write_dataset
from dml_csr.photos.align_root import TEMPLATE, align_root


def test_landmarks_land_on_the_template_and_labels_follow_the_image(tmp_path):
    root, out = str(tmp_path / "faces"), str(tmp_path / "aligned")
    write_dataset(root, {"train": 3, "test": 1}, seed=6, size=(96, 128), second_face_prob=0.0)
    os.remove(os.path.join(root, "train", "landmarks", sorted(os.listdir(os.path.join(root, "train", "landmarks")))[0]))
    report = align_root(root, out, size=64, detector=None)
    assert report["train"][0] == 2 and len(report["train"][1]) == 1 and report["test"] == (1, [])
    names = [line.split()[0][len("images/"):-4] for line in open(os.path.join(out, "train_list.txt"))]
    assert len(names) == 2
    for name in names:
        points = read_five_points(os.path.join(out, "train", "landmarks", f"{name}.txt"))
        # a similarity cannot fit five points exactly: the least-squares fit of a face is close to the template
        assert np.abs(points - TEMPLATE * 64).max() < 64 * 0.08, points
        src_pts = read_five_points(os.path.join(root, "train", "landmarks", f"{name}.txt"))
        src_lab = cv2.imread(os.path.join(root, "train", "labels", f"{name}.png"), cv2.IMREAD_UNCHANGED)
        lab = cv2.imread(os.path.join(out, "train", "labels", f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert lab.shape == (64, 64)
        # the class under each original landmark (a mouth corner sits on a boundary) is next to its warped point
        for (x, y), (sx, sy) in zip(points, src_pts):
            near = lab[int(round(y)) - 1:int(round(y)) + 2, int(round(x)) - 1:int(round(x)) + 2]
            assert src_lab[int(round(sy)), int(round(sx))] in near
    assert os.path.isfile(os.path.join(out, "label_names.txt"))
