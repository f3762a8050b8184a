"""The two stages of RNN-G (Liu et al. 2017, Sec. 4 and Figure 2): component networks on crops, merged with the first
stage. Two variants (``model.two_stage_variant``):

* :class:`PaperTwoStageRNNG` (``paper``), as the paper describes it: the first stage parses background, face and hair
  on the input resized to 128 x 128; the eye+brow, nose and mouth networks parse crops of the full-resolution input
  placed from the 5 keypoints; the 11-class map is composed from both.
* :class:`TwoStageRNNG` (``label_crops``, ours): the first stage parses every class at the input resolution, and the
  crops are placed from a label map (the ground truth while training, the first stage's argmax at test time) or
  from keypoints when given. It needs no landmarks, and the eye crops placed by side fix the first stage's
  left/right confusion.

Which classes make each component, the crop sizes and the box geometry are in :mod:`dml_csr.face_parts`; the models
get the class names of their dataset and find the indices there.

Merge (:func:`merge_part_probs`): outside every crop the final probabilities are the first stage's. Inside a crop the
component network decides its classes, and "not this component" shares its probability among the other classes in
the first stage's proportions. So the final argmax takes the second stage's labels inside the crops and the first
stage's outside, and ``parsing`` stays a (log-probability) logit map that the usual losses and argmax accept.

Training order (:meth:`_Stages.set_stage`): jointly, end to end (stage 0, ours), or in the paper's two stages -- the
first stage alone (the component networks frozen), then the component networks with the first stage frozen (its
parameters take no gradient and its norm layers stay in eval mode).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..conventions import resize_bilinear
from ..face_parts import (boxes_from_keypoints, boxes_from_labels, boxes_in_face, crop, paste, part_table,
                          stage1_map, window)

__all__ = ["PartNet", "TwoStageRNNG", "PaperTwoStageRNNG", "merge_part_probs", "COMPONENT_NETWORKS"]

COMPONENT_NETWORKS = {"eye": 3, "nose": 2, "mouth": 4}  # network -> its classes + "not this component"


def _part_nets(components: Sequence[str], part_width: int) -> nn.ModuleDict:
    bad = [c for c in components if c not in COMPONENT_NETWORKS]
    if bad or not components:
        raise ValueError(f"model.rnn_components {list(components)}: expected a non-empty subset of "
                         f"{', '.join(COMPONENT_NETWORKS)}")
    return nn.ModuleDict({c: PartNet(n, part_width) for c, n in COMPONENT_NETWORKS.items() if c in components})


def _parse_parts(x: Tensor, parts: dict, part_nets: nn.ModuleDict, boxes: dict) -> tuple[list, dict]:
    """Each component network on its crop of ``x``: (inputs of :func:`merge_part_probs`, training outputs). The
    pasted maps cover the window the batch's boxes span, not the whole image."""
    merged_in, out = [], {}
    hw = tuple(x.shape[-2:])
    for name, (classes, size, net) in parts.items():
        logits = part_nets[net](crop(x, boxes[name], size))
        region = window(boxes[name], hw)
        probs, inside = paste(logits.softmax(1), boxes[name], hw, region)
        merged_in.append((probs, inside, classes, region))
        out[f"part/{name}"] = logits
        out[f"box/{name}"] = boxes[name]
    return merged_in, out


