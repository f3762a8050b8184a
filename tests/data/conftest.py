"""Helpers that write tiny datasets (prepared layout and each raw layout) under tmp_path."""
from __future__ import annotations

import os

import cv2
import numpy as np
import pytest


def blob_label(h: int, w: int, num_classes: int, seed: int = 0) -> np.ndarray:
    """An (h, w) uint8 label map of a few axis-aligned rectangles (blocky, so resampling keeps it recognisable)."""
    rng = np.random.default_rng(seed)
    lab = np.zeros((h, w), np.uint8)
    for _ in range(6):
        y0, x0 = rng.integers(0, h - 4), rng.integers(0, w - 4)
        lab[y0: y0 + rng.integers(4, h // 2 + 5), x0: x0 + rng.integers(4, w // 2 + 5)] = rng.integers(1, num_classes)
    return lab


def write_prepared(root: str, split: str, n: int, size=(40, 56), num_classes: int = 11, seed: int = 0) -> list[str]:
    """Write ``n`` samples of ``split`` in the prepared layout; returns their names."""
    os.makedirs(os.path.join(root, split, "images"), exist_ok=True)
    os.makedirs(os.path.join(root, split, "labels"), exist_ok=True)
    names = []
    with open(os.path.join(root, f"{split}_list.txt"), "w") as f:
        for k in range(n):
            name = f"{split}_{k}"
            lab = blob_label(*size, num_classes, seed + k)
            img = np.dstack([lab * 20, 255 - lab * 10, np.full(size, 90, np.uint8)]).astype(np.uint8)
            cv2.imwrite(os.path.join(root, split, "images", name + ".jpg"), img)
            cv2.imwrite(os.path.join(root, split, "labels", name + ".png"), lab)
            f.write(f"images/{name}.jpg labels/{name}.png\n")
            names.append(name)
    return names


@pytest.fixture
def prepared(tmp_path):
    root = str(tmp_path / "prepared")
    write_prepared(root, "train", 6)
    write_prepared(root, "valid", 3, seed=100)  # the authors' name for the validation split
    write_prepared(root, "test", 2, seed=200)
    with open(os.path.join(root, "label_names.txt"), "w") as f:
        f.write("bg\n" + "\n".join(f"c{i}" for i in range(1, 11)) + "\n")
    return root
