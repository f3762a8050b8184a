"""The face components of RNN-G's second stage (Liu et al. 2017, Sec. 4) and the geometry of their crops, shared by
the two-stage model (:mod:`dml_csr.models.two_stage`) and its loss (:mod:`dml_csr.losses.rnn_g`).

A component is named by the classes it covers, by class *name* (:data:`PART_CLASSES`); :func:`part_table` turns the
names into the indices of a given class list, so no index is written here. Crops (height x width): two eye+brow crops
(64 x 64, one shared network), nose (64 x 64), mouth (32 x 64). Boxes come from 5 keypoints
(:func:`boxes_from_keypoints`, in :data:`KEYPOINT_ORDER`) or from a label map (:func:`boxes_from_labels`: the
component's bounding box grown by 20% of its size on each side, then widened to the crop's aspect ratio; a component
absent from the map falls back to its usual place in an aligned face, :data:`DEFAULT_BOXES`).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .conventions import IGNORE_INDEX, KEYPOINTS

__all__ = ["PART_CLASSES", "PART_CROPS", "DEFAULT_BOXES", "KEYPOINT_ORDER", "STAGE1_CLASSES", "part_table",
           "stage1_map", "boxes_from_keypoints", "boxes_from_labels", "boxes_in_face", "crop", "paste", "window",
           "crop_labels"]

# component -> its classes by name ("left" is the subject's left, which is on the image's right)
PART_CLASSES: dict[str, tuple[str, ...]] = {
    "subject_left_eye": ("left_brow", "left_eye"),
    "subject_right_eye": ("right_brow", "right_eye"),
    "nose": ("nose",),
    "mouth": ("upper_lip", "inner_mouth", "lower_lip"),
}
# component -> (crop (h, w), the network that parses it)
PART_CROPS: dict[str, tuple[tuple[int, int], str]] = {
    "subject_left_eye": ((64, 64), "eye"), "subject_right_eye": ((64, 64), "eye"), "nose": ((64, 64), "nose"),
    "mouth": ((32, 64), "mouth"),
}
# the paper's first stage parses three classes: the face (skin and every component in it), hair and background
STAGE1_CLASSES = ("background", "face", "hair")
# fallback boxes in an aligned face, (cx, cy, w, h) as fractions of the image (or face box) width / height
DEFAULT_BOXES = {"subject_left_eye": (0.64, 0.40, 0.26, 0.26), "subject_right_eye": (0.36, 0.40, 0.26, 0.26),
                 "nose": (0.50, 0.52, 0.26, 0.26), "mouth": (0.50, 0.72, 0.36, 0.18)}
MARGIN = 0.2
KEYPOINT_ORDER = KEYPOINTS  # the 5 keypoints (conventions.py)

Part = tuple[tuple[int, ...], tuple[int, int], str]  # (class indices, crop (h, w), network)


def part_table(class_names: Sequence[str]) -> dict[str, Part]:
    """Every component with its class indices in ``class_names``, its crop size and its network.

    Raises naming the classes a component needs when ``class_names`` lacks one."""
    names = list(class_names)
    missing = [c for parts in PART_CLASSES.values() for c in parts if c not in names]
    if missing:
        raise ValueError(f"the two-stage RNN-G needs the classes {', '.join(missing)}, which are not among "
                         f"{', '.join(names)}; use a dataset in the Helen class layout or model.two_stage=false")
    return {part: (tuple(names.index(c) for c in classes), PART_CROPS[part][0], PART_CROPS[part][1])
            for part, classes in PART_CLASSES.items()}


# ------------------------------------------------------------------------------------------------------------ boxes
def stage1_map(class_names: Sequence[str]) -> list[int]:
    """For each class of ``class_names``, its first-stage class (:data:`STAGE1_CLASSES`): background and hair are
    themselves, every other class is face."""
    names = list(class_names)
    missing = [c for c in ("background", "hair") if c not in names]
    if missing:
        raise ValueError(f"the paper's first stage (background, face, hair) needs the classes {', '.join(missing)}; "
                         f"the dataset has {', '.join(names)}")
    return [0 if c == "background" else 2 if c == "hair" else 1 for c in names]


def _fit_aspect(cx: Tensor, cy: Tensor, w: Tensor, h: Tensor, size: tuple[int, int]) -> Tensor:
    """Grow the shorter side so that h / w equals the crop's; (B,) each -> (B, 4) boxes x0, y0, x1, y1."""
    ratio = size[0] / size[1]
    h2 = torch.maximum(h, w * ratio)
    w2 = torch.maximum(w, h / ratio)
    return torch.stack([cx - w2 / 2, cy - h2 / 2, cx + w2 / 2, cy + h2 / 2], dim=1)


