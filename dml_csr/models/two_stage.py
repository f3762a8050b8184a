"""Second stage of RNN-G (Liu et al. 2017, Sec. 4 and Figure 2): component networks on crops, merged with the first
stage.

Which classes make each component, the crop sizes and the box geometry are in :mod:`dml_csr.face_parts`; the model
gets the class names of its dataset and finds the indices there. Boxes come from 5 keypoints when given, else from a
label map (the ground truth when ``forward(x, label=...)`` gets one -- the paper's training setting -- or the first
stage's prediction).

Merge (:func:`merge_part_probs`): outside every crop the final probabilities are the first stage's. Inside a crop the
component network decides its classes, and "not this component" shares its probability among the other classes in
the first stage's proportions. So the final argmax takes the second stage's labels inside the crops and the first
stage's outside, and ``parsing`` stays a (log-probability) logit map that the usual losses and argmax accept.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from ..face_parts import boxes_from_keypoints, boxes_from_labels, crop, paste, part_table

__all__ = ["PartNet", "TwoStageRNNG", "merge_part_probs"]


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
        parts: per component ``(probs (B, 1 + K, H, W) pasted into the image, inside (B, 1, H, W) bool,
            classes)``; ``probs[:, 0]`` is "not this component", ``probs[:, 1 + i]`` is class ``classes[i]``.
            Later components win where crops overlap.
    Returns:
        (B, C, H, W) probabilities, equal to ``stage1`` outside every crop.
    """
    p = stage1
    for probs, inside, classes in parts:
        idx = torch.tensor(classes, device=p.device)
        in_group = torch.zeros(p.shape[1], dtype=torch.bool, device=p.device)
        in_group[idx] = True
        others = p * (~in_group)[None, :, None, None]
        others = others / others.sum(1, keepdim=True).clamp(min=1e-12) * probs[:, :1]
        mixed = others.index_copy(1, idx, probs[:, 1:])
        p = torch.where(inside, mixed, p)
    return p


# ------------------------------------------------------------------------------------------------------------ model
class TwoStageRNNG(nn.Module):
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

    # the training loop (dml_csr.engine.train_one_epoch) passes the batch's ground truth ``label`` (and
    # ``keypoints`` when the batch has them) as keyword arguments to models that set this: the paper's crops
    wants_targets = True

    @property
    def training_only(self) -> tuple[str, ...]:
        return tuple(f"stage1.{p}" for p in self.stage1.training_only)

    def __init__(self, stage1: nn.Module, class_names: Sequence[str], part_width: int = 32,
                 components: tuple[str, ...] = ("eye", "nose", "mouth")):
        super().__init__()
        table = part_table(class_names)
        known = {"eye": 3, "nose": 2, "mouth": 4}  # network -> its classes + "not this component"
        bad = [c for c in components if c not in known]
        if bad or not components:
            raise ValueError(f"model.rnn_components {list(components)}: expected a non-empty subset of "
                             f"{', '.join(known)}")
        self.stage1 = stage1
        self.part_nets = nn.ModuleDict({c: PartNet(known[c], part_width) for c in known if c in components})
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
        hw = tuple(x.shape[-2:])
        if keypoints is not None:
            boxes = boxes_from_keypoints(keypoints)
        else:
            boxes = boxes_from_labels(label if label is not None else logits1.detach().argmax(1), self.table)
        merged_in = []
        out: dict[str, Tensor] = {}
        for name, (classes, size, net) in self.parts.items():
            logits = self.part_nets[net](crop(x, boxes[name], size))
            probs, inside = paste(logits.softmax(1), boxes[name], hw)
            merged_in.append((probs, inside, classes))
            out[f"part/{name}"] = logits
            out[f"box/{name}"] = boxes[name]
        p = merge_part_probs(logits1.float().softmax(1), merged_in)
        result = {"parsing": p.clamp(min=1e-8).log()}
        if self.training:
            result.update({k: v for k, v in first.items() if k != "parsing"})
            result["stage1"] = logits1
            result.update(out)
        return result
