"""The evaluation protocol: a model scored on a split, its predictions mapped back onto the original label maps.

Each image goes through the evaluation affine to the network input (the whole image, aspect kept), the model
predicts there, and the prediction goes back onto the image's own label map through the inverse of that affine before
it enters one confusion matrix pooled over the split (255 ignored): the authors' protocol.
"""
from __future__ import annotations

from typing import Callable, Iterable, Optional, Sequence

import numpy as np
import torch

from ..data.transforms import batch_input, inverse_affine
from ..distributed import unwrap_model
from ..inference import predict_probs
from .metrics import ConfusionMatrix

__all__ = ["evaluate"]


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: Iterable, dataset, num_classes: int, *, device: torch.device,
             scales: Sequence[float] = (1.0,), flip_perm: Optional[Sequence[int]] = None, precision: str = "fp32",
             channels_last: bool = False, original_resolution: bool = True, paste: str = "nearest",
             on_prediction: Optional[Callable[[str, np.ndarray], None]] = None, progress=None) -> ConfusionMatrix:
    """Score ``model`` on a split: predictions are mapped back onto each original label map (inverse of the
    evaluation affine) before they enter one pooled confusion matrix.

    Args:
        dataset: the loader's dataset; ``dataset.load_label(index)`` gives an original label map.
        original_resolution: False scores at network resolution against the warped labels instead (faster; for
            validation during training).
        paste: how a prediction goes back onto the original grid: "nearest" (the authors' protocol: the argmax at
            network resolution, warped nearest-neighbour) or "smooth" (the probabilities warped bilinearly, then the
            argmax; outside the warped region every probability is 0, i.e. background, as nearest's fill).
    A model that places crops from keypoints (``uses_keypoints``) gets the batch's ``keypoints`` when it has them.
        on_prediction: called with (sample name, label map at the scored resolution), e.g. to save it.
    """
    if paste not in ("nearest", "smooth"):
        raise ValueError(f"paste must be 'nearest' or 'smooth', got {paste!r}")
    model.eval()
    cm = ConfusionMatrix(num_classes)
    index_of = {name: i for i, name in enumerate(dataset.names)} if original_resolution else {}
    uses_keypoints = getattr(unwrap_model(model), "uses_keypoints", False)
    for batch in loader:
        images = batch_input(batch, device)
        keypoints = batch["keypoints"].to(device) if uses_keypoints and "keypoints" in batch else None
        probs = predict_probs(model, images, scales=scales, flip_perm=flip_perm, precision=precision,
                              channels_last=channels_last, keypoints=keypoints)
        pred = probs.argmax(1).to(torch.uint8).cpu().numpy()
        for j in range(pred.shape[0]):
            if original_resolution:
                lab = (inverse_affine(pred[j], batch["meta"][j], mode="nearest") if paste == "nearest" else
                       _paste_smooth(probs[j], batch["meta"][j]))
                gt = dataset.load_label(index_of[batch["name"][j]])
            else:
                lab = pred[j]
                gt = batch["label"][j].numpy()
            cm.update(torch.from_numpy(np.ascontiguousarray(lab)), torch.from_numpy(np.ascontiguousarray(gt)))
            if on_prediction is not None:
                on_prediction(batch["name"][j], lab)
        if progress is not None:
            progress.update(pred.shape[0])
    cm.all_reduce()
    return cm


def _paste_smooth(probs: torch.Tensor, meta: dict) -> np.ndarray:
    """(C, h, w) probabilities -> (H, W) uint8 argmax of their bilinear inverse-affine warp onto the original grid."""
    warped = inverse_affine(np.ascontiguousarray(probs.permute(1, 2, 0).cpu().numpy()), meta, mode="bilinear")
    return warped.argmax(-1).astype(np.uint8)
