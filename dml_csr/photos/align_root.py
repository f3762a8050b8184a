"""A prepared root with every face aligned by the 5-point similarity (``scripts/align_dataset.py``): what Liu et al.
do to Helen ("we align the input images according to [1]") before their two stages, whose component crops are
placed from the 5 keypoints.

Each sample's five landmarks come from its ``landmarks/NAME.txt`` when it has one, else from the face detector (the
largest face with landmarks); the least-squares similarity (:func:`dml_csr.photos.alignment.similarity_transform`)
takes them onto :data:`TEMPLATE` in a ``size`` x ``size`` output, and the image (bilinear), its label map (nearest,
255 outside the photo) and its landmarks go through it. A sample without landmarks and without a detected face is
reported and left out.
"""
from __future__ import annotations

import logging
import os
import shutil
from typing import Callable, Optional

import cv2
import numpy as np

from ..conventions import IGNORE_INDEX
from ..data.dataset import landmark_file, read_five_points, read_label, read_split_list, resolve_split
from ..data.imageio import imread_checked
from ..files import write_bytes, write_image
from .alignment import similarity_transform

__all__ = ["TEMPLATE", "align_root"]

log = logging.getLogger(__name__)

# where the five points land, as fractions of the output (the subject's left eye, right eye, nose tip, left and right
# mouth corners): a face filling the frame as the paper's 128 x 128 aligned faces do
TEMPLATE = np.array([[0.64, 0.42], [0.36, 0.42], [0.50, 0.56], [0.61, 0.70], [0.39, 0.70]], np.float64)


def _landmarks(image_path: str, name: str, detector: Optional[Callable]) -> Optional[np.ndarray]:
    path = landmark_file(image_path, name)
    if os.path.isfile(path):
        return read_five_points(path)
    if detector is None:
        return None
    faces = [f for f in detector(imread_checked(image_path, cv2.IMREAD_COLOR, ValueError, "image"))
             if f.points is not None]
    if not faces:
        return None
    return max(faces, key=lambda f: f.box[2] * f.box[3]).points.astype(np.float64)


def align_root(root: str, out: str, size: int = 256, detector: Optional[Callable] = None,
               splits: tuple[str, ...] = ("train", "val", "test")) -> dict:
    """Write the aligned copy of the prepared ``root`` at ``out``; returns ``{split: (aligned, skipped names)}``."""
    if os.path.abspath(root) == os.path.abspath(out):
        raise ValueError(f"--out '{out}' is the root itself; write the aligned copy elsewhere")
    dst = TEMPLATE * size
    report = {}
    for split in splits:
        try:
            split = resolve_split(root, split)
        except FileNotFoundError:
            continue
        lines, skipped = [], []
        for name, image_path, label_path in read_split_list(root, split):
            points = _landmarks(image_path, name, detector)
            if points is None:
                skipped.append(name)
                continue
            m = similarity_transform(points, dst)
            image = imread_checked(image_path, cv2.IMREAD_COLOR, ValueError, "image")
            label = read_label(label_path)
            base = os.path.join(out, split)
            write_image(os.path.join(base, "images", f"{name}.jpg"),
                        cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR))
            write_image(os.path.join(base, "labels", f"{name}.png"),
                        cv2.warpAffine(label, m, (size, size), flags=cv2.INTER_NEAREST,
                                       borderMode=cv2.BORDER_CONSTANT, borderValue=IGNORE_INDEX))
            warped = points @ m[:, :2].T + m[:, 2]
            write_bytes(os.path.join(base, "landmarks", f"{name}.txt"),
                        ("5\n" + "".join(f"{x:.3f} {y:.3f}\n" for x, y in warped)).encode())
            lines.append(f"images/{name}.jpg labels/{name}.png")
        write_bytes(os.path.join(out, f"{split}_list.txt"), "".join(line + "\n" for line in lines).encode())
        if skipped:
            log.warning("%s: %d sample(s) without landmarks or a detected face left out: %s", split, len(skipped),
                        ", ".join(skipped[:10]))
        report[split] = (len(lines), skipped)
    names = os.path.join(root, "label_names.txt")
    if os.path.isfile(names):
        shutil.copyfile(names, os.path.join(out, "label_names.txt"))
    return report
