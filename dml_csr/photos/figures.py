"""The papers' visual tools: the edge maps of a DML-CSR model that keeps its edge heads (the DML-CSR paper's Figure 5:
category edges separating faces in a crowd; ``predict.py --edges``) and a side-by-side comparison of models on the
same images (its Figure 6: baseline, +DDGCN, +DML, +CSR; ``scripts/compare.py``)."""
from __future__ import annotations

import os
from typing import Optional, Sequence

import cv2
import numpy as np
import torch

from .. import inference
from ..checkpoint import load_model
from ..conventions import resize_bilinear
from ..data import drawing
from ..data.imageio import imread_checked
from ..files import write_image
from .parser import FaceParser

__all__ = ["EdgeMaps", "comparison_grid", "legend", "compare_folder"]


class EdgeMaps:
    """A checkpoint's binary and category edge maps of whole images, at each image's resolution.

    ``EdgeMaps(checkpoint)(image_bgr)`` -> (binary (H, W) uint8, 255 on edge pixels; category (H, W) uint8, the class
    of each category-edge pixel, 0 elsewhere). The image goes through the evaluation crop, the heads' probabilities
    come back bilinearly (:func:`dml_csr.inference.paste_back`) and the argmax is taken at the image's resolution.
    """

    def __init__(self, checkpoint: str, device: str = "cpu"):
        try:
            self.model, self.meta = load_model(checkpoint, device=device, edge_heads=True)
        except (KeyError, RuntimeError, ValueError) as e:
            raise ValueError(f"--edges: '{checkpoint}' cannot be loaded with its edge heads ({str(e).splitlines()[0]})"
                             f"; edge maps need a DML-CSR checkpoint trained with model.edge_heads: true") from None
        heads = getattr(self.model, "edges", None)
        if heads is None or heads.conv5_b is None or heads.conv5 is None:
            raise ValueError(f"--edges: '{checkpoint}' ({self.meta.get('model_name')}) has no binary and category edge "
                             f"heads; edge maps need a DML-CSR checkpoint trained with both (model.edge_heads: true)")
        self.transform = inference.input_transform(self.meta)
        self.device = next(self.model.parameters()).device

    @torch.no_grad()
    def __call__(self, image_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x, (inverse,) = inference.network_input([image_bgr], self.transform, device=self.device)
        out = self.model(x)
        if "edge" not in out or "semantic_edge" not in out:
            raise ValueError(f"--edges: the model ({self.meta.get('model_name')}) returns {sorted(out)}, no binary and "
                             f"category edge maps; edge maps need a DML-CSR checkpoint with both edge heads")
        size = image_bgr.shape[:2]
        maps = []
        for key in ("edge", "semantic_edge"):
            probs = resize_bilinear(out[key].float(), x.shape[-2:]).softmax(1)[0]
            back = inference.paste_back(probs, inverse, size, mode="bilinear", border="replicate",
                                        tanh_warp=self.transform.tanh_warp)
            maps.append(back.argmax(0).astype(np.uint8))
        return maps[0] * np.uint8(255), maps[1]


def legend(classes: Sequence[str], palette: np.ndarray, width: int) -> np.ndarray:
    """A strip of colour swatches with the class names, ``width`` pixels wide, RGB."""
    per_row = max(1, width // 130)
    rows = -(-len(classes) // per_row)
    strip = np.full((rows * 20 + 6, width, 3), 255, np.uint8)
    for i, name in enumerate(classes):
        x, y = 6 + (i % per_row) * 130, 4 + (i // per_row) * 20
        strip[y:y + 14, x:x + 14] = palette[i]
        cv2.rectangle(strip, (x, y), (x + 13, y + 13), (0, 0, 0), 1)
        cv2.putText(strip, name[:15], (x + 18, y + 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return strip


def comparison_grid(image_rgb: np.ndarray, labels: Sequence[np.ndarray], names: Sequence[str],
                    classes: Sequence[str], palette: np.ndarray, truth: Optional[np.ndarray] = None,
                    height: int = 192) -> np.ndarray:
    """One row: the photo, each model's colourised labels, the ground truth when given; a caption above each
    tile, the class legend below. RGB."""
    tiles = [(image_rgb, "image")] + [(drawing.colorize(lab, palette), n) for lab, n in zip(labels, names)]
    if truth is not None:
        tiles.append((drawing.colorize(truth, palette), "ground truth"))
    row = []
    for tile, caption in tiles:
        w = max(1, round(tile.shape[1] * height / tile.shape[0]))
        resized = cv2.resize(tile, (w, height), interpolation=cv2.INTER_NEAREST)
        head = np.full((22, w, 3), 255, np.uint8)
        cv2.putText(head, caption[:max(4, w // 8)], (3, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1,
                    cv2.LINE_AA)
        row += [np.vstack([head, resized]), np.full((height + 22, 4, 3), 255, np.uint8)]
    grid = np.hstack(row[:-1])
    return np.vstack([grid, legend(classes, palette, grid.shape[1])])


def compare_folder(checkpoints: Sequence[str], images: str, out: str, labels: Optional[str] = None,
                   names: Optional[Sequence[str]] = None, device: str = "cpu") -> list[str]:
    """``out/NAME.png``: :func:`comparison_grid` of every image of the folder ``images`` parsed by each checkpoint
    (whole images), with ``labels/NAME.png`` as ground truth when ``labels`` is given. The models must share their
    classes. Returns the files written."""
    parsers = [FaceParser.from_checkpoint(c, device=device) for c in checkpoints]
    classes = parsers[0].classes
    for c, p in zip(checkpoints, parsers):
        if p.classes != classes:
            raise ValueError(f"'{c}' parses the classes {', '.join(p.classes)}; the first checkpoint "
                             f"'{checkpoints[0]}' {', '.join(classes)}: compare models of one class layout")
    names = list(names) if names else [os.path.splitext(os.path.basename(c))[0] for c in checkpoints]
    if len(names) != len(checkpoints):
        raise ValueError(f"--names gives {len(names)} names for {len(checkpoints)} checkpoints")
    files = sorted(f for f in os.listdir(images) if os.path.splitext(f)[1].lower() in {".jpg", ".jpeg", ".png"})
    if not files:
        raise ValueError(f"--images '{images}' holds no .jpg or .png file")
    written = []
    for f in files:
        stem = os.path.splitext(f)[0]
        bgr = imread_checked(os.path.join(images, f), cv2.IMREAD_COLOR, ValueError, "image")
        truth = None
        if labels is not None:
            path = os.path.join(labels, stem + ".png")
            if not os.path.isfile(path):
                raise ValueError(f"--labels: no label map '{path}' for image '{f}'")
            truth = imread_checked(path, cv2.IMREAD_UNCHANGED, ValueError, "label map")
        preds = [p(bgr, channel_order="BGR") for p in parsers]
        grid = comparison_grid(bgr[..., ::-1], preds, names, classes, parsers[0].palette, truth)
        path = os.path.join(out, stem + ".png")
        write_image(path, np.ascontiguousarray(grid[..., ::-1]))
        written.append(path)
    return written
