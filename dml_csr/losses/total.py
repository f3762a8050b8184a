"""The multi-task loss of DML-CSR (paper eq. 5) plus the self-distillation terms of the cycles (eq. 7).

Terms (names are shared by config, the returned dict and the logs; every term is returned unweighted):

    parsing_ce                L_ce^p      cross-entropy, ignore 255                    weight lambda0
    parsing_lovasz            L_lovasz^p  Lovasz-softmax (if loss.lovasz)             weight lambda0
    edge_ce                   L_ce^b      balanced binary-edge CE                      weight lambda1
    semantic_edge_ce          L_ce^c      weighted category-edge CE                    weight lambda2
    edge_attention            L_attn^b    eq. 3                                        weight lambda3
    semantic_edge_attention   L_attn^c    eq. 4, w_j = loss.class_weights             weight lambda4
    kl_parsing, kl_edge, kl_semantic_edge   KL to the teacher (eq. 7)                  weights alpha0, alpha1, alpha2

The edge terms follow eq. 5's grouping: ``edge_ce`` and ``edge_attention`` exist only when the model returns
``"edge"`` (the binary-edge branch), ``semantic_edge_ce`` and ``semantic_edge_attention`` only when it returns
``"semantic_edge"``. A model without edge heads (or a generic model returning only ``"parsing"``) gets the parsing
terms only. ``"total"`` is the weighted sum of the terms present. :class:`MultiTaskLoss` resolves every weight once,
when it is built.

Our reading of eq. 7 during the self-regulation cycles: the supervised loss of eq. 5 stays, and the KL terms are
added: ``total = L_DML + alpha0 * KL^p + alpha1 * KL^b + alpha2 * KL^c``. The Lovasz term of eq. 7 is the hard-label
Lovasz of eq. 5, counted once (it needs hard labels; the soft labels enter through the KL terms). This is also what
the authors' code and SCHP, whose cycle DML-CSR follows, do. KL terms are computed for each head present in both
the student's and the teacher's outputs.

Presets (``loss.preset``):
    paper     the weights above; the category-edge CE balances edge against non-edge pixels; the KL target is the
              teacher's softmax (temperature ``loss.temperature``).
    official  the effective multipliers of the authors' code, as extra factors on top of the lambdas:
              parsing terms x2 (a doubled sum), semantic_edge_ce x0.2, so the default lambdas give
              2 Lovasz + 2 CE + 1 WCE_bin + 0.2 WCE_cat + 4 Att_bin + 1 Att_cat; frequency class weights
              (w_j = N_j / N per batch) in the category-edge CE; the category attention term of class j multiplied by
              j (their bug, reproduced: it is finite); the KL target mixes the teacher's logits with the one-hot label,
              ``(1 - a) * teacher + a * onehot`` with ``a = 1 / (cycle + 1)``. Not reproduced: their division by zero
              on edge-free images (we give 0), their crash in the distillation target indexing, and their
              ``batchmean`` KL scaling (see ``distill.py``).
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import torch
from torch import Tensor

from dml_csr.conventions import IGNORE_INDEX
from dml_csr.losses.attention import binary_edge_attention, semantic_edge_attention
from dml_csr.losses.distill import kl_distill, mix_with_onehot
from dml_csr.losses.edges import binary_edge_ce, semantic_edge_ce
from dml_csr.losses.parsing import parsing_lovasz, pixel_ce

__all__ = ["TERMS", "OFFICIAL_FACTORS", "PRESETS", "MultiTaskLoss"]

TERMS = ("parsing_ce", "parsing_lovasz", "edge_ce", "semantic_edge_ce", "edge_attention", "semantic_edge_attention",
         "kl_parsing", "kl_edge", "kl_semantic_edge")
PRESETS = ("paper", "official")

# extra factors of the authors' code over the paper's lambdas (official_release.md, "Losses")
OFFICIAL_FACTORS = {"parsing_ce": 2.0, "parsing_lovasz": 2.0, "semantic_edge_ce": 0.2}

# head name in the model outputs -> (target key in the batch, KL term name)
_KL_HEADS = {"parsing": ("label", "kl_parsing"), "edge": ("edge", "kl_edge"),
             "semantic_edge": ("semantic_edge", "kl_semantic_edge")}


def _target(batch: Mapping[str, Tensor], key: str, head: str) -> Tensor:
    if key not in batch:
        raise KeyError(f"the model returns '{head}' but the batch has no '{key}' target; make the data loader emit "
                       f"'{key}' (edge targets) or build the model without edge heads")
    return batch[key]


class MultiTaskLoss:
    """Eq. 5, plus the KL terms of eq. 7 when the teacher's outputs are given (see the module docstring).

    Args (the fields of :class:`dml_csr.config.LossConfig`, see :meth:`from_config`):
        num_classes: C, to check ``class_weights`` against.
        preset: "paper" or "official".
        lambdas: the five weights of eq. 5; alphas: the three of eq. 7.
        class_weights: w_j of the category-edge attention, C non-negative values, or None (all ones).
        lovasz: include the Lovasz-softmax term; lovasz_per_image: per image instead of over the batch.
        temperature: softmax temperature of the KL terms (> 0).

    ``loss(outputs, batch, teacher_outputs=None, cycle=0) -> {term: scalar, ..., "total": scalar}``: outputs are
    the model's logits (``parsing``, optional ``edge`` and ``semantic_edge``, any resolution), the batch holds
    ``label``, ``edge``, ``semantic_edge`` (B, H, W) int64 (255 = ignored); ``cycle`` (>= 1 once a teacher exists)
    is used only by the official preset's one-hot mixing, ``a = 1 / (cycle + 1)``.
    """

    def __init__(self, num_classes: int, *, preset: str = "paper",
                 lambdas: Sequence[float] = (1.0, 1.0, 1.0, 4.0, 1.0), alphas: Sequence[float] = (1.0, 1.0, 0.1),
                 class_weights: Optional[Sequence[float]] = None, lovasz: bool = True, lovasz_per_image: bool = False,
                 temperature: float = 1.0, ignore_index: int = IGNORE_INDEX) -> None:
        if preset not in PRESETS:
            raise ValueError(f"loss.preset = {preset!r}; expected one of {', '.join(PRESETS)}")
        if class_weights is not None:
            if len(class_weights) != num_classes:
                raise ValueError(f"loss.class_weights has {len(class_weights)} values; expected {num_classes} "
                                 f"(one per class) or null")
            if any(w < 0 for w in class_weights):
                raise ValueError(f"loss.class_weights = {list(class_weights)}; expected non-negative values")
        if temperature <= 0:
            raise ValueError(f"loss.temperature = {temperature}; expected a positive number")
        self.official = preset == "official"
        self.lovasz, self.lovasz_per_image = lovasz, lovasz_per_image
        self.class_weights = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32)
        self.temperature = temperature
        self.ignore_index = ignore_index
        l0, l1, l2, l3, l4 = lambdas
        a0, a1, a2 = alphas
        w = {"parsing_ce": l0, "parsing_lovasz": l0 if lovasz else 0.0, "edge_ce": l1, "semantic_edge_ce": l2,
             "edge_attention": l3, "semantic_edge_attention": l4, "kl_parsing": a0, "kl_edge": a1,
             "kl_semantic_edge": a2}
        factors = OFFICIAL_FACTORS if self.official else {}
        self.weights: dict[str, float] = {k: float(v) * factors.get(k, 1.0) for k, v in w.items()}

    @classmethod
    def from_config(cls, loss, num_classes: int) -> "MultiTaskLoss":
        """Built from a :class:`dml_csr.config.LossConfig`."""
        return cls(num_classes, preset=loss.preset, lambdas=loss.lambdas, alphas=loss.alphas,
                   class_weights=loss.class_weights, lovasz=loss.lovasz, lovasz_per_image=loss.lovasz_per_image,
                   temperature=loss.temperature)

    def __call__(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Tensor],
                 teacher_outputs: Optional[Mapping[str, Tensor]] = None, cycle: int = 0) -> dict[str, Tensor]:
        if "parsing" not in outputs:
            raise KeyError(f"model outputs have keys {sorted(outputs)}; expected at least 'parsing'")
        terms = self.supervised_terms(outputs, batch)
        if teacher_outputs is not None:
            terms.update(self.distillation_terms(outputs, batch, teacher_outputs, cycle))
        terms["total"] = sum(self.weights[k] * v for k, v in terms.items())
        return terms

    def supervised_terms(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The eq. 5 terms of the heads present, unweighted."""
        ig = self.ignore_index
        parsing = outputs["parsing"]
        labels = _target(batch, "label", "parsing")
        ce_map = pixel_ce(parsing, labels, ig)  # (B, H, W), shared by CE and the attention terms
        terms: dict[str, Tensor] = {"parsing_ce": ce_map.sum() / (labels != ig).sum().clamp_min(1)}
        if self.lovasz:
            terms["parsing_lovasz"] = parsing_lovasz(parsing, labels, ig, per_image=self.lovasz_per_image)
        if "edge" in outputs:
            edge = _target(batch, "edge", "edge")
            terms["edge_ce"] = binary_edge_ce(outputs["edge"], edge, ig)
            terms["edge_attention"] = binary_edge_attention(parsing, labels, edge, ce_map, ig)
        if "semantic_edge" in outputs:
            sem = _target(batch, "semantic_edge", "semantic_edge")
            terms["semantic_edge_ce"] = semantic_edge_ce(outputs["semantic_edge"], sem,
                                                         "frequency" if self.official else "balanced", ig)
            terms["semantic_edge_attention"] = semantic_edge_attention(
                parsing, labels, sem, self.class_weights, ce_map, class_index_bug=self.official, ignore_index=ig)
        return terms

    def distillation_terms(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Tensor],
                           teacher_outputs: Mapping[str, Tensor], cycle: int) -> dict[str, Tensor]:
        """The KL terms of eq. 7 for every head present in both the student's and the teacher's outputs."""
        terms = {}
        for head, (key, name) in _KL_HEADS.items():
            if head not in outputs or head not in teacher_outputs:
                continue
            target = _target(batch, key, head)
            teacher = teacher_outputs[head]
            if self.official:
                teacher = mix_with_onehot(teacher, target, 1.0 / (cycle + 1), self.ignore_index)
            terms[name] = kl_distill(outputs[head], teacher, valid=target != self.ignore_index,
                                     temperature=self.temperature)
        return terms
