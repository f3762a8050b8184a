"""scripts/compare.py: one grid per image (image | each model | ground truth) with captions and a legend."""
import os

import cv2
import numpy as np
from helpers.scripts import run_script
from helpers.tiny_checkpoint import write_tiny_checkpoint

from dml_csr.data.drawing import colorize
from dml_csr.data.labels import get_spec
from dml_csr.data.synthetic import write_dataset


def test_one_grid_per_image_with_every_model_and_the_ground_truth(tmp_path):
    root = str(tmp_path / "faces")
    write_dataset(root, {"test": 2}, seed=4, size=(48, 64))
    a = write_tiny_checkpoint(str(tmp_path / "a.pt"), seed=0)
    b = write_tiny_checkpoint(str(tmp_path / "b.pt"), seed=1)
    images, labels = os.path.join(root, "test", "images"), os.path.join(root, "test", "labels")
    out = tmp_path / "grids"
    r = run_script("compare", a, b, "--images", images, "--labels", labels, "--out", str(out),
                   "--names", "baseline,ours")
    assert r.returncode == 0, r.stderr
    names = sorted(os.listdir(images))
    assert sorted(os.listdir(out)) == sorted(os.path.splitext(n)[0] + ".png" for n in names)
    grid = cv2.imread(str(out / (os.path.splitext(names[0])[0] + ".png")))[..., ::-1]
    tile = 192 * 64 // 48  # each tile 192 high, the image's aspect kept
    assert grid.shape[1] == 4 * tile + 3 * 4  # image, two models, ground truth, 4-pixel gaps
    truth = cv2.imread(os.path.join(labels, os.path.splitext(names[0])[0] + ".png"), cv2.IMREAD_UNCHANGED)
    expected = cv2.resize(colorize(truth, get_spec("synthetic").palette), (tile, 192), interpolation=cv2.INTER_NEAREST)
    x0 = 3 * (tile + 4)
    assert np.array_equal(grid[22:22 + 192, x0:x0 + tile], expected)  # the last tile is the ground truth
    assert grid.shape[0] > 22 + 192 + 20  # the legend below
    r = run_script("compare", a, "--images", images, "--out", str(out), "--names", "x,y")
    assert r.returncode == 2 and "--names gives 2 names for 1 checkpoints" in r.stderr
