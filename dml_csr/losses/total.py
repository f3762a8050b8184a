"""The training loss of DML-CSR: the multi-task loss of the first phase (paper eq. 5) and the loss of the
self-regulation cycles (eq. 7), in two presets (``loss.preset``).

Terms (names shared by the config, the returned dict and the logs; each is returned unweighted):

    parsing_ce               L_ce^p     parsing cross-entropy, ignore 255
    parsing_lovasz           L_lov^p    Lovasz-softmax of the parsing softmax against the hard labels
    edge_ce                  L_ce^b     binary-edge cross-entropy, positive/negative balanced per batch
    semantic_edge_ce         L_ce^c     category-edge weighted cross-entropy
    edge_attention           L_att^b    binary edge attention (eq. 3)
    semantic_edge_attention  L_att^c    category edge attention (eq. 4, or the authors' term)
    kl_parsing, kl_edge, kl_semantic_edge      KL(target || student) per head, to the teacher's target

The total of each phase (``l`` = ``loss.lambdas``, ``a`` = ``loss.alphas``; a phase is "cycles" when the teacher's
outputs are given). The official multipliers are the authors' effective ones: with the default weights, phase 1 is
2 Lovasz + 2 CE + 1 WCE_b + 0.2 WCE_c + 4 Att_b + 1 Att_c and the cycles 2 Lovasz + 2 KL_p + 1 KL_b + 0.2 KL_c +
4 Att_b + 1 Att_c (their KL terms replace the CE terms; the attention terms stay)::

    term                       paper, phase 1   paper, cycles (eq. 7)   official, phase 1   official, cycles
    parsing_ce                 l0               -                       2 l0                -
    parsing_lovasz             l0               a0                      2 l0                2 l0
    edge_ce                    l1               -                       l1                  -
    semantic_edge_ce           l2               -                       0.2 l2              -
    edge_attention             l3               -                       l3                  l3
    semantic_edge_attention    l4               -                       l4                  l4
    kl_parsing                 -                a0                      -                   2 a0
    kl_edge                    -                a1                      -                   a1
    kl_semantic_edge           -                a2                      -                   2 a2

How the terms differ between the presets:

    semantic_edge_ce         paper: edge (any class) against non-edge pixels balanced per batch, our reading of
                             "weighted cross-entropy"; official: w_j = N_j / N per batch (a frequency)
    edge_attention           paper: b_i counts the edge pixels with a label; official: every edge pixel
    semantic_edge_attention  paper: eq. 4 with w_j = loss.class_weights; official: the authors' term (attention.py)
    KL target                paper: softmax(teacher / T), the aggregate's soft labels, KL times T^2;
                             official: softmax((1 - a) teacher + a onehot(target)), a = 1 / (cycle + 1)
    KL reduction             both: the mean over valid pixels (the authors' ``batchmean`` on (pixels, C) tensors)

Not reproduced from the authors' code: their crash in the parsing distillation target (it reads the binary edge
target) and their division by zero on an image without edge pixels (0 here, NaN there). A model without edge heads
(or a generic model returning only ``"parsing"``) gets the parsing terms only; :class:`MultiTaskLoss` resolves every
multiplier once, when it is built.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import torch
from torch import Tensor

from dml_csr.conventions import IGNORE_INDEX
from dml_csr.losses.attention import binary_edge_attention, official_category_attention, semantic_edge_attention
from dml_csr.losses.distill import kl_distill, mix_with_onehot
from dml_csr.losses.edges import binary_edge_ce, semantic_edge_ce
from dml_csr.losses.parsing import parsing_lovasz, pixel_ce

__all__ = ["TERMS", "PRESETS", "MultiTaskLoss", "multipliers"]

TERMS = ("parsing_ce", "parsing_lovasz", "edge_ce", "semantic_edge_ce", "edge_attention", "semantic_edge_attention",
         "kl_parsing", "kl_edge", "kl_semantic_edge")
PRESETS = ("paper", "official")

# term -> (the model output it needs, the batch target it needs)
_NEEDS = {"parsing_ce": ("parsing", "label"), "parsing_lovasz": ("parsing", "label"), "edge_ce": ("edge", "edge"),
          "semantic_edge_ce": ("semantic_edge", "semantic_edge"), "edge_attention": ("edge", "edge"),
          "semantic_edge_attention": ("semantic_edge", "semantic_edge"), "kl_parsing": ("parsing", "label"),
          "kl_edge": ("edge", "edge"), "kl_semantic_edge": ("semantic_edge", "semantic_edge")}


def multipliers(preset: str, lambdas: Sequence[float], alphas: Sequence[float],
                lovasz: bool = True) -> tuple[dict[str, float], dict[str, float]]:
    """The (first phase, cycles) multiplier of every term of ``preset`` (the table of the module docstring)."""
    l0, l1, l2, l3, l4 = (float(v) for v in lambdas)
    a0, a1, a2 = (float(v) for v in alphas)
    if preset == "paper":
        phase1 = {"parsing_ce": l0, "parsing_lovasz": l0, "edge_ce": l1, "semantic_edge_ce": l2,
                  "edge_attention": l3, "semantic_edge_attention": l4}
        cycles = {"parsing_lovasz": a0, "kl_parsing": a0, "kl_edge": a1, "kl_semantic_edge": a2}
    elif preset == "official":
        phase1 = {"parsing_ce": 2 * l0, "parsing_lovasz": 2 * l0, "edge_ce": l1, "semantic_edge_ce": 0.2 * l2,
                  "edge_attention": l3, "semantic_edge_attention": l4}
        cycles = {"parsing_lovasz": 2 * l0, "kl_parsing": 2 * a0, "kl_edge": a1, "kl_semantic_edge": 2 * a2,
                  "edge_attention": l3, "semantic_edge_attention": l4}
    else:
        raise ValueError(f"loss.preset = {preset!r}; expected one of {', '.join(PRESETS)}")
    if not lovasz:
        phase1.pop("parsing_lovasz")
        cycles.pop("parsing_lovasz")
    return phase1, cycles


class MultiTaskLoss:
    """The loss of both phases (see the module docstring).

    Args (the fields of :class:`dml_csr.config.LossConfig`, see :meth:`from_config`):
        num_classes: C, to check ``class_weights`` against.
        preset: "paper" or "official".
        lambdas: the five weights of eq. 5; alphas: the three of eq. 7.
        class_weights: w_j of the paper's category-edge attention, C non-negative values, or None (all ones).
        lovasz: include the Lovasz-softmax term; lovasz_per_image: per image instead of over the batch.
        temperature: softmax temperature of the KL terms (> 0).

    ``loss(outputs, batch, teacher_outputs=None, cycle=0) -> {term: scalar, ..., "total": scalar}``: outputs are
    the model's logits (``parsing``, optional ``edge`` and ``semantic_edge``, any resolution), the batch holds
    ``label``, ``edge``, ``semantic_edge`` (B, H, W) int64 (255 = ignored). With the teacher's outputs the loss is
    the cycles' loss; ``cycle`` (the 1-based cycle) is used by the official one-hot mixing only.
    """

    def __init__(self, num_classes: int, *, preset: str = "paper",
                 lambdas: Sequence[float] = (1.0, 1.0, 1.0, 4.0, 1.0), alphas: Sequence[float] = (1.0, 1.0, 0.1),
                 class_weights: Optional[Sequence[float]] = None, lovasz: bool = True, lovasz_per_image: bool = False,
                 temperature: float = 1.0, ignore_index: int = IGNORE_INDEX) -> None:
        self.phase1_weights, self.cycle_weights = multipliers(preset, lambdas, alphas, lovasz)
        if isinstance(class_weights, str):
            raise ValueError(f"class_weights = {class_weights!r} names a weighting of the data (loss.class_weights); "
                             f"pass the values it stands for (dml_csr.training.trainer.resolve_class_weights)")
        if class_weights is not None:
            if len(class_weights) != num_classes:
                raise ValueError(f"loss.class_weights has {len(class_weights)} values; expected {num_classes} "
                                 f"(one per class) or null")
            if any(w < 0 for w in class_weights):
                raise ValueError(f"loss.class_weights = {list(class_weights)}; expected non-negative values")
        if temperature <= 0:
            raise ValueError(f"loss.temperature = {temperature}; expected a positive number")
        self.official = preset == "official"
        self.lovasz_per_image = lovasz_per_image
        self.class_weights = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32)
        self.temperature = temperature
        self.ignore_index = ignore_index

    @classmethod
    def from_config(cls, loss, num_classes: int, class_weights: Optional[Sequence[float]] = None) -> "MultiTaskLoss":
        """Built from a :class:`dml_csr.config.LossConfig` and the class weights (numbers, or None for all ones)
        that ``loss.class_weights`` stands for, resolved by the caller (the setting itself is not read here)."""
        return cls(num_classes, preset=loss.preset, lambdas=loss.lambdas, alphas=loss.alphas,
                   class_weights=class_weights, lovasz=loss.lovasz, lovasz_per_image=loss.lovasz_per_image,
                   temperature=loss.temperature)

    def __call__(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Tensor],
                 teacher_outputs: Optional[Mapping[str, Tensor]] = None, cycle: int = 0) -> dict[str, Tensor]:
        if "parsing" not in outputs:
            raise KeyError(f"model outputs have keys {sorted(outputs)}; expected at least 'parsing'")
        weights = self.phase1_weights if teacher_outputs is None else self.cycle_weights
        self._ce_map = None  # the parsing CE map, shared by CE and both attention terms
        terms: dict[str, Tensor] = {}
        for name in weights:
            head, key = _NEEDS[name]
            if head not in outputs or (name.startswith("kl_") and head not in teacher_outputs):
                continue
            if key not in batch:
                raise KeyError(f"the model returns '{head}' but the batch has no '{key}' target; make the data "
                               f"loader emit '{key}' (edge targets) or build the model without that head")
            teacher = teacher_outputs[head] if name.startswith("kl_") else None
            terms[name] = getattr(self, f"_{name}")(outputs, batch, teacher, cycle)
        self._ce_map = None
        terms["total"] = sum(weights[k] * v for k, v in terms.items())
        return terms

    # ------------------------------------------------------------------------------------------------- the terms
    def _ce(self, outputs, batch) -> Tensor:
        if self._ce_map is None:
            self._ce_map = pixel_ce(outputs["parsing"], batch["label"], self.ignore_index)
        return self._ce_map

    def _parsing_ce(self, outputs, batch, teacher, cycle) -> Tensor:
        return self._ce(outputs, batch).sum() / (batch["label"] != self.ignore_index).sum().clamp_min(1)

    def _parsing_lovasz(self, outputs, batch, teacher, cycle) -> Tensor:
        return parsing_lovasz(outputs["parsing"], batch["label"], self.ignore_index, per_image=self.lovasz_per_image)

    def _edge_ce(self, outputs, batch, teacher, cycle) -> Tensor:
        return binary_edge_ce(outputs["edge"], batch["edge"], self.ignore_index)

    def _semantic_edge_ce(self, outputs, batch, teacher, cycle) -> Tensor:
        return semantic_edge_ce(outputs["semantic_edge"], batch["semantic_edge"],
                                "frequency" if self.official else "balanced", self.ignore_index)

    def _edge_attention(self, outputs, batch, teacher, cycle) -> Tensor:
        return binary_edge_attention(outputs["parsing"], batch["label"], batch["edge"], self._ce(outputs, batch),
                                     self.ignore_index, count_ignored=self.official)

    def _semantic_edge_attention(self, outputs, batch, teacher, cycle) -> Tensor:
        if self.official:
            return official_category_attention(outputs["parsing"], batch["label"], batch["semantic_edge"],
                                               self._ce(outputs, batch), self.ignore_index)
        return semantic_edge_attention(outputs["parsing"], batch["label"], batch["semantic_edge"],
                                       self.class_weights, self._ce(outputs, batch), self.ignore_index)

    def _kl(self, student: Tensor, teacher: Tensor, target: Tensor, cycle: int) -> Tensor:
        if self.official:
            teacher = mix_with_onehot(teacher, target, 1.0 / (cycle + 1), self.ignore_index)
        return kl_distill(student, teacher, valid=target != self.ignore_index, temperature=self.temperature)

    def _kl_parsing(self, outputs, batch, teacher, cycle) -> Tensor:
        return self._kl(outputs["parsing"], teacher, batch["label"], cycle)

    def _kl_edge(self, outputs, batch, teacher, cycle) -> Tensor:
        return self._kl(outputs["edge"], teacher, batch["edge"], cycle)

    def _kl_semantic_edge(self, outputs, batch, teacher, cycle) -> Tensor:
        return self._kl(outputs["semantic_edge"], teacher, batch["semantic_edge"], cycle)