def _default_box(name: str, bsz: int, hw: tuple[int, int], device) -> Tensor:
    cx, cy, w, h = DEFAULT_BOXES[name]
    v = torch.tensor([cx * hw[1], cy * hw[0], w * hw[1], h * hw[0]], device=device).expand(bsz, 4)
    return _fit_aspect(v[:, 0], v[:, 1], v[:, 2], v[:, 3], PART_CROPS[name][0])


def _mask(label: Tensor, classes: Sequence[int]) -> Tensor:
    mask = torch.zeros_like(label, dtype=torch.bool)
    for c in classes:
        mask = mask | (label == c)
    return mask


def boxes_from_labels(label: Tensor, parts: dict[str, Part], margin: float = MARGIN) -> dict[str, Tensor]:
    """Crop boxes from a label map: component bounding box + ``margin`` of its size per side, crop aspect.

    Args:
        label: (B, H, W) integer class map (ground truth or first-stage argmax).
        parts: :func:`part_table` of the map's classes (all four components: the nose splits the eyes).
    Returns:
        part name -> (B, 4) float boxes (x0, y0, x1, y1) in pixels (pixel j spans [j, j + 1)); a component absent
        from an image gets its :data:`DEFAULT_BOXES` place.
    """
    bsz, hh, ww = label.shape
    ys = torch.arange(hh, device=label.device, dtype=torch.float32)
    xs = torch.arange(ww, device=label.device, dtype=torch.float32)
    # The two eye+brow crops are placed by side, not by class: every eye and brow pixel right of the split (the nose
    # centroid, else the middle of the eye region) belongs to the subject's left eye crop. In an upright face
    # (|rotation| < 90 degrees) the subject's left is the image's right, so a first stage that mixes up left and
    # right -- which its small receptive field cannot tell apart -- still gets one crop per eye, and the crop, not
    # the first stage, decides the side.
    eyes = _mask(label, parts["subject_left_eye"][0] + parts["subject_right_eye"][0])
    nose = _mask(label, parts["nose"][0])
    xf = xs.view(1, 1, ww)
    n_nose = nose.sum((1, 2))
    nose_x = (nose * xf).sum((1, 2)) / n_nose.clamp(min=1)
    eye_cols = eyes.any(1)
    mid_x = (torch.where(eye_cols, xs, float(ww)).amin(1) + torch.where(eye_cols, xs, 0.0).amax(1)) / 2
    split = torch.where(n_nose > 0, nose_x, mid_x).view(bsz, 1, 1)
    side = {"subject_left_eye": eyes & (xf > split), "subject_right_eye": eyes & (xf <= split)}
    out = {}
    for name, (classes, size, _) in parts.items():
        mask = side.get(name)
        if mask is None:
            mask = _mask(label, classes)
        rows, cols = mask.any(2), mask.any(1)  # (B, H), (B, W)
        y0 = torch.where(rows, ys, float(hh)).amin(1)
        y1 = torch.where(rows, ys + 1, 0.0).amax(1)
        x0 = torch.where(cols, xs, float(ww)).amin(1)
        x1 = torch.where(cols, xs + 1, 0.0).amax(1)
        w, h = (x1 - x0).clamp(min=2.0), (y1 - y0).clamp(min=2.0)
        box = _fit_aspect((x0 + x1) / 2, (y0 + y1) / 2, w * (1 + 2 * margin), h * (1 + 2 * margin), size)
        present = rows.any(1)
        out[name] = torch.where(present[:, None], box, _default_box(name, bsz, (hh, ww), label.device))
    return out


