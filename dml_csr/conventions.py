"""The conventions every layer shares: what label marks an ignored pixel, how maps are resized, the face keypoints'
order, and the authors' input convention (BGR images normalised with the RGB ImageNet mean and std, 473x473).

The input convention is the config's default (``model.channel_order``, ``model.mean``, ``model.std``,
``data.input_size``): a checkpoint's meta (:func:`dml_csr.checkpoint.make_meta`) has it unless the config sets
another, and the meta of the authors' files always. This module imports nothing of the package.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["IGNORE_INDEX", "CHANNEL_ORDER", "IMAGENET_MEAN", "IMAGENET_STD", "INPUT_SIZE", "KEYPOINTS",
           "KEYPOINTS_MIRRORED", "DEVICE_NAMES", "resize_bilinear"]

IGNORE_INDEX = 255  # label value of pixels that no loss and no metric counts (padding, unlabelled)

# the authors feed BGR images normalised with the RGB ImageNet statistics, at 473x473 (see README, "input convention")
CHANNEL_ORDER = "BGR"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_SIZE = (473, 473)  # (height, width)

# the 5 face keypoints, in the order of the landmark files (landmarks/NAME.txt) and of every (B, 5, 2) keypoint
# tensor; "left" is the subject's left, on the image's right in a frontal picture
KEYPOINTS = ("subject_left_eye", "subject_right_eye", "nose_tip", "subject_left_mouth_corner",
             "subject_right_mouth_corner")
KEYPOINTS_MIRRORED = (1, 0, 2, 4, 3)  # after a horizontal flip, keypoint i is the mirror image of this one

DEVICE_NAMES = r"auto|cpu|mps|cuda(:\d+)?"  # what train.device, --device and every device= argument accept

# the dense CRF's numeric settings, (lowest, highest): the weights from 0, the widths (pixels, colour levels) from
# 1e-3, narrower than which float32 overflows into NaN (models/dense_crf.py CRFParams, config eval.crf_kernels)
CRF_SETTING_RANGES = {"bilateral_weight": (0.0, 1e6), "bilateral_xy": (1e-3, 1e6), "bilateral_rgb": (1e-3, 1e6),
                      "spatial_weight": (0.0, 1e6), "spatial_xy": (1e-3, 1e6)}


def resize_bilinear(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """(B, C, h, w) -> (B, C, *size), bilinear with ``align_corners=True``, as the authors resize features and logits.

    A map already of that size is returned as it is (the values the interpolation would give), except while tracing
    for export: there ``size`` may be the traced input's dynamic shape, and a shortcut taken at the tracing size would
    be frozen into the graph.
    """
    if not torch.jit.is_tracing() and tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)
