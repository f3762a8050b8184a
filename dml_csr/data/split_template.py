"""A prepared split's landmark template, measured: where its faces' five points fall in the network input after the
whole-image crop (:func:`measure_split`; ``scripts/measure_template.py`` and the synthetic faces' prepare step write
it as ``<root>/face_template.json``, :mod:`.face_template`)."""
from __future__ import annotations

import os
from typing import Callable, Optional, Sequence

import numpy as np

from ..conventions import INPUT_SIZE
from .dataset import BadSampleError, evenly_spaced, landmark_file, read_five_points, read_image, read_split_list
from .face_template import landmarks_in_input, measure_template
from .imageio import ImageError, image_size, read_file

__all__ = ["measure_split"]


def _five_points(path: str) -> Optional[np.ndarray]:
    """A landmark file's 5 points (LaPa's 106 through :data:`LAPA_FIVE`), or None when there is no file or it holds
    another scheme."""
    try:
        return read_five_points(path)
    except BadSampleError:
        return None


def _size(image_path: str) -> Optional[tuple[int, int]]:
    """(height, width) from the image file's header, None when it is unreadable there (then it is decoded)."""
    try:
        wh = image_size(read_file(image_path))
    except ImageError:
        return None
    return None if wh is None else (wh[1], wh[0])


def measure_split(root: str, split: str = "train", input_size: Sequence[int] = INPUT_SIZE,
                  detector: Optional[Callable] = None, limit: int = 2000) -> dict:
    """The crop convention of ``split``: the mean of up to ``limit`` faces' landmarks (evenly spaced samples) in
    the input of ``input_size`` after the whole-image crop. Samples without a 5- or 106-point file need ``detector``
    (``image_bgr -> faces``); samples where neither gives landmarks are skipped."""
    items = read_split_list(root, split)
    found, from_files, from_detector = [], 0, 0
    for name, image_path, _ in (items[i] for i in evenly_spaced(len(items), limit)):
        pts = _five_points(landmark_file(image_path, name))
        from_file = pts is not None
        size = _size(image_path) if from_file else None  # landmarks from a file need no decoded pixels
        if size is None:
            try:
                image = read_image(image_path)
            except BadSampleError:
                continue
            size = image.shape[:2]
            if not from_file and detector is not None:
                faces = [f for f in detector(image) if getattr(f, "points", None) is not None]
                if faces:
                    pts = max(faces, key=lambda f: f.box[2] * f.box[3]).points
                    from_detector += 1
        if pts is not None:
            from_files += from_file
            found.append(landmarks_in_input(pts, size, input_size))
    if not found:
        raise ValueError(f"no landmarks in split '{split}' of '{root}': no 5- or 106-point landmarks/NAME.txt files "
                         "and " + ("the detector found no face with landmarks" if detector else "no detector given"))
    source = f"{split} split of {os.path.basename(os.path.normpath(root))}: {from_files} landmark files, " \
             f"{from_detector} detected"
    return measure_template(np.stack(found), input_size, source)