class PartNet(nn.Module):
    """Component network (Figure 2(b)): five convolutions, two max-poolings, two deconvolutions, no RNN."""

    def __init__(self, num_classes: int, width: int = 32):
        super().__init__()
        half = width // 2

        def conv(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                                 nn.ReLU(inplace=True))

        self.body = nn.Sequential(conv(3, half), conv(half, half), nn.MaxPool2d(2), conv(half, width), nn.MaxPool2d(2),
                                  conv(width, width),
                                  nn.ConvTranspose2d(width, width, 4, stride=2, padding=1), nn.ReLU(inplace=True),
                                  nn.ConvTranspose2d(width, half, 4, stride=2, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(half, num_classes, 1))

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, h, w) with h, w multiples of 4 -> (B, num_classes, h, w) logits."""
        return self.body(x)


def merge_part_probs(stage1: Tensor, parts: list[tuple[Tensor, Tensor, tuple[int, ...]]]) -> Tensor:
    """Combine first-stage probabilities with component probabilities inside their crops.

    Args:
        stage1: (B, C, H, W) first-stage class probabilities.
        parts: per component ``(probs (B, 1 + K, h, w) pasted into the image, inside (B, 1, h, w) bool,
            classes[, region])``; ``probs[:, 0]`` is "not this component", ``probs[:, 1 + i]`` is class
            ``classes[i]``; ``region`` (y0, y1, x0, x1) is the window the maps cover (default: the whole image).
            Later components win where crops overlap.
    Returns:
        (B, C, H, W) probabilities, equal to ``stage1`` outside every crop.
    """
    p = stage1.clone()  # written window by window; no operation below saves the values it overwrites
    for probs, inside, classes, *rest in parts:
        y0, y1, x0, x1 = rest[0] if rest else (0, p.shape[-2], 0, p.shape[-1])
        here = p[..., y0:y1, x0:x1]
        idx = torch.tensor(classes, device=p.device)
        in_group = torch.zeros(p.shape[1], dtype=torch.bool, device=p.device)
        in_group[idx] = True
        others = here * (~in_group)[None, :, None, None]
        others = others / others.sum(1, keepdim=True).clamp(min=1e-12) * probs[:, :1]
        p[..., y0:y1, x0:x1] = torch.where(inside, others.index_copy(1, idx, probs[:, 1:]), here)
    return p


# ------------------------------------------------------------------------------------------------------------ model
class _Stages(nn.Module):
    """Which part of a two-stage model trains: ``set_stage(0)`` everything (joint), ``1`` the first stage alone,
    ``2`` the component networks alone. A frozen part takes no gradient (``requires_grad`` off, so the optimiser
    leaves it, weight decay and momentum included); a frozen first stage also keeps its norm layers in eval mode."""

    stage: int = 0

    def set_stage(self, stage: int) -> "_Stages":
        if stage not in (0, 1, 2):
            raise ValueError(f"set_stage: stage = {stage!r}; expected 0 (joint), 1 (first stage) or 2 (components)")
        self.stage = stage
        self.stage1.requires_grad_(stage != 2)
        self.part_nets.requires_grad_(stage != 1)
        return self.train(self.training)

    def train(self, mode: bool = True) -> "_Stages":
        super().train(mode)
        if self.stage == 2:
            self.stage1.eval()
        return self


class TwoStageRNNG(_Stages):
    """RNN-G first stage (all classes) + component networks on crops, merged (see module docstring).

    Args:
        stage1: the first-stage network (:class:`~dml_csr.models.rnn_g.RNNG`).
        class_names: the dataset's classes; they must include each component's (see :mod:`dml_csr.face_parts`).
        part_width: widest layer of the component networks.
        components: which component networks exist ("eye", "nose", "mouth").

    ``forward(x, *, keypoints=None, label=None)``: x (B, 3, H, W). Boxes from ``keypoints`` (B, 5, 2) in
    :data:`~dml_csr.face_parts.KEYPOINT_ORDER` if given,
    else from ``label`` (B, H, W) (training: the ground truth), else from the first stage's argmax. Returns
    ``parsing`` (B, C, H, W) merged log-probabilities; in training mode also the first stage's ``coarse``, ``gate``,
    ``gates``, ``stage1`` (its parsing logits) and per component ``part/<name>`` (B, 1 + K, h, w) logits and
    ``box/<name>`` (B, 4) boxes (for :func:`crop_labels` in the loss).
    """

    # the training loop (dml_csr.training.engine.train_one_epoch) passes the batch's ground truth ``label`` (and
    # ``keypoints`` when the batch has them) as keyword arguments to models that set this: the paper's crops
    wants_targets = True

    @property
    def training_only(self) -> tuple[str, ...]:
        return tuple(f"stage1.{p}" for p in self.stage1.training_only)

    def __init__(self, stage1: nn.Module, class_names: Sequence[str], part_width: int = 32,
                 components: tuple[str, ...] = ("eye", "nose", "mouth")):
        super().__init__()
        table = part_table(class_names)
        self.stage1 = stage1
        self.part_nets = _part_nets(components, part_width)
        self.table = table  # every component: the nose splits the eye crops even without a nose network
        self.parts = {name: spec for name, spec in table.items() if spec[2] in self.part_nets}

    def drop_edge_heads(self) -> "TwoStageRNNG":
        """Drop the first stage's training-only heads (see :meth:`RNNG.drop_edge_heads`); returns self."""
        self.stage1.drop_edge_heads()
        return self

    def forward(self, x: Tensor, *, keypoints: Optional[Tensor] = None,
                label: Optional[Tensor] = None) -> dict[str, Tensor]:
        first = self.stage1(x)
        logits1 = first["parsing"]
        if keypoints is not None:
            boxes = boxes_from_keypoints(keypoints)
        else:
            boxes = boxes_from_labels(label if label is not None else logits1.detach().argmax(1), self.table)
        merged_in, out = _parse_parts(x, self.parts, self.part_nets, boxes)
        p = merge_part_probs(logits1.float().softmax(1), merged_in)
        result = {"parsing": p.clamp(min=1e-8).log()}
        if self.training:
            result.update({k: v for k, v in first.items() if k != "parsing"})
            result["stage1"] = logits1
            result.update(out)
        return result