def boxes_from_keypoints(kp: Tensor) -> dict[str, Tensor]:
    """Crop boxes from 5 keypoints.

    Args:
        kp: (B, 5, 2) pixel (x, y) in :data:`KEYPOINT_ORDER`: the subject's left eye, right eye, nose tip, the
            subject's left and right mouth corner. Each eye keypoint places the crop of the same subject side.
    Returns:
        part name -> (B, 4) boxes (x0, y0, x1, y1); sizes scale with the inter-ocular distance d.
    """
    if kp.dim() != 3 or kp.shape[1:] != (5, 2):
        raise ValueError(f"keypoints must be (B, 5, 2) pixel (x, y) in the order {', '.join(KEYPOINT_ORDER)}; "
                         f"got {tuple(kp.shape)}")
    kp = kp.float()
    eye_sl, eye_sr, nose, m_sl, m_sr = kp.unbind(1)
    d = (eye_sl - eye_sr).norm(dim=1).clamp(min=4.0)
    size_eye = 0.9 * d
    out = {"subject_left_eye": _fit_aspect(eye_sl[:, 0], eye_sl[:, 1] - 0.2 * d, size_eye, size_eye, (64, 64)),
           "subject_right_eye": _fit_aspect(eye_sr[:, 0], eye_sr[:, 1] - 0.2 * d, size_eye, size_eye, (64, 64))}
    top = (eye_sl[:, 1] + eye_sr[:, 1]) / 2 + 0.1 * d
    bottom = nose[:, 1] + 0.3 * d
    out["nose"] = _fit_aspect(nose[:, 0], (top + bottom) / 2, 0.8 * d, bottom - top, (64, 64))
    mw = (m_sl - m_sr).norm(dim=1).clamp(min=2.0) * (1 + 2 * MARGIN)
    mc = (m_sl + m_sr) / 2
    out["mouth"] = _fit_aspect(mc[:, 0], mc[:, 1], mw, mw / 2, (32, 64))
    return out


def boxes_in_face(face: Tensor, parts: dict[str, Part]) -> dict[str, Tensor]:
    """Crop boxes at the components' usual places (:data:`DEFAULT_BOXES`) inside a face box, for a face without
    keypoints.

    Args:
        face: (B, H, W) bool mask of the face (a first stage's face class); an empty mask stands for the whole image.
        parts: the components to place (:func:`part_table`).
    Returns:
        part name -> (B, 4) boxes (x0, y0, x1, y1) in pixels.
    """
    bsz, hh, ww = face.shape
    ys = torch.arange(hh, device=face.device, dtype=torch.float32)
    xs = torch.arange(ww, device=face.device, dtype=torch.float32)
    rows, cols = face.any(2), face.any(1)
    present = rows.any(1)
    y0 = torch.where(present, torch.where(rows, ys, float(hh)).amin(1), 0.0)
    y1 = torch.where(present, torch.where(rows, ys + 1, 0.0).amax(1), float(hh))
    x0 = torch.where(present, torch.where(cols, xs, float(ww)).amin(1), 0.0)
    x1 = torch.where(present, torch.where(cols, xs + 1, 0.0).amax(1), float(ww))
    out = {}
    for name in parts:
        cx, cy, w, h = DEFAULT_BOXES[name]
        fw, fh = x1 - x0, y1 - y0
        out[name] = _fit_aspect(x0 + cx * fw, y0 + cy * fh, w * fw, h * fh, PART_CROPS[name][0])
    return out


