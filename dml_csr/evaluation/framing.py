"""How a face is framed for scoring, and where it is scored: the switches behind other papers' published numbers.

- ``align="whole"`` (the authors', the default): each whole image through the evaluation affine (aspect kept).
  ``align="landmarks"``: each face through the similarity (rotation, uniform scale, translation; least squares)
  that takes its own five landmarks (``<split>/landmarks/NAME.txt``: five keypoints, or LaPa's 106 through the five
  FaRL picks) onto the checkpoint's landmark template (``meta["crop"]``): FaRL's framing of LaPa (its RoI tanh warp
  on top when the checkpoint was trained with one, ``meta["tanh_warp"]``), and the prediction goes back through the
  inverse. A checkpoint trained on faces framed that way (``data.align: landmarks``) is scored so by default
  (:func:`trained_align`).
- ``score_at="original"`` (the default): the prediction mapped back onto each original label map.
  ``score_at="input"``: the ground truth warped onto the network input by the image's own affine (nearest, outside
  the image ignored) and scored there against the prediction at the input: SegFace's way, which scores its labels
  nearest-resized to the input (the same thing for an image of the input's aspect, up to where the two sample).
"""
from __future__ import annotations

from typing import Optional

from ..data.face_template import check_crop, framed_by_landmarks

__all__ = ["SCORE_AT", "ALIGNS", "trained_align", "landmark_crop", "describe", "check_switches", "summary_line"]

SCORE_AT = ("original", "input")
ALIGNS = ("whole", "landmarks")


def landmark_crop(meta: dict, path: str) -> dict:
    """The landmark template a checkpoint's faces were framed by (``meta["crop"]``); one line naming ``path`` when
    it records the whole-image crop instead."""
    crop = check_crop(meta.get("crop"))
    if crop.get("kind") != "template":
        raise ValueError(f"--align landmarks frames each face onto the checkpoint's landmark template, but '{path}' "
                         f"records the whole-image crop (meta['crop']); train on a root with a face_template.json "
                         f"(scripts/measure_template.py), or with data.align=landmarks, or score with --align whole")
    return crop


def trained_align(meta: dict) -> str:
    """The framing a checkpoint's faces had in training, what ``--align`` defaults to: ``landmarks`` for a model
    trained with ``data.align: landmarks`` (its ``meta["crop"]`` says so), else ``whole``."""
    return "landmarks" if framed_by_landmarks(check_crop(meta.get("crop"))) else "whole"


def describe(score_at: str, align: str, paste: str, tanh_warp: float = 0.0) -> str:
    """What ``metrics.json`` says was scored where (``resolution.scored_at``); ``tanh_warp``: the model's crop's."""
    framing = ("each face's similarity from its five landmarks to the checkpoint's template" if align == "landmarks"
               else "the inverse evaluation affine")
    if tanh_warp:
        framing += f" and the RoI tanh warp (factor {tanh_warp:g})"
    if score_at == "input":
        return (f"network input (the ground truth warped onto it by {framing.replace('inverse ', '')}, nearest, "
                f"outside the image ignored)")
    how = ("prediction argmax at the network input, mapped back with " + _inverse(framing) + ", nearest"
           if paste == "nearest" else
           f"class {'probabilities' if paste == 'smooth' else 'log-probabilities'} mapped back with "
           + _inverse(framing) + ", bilinear, then the argmax")
    return f"original label resolution ({how})"


def _inverse(framing: str) -> str:
    return framing if framing.startswith("the inverse") else f"the inverse of {framing}"


def check_switches(score_at: str, align: str) -> None:
    if score_at not in SCORE_AT:
        raise ValueError(f"score_at must be one of {', '.join(SCORE_AT)}, got {score_at!r}")
    if align not in ALIGNS:
        raise ValueError(f"align must be one of {', '.join(ALIGNS)}, got {align!r}")


def summary_line(protocol: dict) -> Optional[str]:
    """The printed line naming the switches a score was made with (None for a record without them)."""
    if protocol.get("score_at") is None:
        return None
    return (f"protocol: --score-at {protocol['score_at']}, --align {protocol['align']}, --paste {protocol['paste']}, "
            f"flip {'on' if protocol.get('flip') else 'off'}, scales {protocol.get('scales')}"
            + (_crf_words(protocol["crf"]) if protocol.get("crf") else ""))


def _crf_words(crf: dict) -> str:
    """``, --crf 5`` and the kernel settings that differ from the defaults (``--crf-kernel bilateral_rgb=20``)."""
    from ..models.dense_crf import CRFParams, changed_kernels, kernel_text

    words = kernel_text(changed_kernels(CRFParams(**crf)))
    return f", --crf {crf['iterations']}" + (f" --crf-kernel {words}" if words else "")