class PaperTwoStageRNNG(_Stages):
    """RNN-G's two stages as Liu et al. describe them (see the module docstring).

    Args:
        stage1: the first-stage network (:class:`~dml_csr.models.rnn_g.RNNG`) with 3 classes: background, face, hair.
        class_names: the dataset's classes; they must include each component's, background and hair.
        stage1_size: (h, w) the input is resized to for the first stage (the paper: 128 x 128).
        part_width, components: as :class:`TwoStageRNNG`.

    ``forward(x, *, keypoints=None, label=None)``: x (B, 3, H, W), the full-resolution face; ``keypoints`` (B, 5, 2)
    in x's pixels place the crops (the paper). Without them the crops sit at the components' usual places in the
    face box the first stage finds (a fallback, not the paper's). Returns ``parsing`` (B, C, H, W) merged
    log-probabilities; in training mode also the first stage's ``coarse``, ``gate``, ``gates`` and its 3-class
    ``stage1`` logits, and per component ``part/<name>`` logits and ``box/<name>`` boxes.
    """

    wants_targets = True  # the training loop passes the batch's keypoints (and label)
    uses_keypoints = True  # evaluation passes the batch's keypoints

    def __init__(self, stage1: nn.Module, class_names: Sequence[str], stage1_size: Sequence[int] = (128, 128),
                 part_width: int = 32, components: tuple[str, ...] = ("eye", "nose", "mouth")):
        super().__init__()
        if stage1.num_classes != 3:
            raise ValueError(f"the paper's first stage parses background, face and hair: 3 classes, not "
                             f"{stage1.num_classes}")
        table = part_table(class_names)
        self.stage1 = stage1
        self.stage1_size = (int(stage1_size[0]), int(stage1_size[1]))
        self.part_nets = _part_nets(components, part_width)
        self.parts = {name: spec for name, spec in table.items() if spec[2] in self.part_nets}
        names = list(class_names)
        stage1_map(names)  # checks that background and hair exist
        if "skin" not in names:
            raise ValueError(f"the paper's two stages compose the face outside the crops as skin; the dataset's "
                             f"classes {', '.join(names)} have none")
        self.num_classes = len(names)
        # where each first-stage class (background, face, hair) goes in the dataset's classes
        self.stage1_index = tuple(names.index(c) for c in ("background", "skin", "hair"))

    @property
    def training_only(self) -> tuple[str, ...]:
        return tuple(f"stage1.{p}" for p in self.stage1.training_only)

    def drop_edge_heads(self) -> "PaperTwoStageRNNG":
        """Drop the first stage's training-only heads (see :meth:`RNNG.drop_edge_heads`); returns self."""
        self.stage1.drop_edge_heads()
        return self

    def forward(self, x: Tensor, *, keypoints: Optional[Tensor] = None,
                label: Optional[Tensor] = None) -> dict[str, Tensor]:
        hw = tuple(x.shape[-2:])
        small = x if hw == self.stage1_size else F.interpolate(x, size=self.stage1_size, mode="area")
        first = self.stage1(small)
        p3 = resize_bilinear(first["parsing"].float(), hw).softmax(1)
        index = torch.tensor(self.stage1_index, device=p3.device)
        p = p3.new_zeros(p3.shape[0], self.num_classes, *hw).index_copy(1, index, p3)
        if keypoints is not None:
            boxes = boxes_from_keypoints(keypoints)
        else:
            boxes = boxes_in_face(p3.detach().argmax(1) == 1, self.parts)
        merged_in, out = _parse_parts(x, self.parts, self.part_nets, boxes)
        result = {"parsing": merge_part_probs(p, merged_in).clamp(min=1e-8).log()}
        if self.training:
            result.update({k: v for k, v in first.items() if k != "parsing"})
            result["stage1"] = first["parsing"]
            result.update(out)
        return result