# -------------------------------------------------------------------------------------------------- crop and paste
def _crop_grid(boxes: Tensor, size: tuple[int, int], hw: tuple[int, int]) -> Tensor:
    """Sampling grid (B, h, w, 2) in grid_sample's normalised coordinates (align_corners=False)."""
    h, w = size
    u = (torch.arange(w, device=boxes.device, dtype=boxes.dtype) + 0.5) / w
    v = (torch.arange(h, device=boxes.device, dtype=boxes.dtype) + 0.5) / h
    x = boxes[:, 0:1] + u[None] * (boxes[:, 2:3] - boxes[:, 0:1])  # (B, w) pixels
    y = boxes[:, 1:2] + v[None] * (boxes[:, 3:4] - boxes[:, 1:2])  # (B, h)
    gx = (2 * x / hw[1] - 1)[:, None, :].expand(-1, h, -1)
    gy = (2 * y / hw[0] - 1)[:, :, None].expand(-1, -1, w)
    return torch.stack([gx, gy], dim=-1)


def crop(images: Tensor, boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear crops: images (B, C, H, W), boxes (B, 4) -> (B, C, h, w); outside the image reads zeros."""
    grid = _crop_grid(boxes.to(images.dtype), size, tuple(images.shape[-2:]))
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def crop_labels(label: Tensor, boxes: Tensor, size: tuple[int, int], classes: tuple[int, ...],
                ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Nearest-neighbour crops of a label map (B, H, W) mapped to local classes: 0 other, i + 1 for ``classes[i]``;
    ignored pixels and pixels outside the image become ``ignore_index``. -> (B, h, w) int64."""
    local = torch.zeros_like(label)
    for i, c in enumerate(classes):
        local[label == c] = i + 1
    local[label == ignore_index] = ignore_index
    grid = _crop_grid(boxes.float(), size, tuple(label.shape[-2:]))
    # sample (label + 1) so that 0 marks "outside the image"
    out = F.grid_sample((local.float() + 1).unsqueeze(1), grid, mode="nearest", padding_mode="zeros",
                        align_corners=False)[:, 0].long() - 1
    out[out < 0] = ignore_index
    return out


def window(boxes: Tensor, hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1): the pixel rows and columns that any of the (B, 4) boxes covers, within the image."""
    lo = boxes.detach().amin(0).floor()
    hi = boxes.detach().amax(0).ceil()
    x0, y0 = int(lo[0].clamp(0, hw[1])), int(lo[1].clamp(0, hw[0]))
    x1, y1 = int(hi[2].clamp(x0, hw[1])), int(hi[3].clamp(y0, hw[0]))
    return y0, y1, x0, x1


def paste(part: Tensor, boxes: Tensor, hw: tuple[int, int],
          region: Optional[tuple[int, int, int, int]] = None) -> tuple[Tensor, Tensor]:
    """Map crop-space maps back to the image: part (B, K, h, w), boxes (B, 4) -> ((B, K, H, W), inside (B, 1, H, W)).

    A pixel is inside when its centre lies inside the box; outside values are 0. With ``region`` = (y0, y1, x0, x1)
    (see :func:`window`), only those rows and columns are returned (what lies outside is 0 anyway)."""
    y0, y1, x0, x1 = region or (0, hw[0], 0, hw[1])
    hh, ww = y1 - y0, x1 - x0
    bx = boxes.to(part.dtype)
    xs = torch.arange(x0, x1, device=part.device, dtype=part.dtype) + 0.5
    ys = torch.arange(y0, y1, device=part.device, dtype=part.dtype) + 0.5
    gx = 2 * (xs[None] - bx[:, 0:1]) / (bx[:, 2:3] - bx[:, 0:1]) - 1  # (B, W), crop-normalised
    gy = 2 * (ys[None] - bx[:, 1:2]) / (bx[:, 3:4] - bx[:, 1:2]) - 1  # (B, H)
    grid = torch.stack([gx[:, None, :].expand(-1, hh, -1), gy[:, :, None].expand(-1, -1, ww)], dim=-1)
    inside = ((gx.abs() <= 1)[:, None, :] & (gy.abs() <= 1)[:, :, None]).unsqueeze(1)
    out = F.grid_sample(part, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out * inside, inside
