"""Checkpoint files and run directories: one fixed schema, atomic writes, ``weights_only`` loads, and where a run
keeps what it writes (:class:`RunPaths`) and resumes from (:func:`find_resume_checkpoint`).

A checkpoint is a plain dict; every key any writer puts in it::

    {
      "format": "dml_csr/1",
      "model": state_dict,                  # our parameter names
      "meta": {                             # make_meta(): what prediction needs
          "classes": [...], "dataset": str, "num_classes": int,
          "channel_order": "BGR"|"RGB", "mean": [3], "std": [3], "input_size": [h, w], "model_name": str,
          # classes that are no registry entry (a custom root, a class map): how to draw, flip and score them
          "palette": [[r, g, b] x C], "flip_pairs": [[i, j], ...], "groups": {name: [i, ...]}, "f1_classes": [i, ...],
          "crop": {...},                    # checkpoints a training writes: how its faces were cropped
                                            # (dml_csr.data.face_template; {"kind": "whole_image"} without one)
          "source": "official",             # checkpoints converted from the authors' files
      },
      "config": resolved config dict,       # enough to rebuild the model
      # epoch and stop checkpoints (checkpoints/epoch_*.pt), what a resume reads:
      "optimizer": state_dict, "scaler": GradScaler state_dict,
      "train_state": {"epoch", "step", "batches_done", "best_score", "best_mean_f1", "best_epoch", "epoch_sums"},
      "csr": {"best_state", "phase1_best", "teacher_state", "running_sum": {"count", "sums", "last"}},
      "rng": {"torch", "numpy", "cuda" (where CUDA is)},   # for the record: nothing restores them
      # best.pt: the epoch (from 1) and model it holds, "student" or "ensemble_<k>", and its validation scores
      "epoch": int, "tag": str, "select_metric": "mean_f1"|"overall_f1"|"miou", "val_score": float,
      "val_mean_f1": float,
      # scripts/convert_official.py: the authors' file it was converted from
      "source_file": str,
    }

The metadata alone is enough for prediction: class names and the input convention travel with the weights.

A run directory ``runs/<name>/`` holds ``config.yaml``, ``metrics.jsonl``, ``tb/``, ``checkpoints/epoch_NNNN.pt`` (after
N epochs), ``checkpoints/epoch_NNNN_batch_MMMMMM.pt`` (a stop M batches into epoch N + 1) and ``best.pt``.

``load_model(path)`` rebuilds the network of a checkpoint in this schema, of an authors' released DML-CSR file (a
raw state_dict: their architecture and their input convention, BGR images normalised with the RGB ImageNet mean and
std at 473x473, both the config's defaults, :func:`official_config`; the class count from ``layer6.conv4.weight``),
of a weights registry name (:mod:`dml_csr.hub`), or of a model folder (``model.safetensors`` and ``config.json``,
:mod:`dml_csr.sharing.folder`) on disk or on the Hugging Face Hub (``hf://OWNER/REPO[@REVISION]``).
"""
from __future__ import annotations

import copy
import glob
import logging
import os
import re
import zipfile
from typing import Any, Optional, Union

import torch
from torch import nn

from .config import Config, DataConfig, ModelConfig, config_from_dict
from .data.class_map import label_spec
from .data.labels import LabelSpec, get_spec, spec_meta
from .files import atomic_write, remove_partial_writes
from .hub import check_local, get_weights, is_name, resolve
from .inference import check_convention
from .models import build_model
from .models.weights import first_line, first_non_finite
from .models.official import (StateDictMismatch, convert_official_state_dict, is_official_state_dict,
                              load_state_dict_strict, official_num_classes, ours_to_official, unwrap_state_dict)

__all__ = ["FORMAT", "CheckpointError", "make_meta", "save_checkpoint", "load_checkpoint", "atomic_torch_save",
           "RunPaths", "find_resume_checkpoint", "load_model", "official_meta", "official_config", "build_from_official",
           "OFFICIAL_DATASETS", "check_finite_weights"]

log = logging.getLogger(__name__)

FORMAT = "dml_csr/1"


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used; the message names the file and what is wrong."""


def make_meta(cfg: Config, spec: Optional[LabelSpec] = None, **extra: Any) -> dict:
    """Checkpoint metadata: the class layout ``spec`` (default: :func:`dml_csr.data.class_map.label_spec` of ``cfg``) and the
    input convention and model of ``cfg``; ``extra`` adds the optional keys of the schema (``crop``, ``source``).

    The one builder of a meta: the authors' files get theirs from a config of the defaults, whose input convention is
    theirs (:mod:`dml_csr.conventions`; :func:`dml_csr.checkpoint.official_meta`)."""
    spec = label_spec(cfg) if spec is None else spec
    return {
        "classes": list(spec.classes),
        "dataset": spec.name,
        "num_classes": spec.num_classes,
        "channel_order": cfg.model.channel_order,
        "mean": list(cfg.model.mean),
        "std": list(cfg.model.std),
        "input_size": list(cfg.data.input_size),
        **({"tanh_warp": float(cfg.data.tanh_warp)} if cfg.data.tanh_warp else {}),  # the crop it was trained on
        "model_name": cfg.model.name,
        **spec_meta(spec),  # nothing for a registry entry: its name finds it
        **extra,
    }


def atomic_torch_save(obj: Any, path: str) -> None:
    """``torch.save`` through :func:`dml_csr.files.atomic_write` (a failure is a :class:`~dml_csr.files.WriteError`
    naming ``path``)."""
    atomic_write(path, lambda f: torch.save(obj, f), suffix=".pt")


def save_checkpoint(path: str, model_state: dict, meta: dict, config: Optional[dict] = None, **extra: Any) -> None:
    """Write a checkpoint in our schema, atomically."""
    ckpt = {"format": FORMAT, "model": model_state, "meta": meta, "config": config or {}}
    ckpt.update(extra)
    atomic_torch_save(ckpt, path)


# what scripts/export.py writes besides checkpoints: files a runtime runs, not weights this loader reads
EXPORTED_KINDS = {".onnx": "an ONNX model", ".xml": "an OpenVINO model", ".ts": "a TorchScript model",
                  ".pt2": "an exported program"}


def load_checkpoint(path: str, map_location: Any = "cpu") -> dict:
    """Load any checkpoint file with ``weights_only=True``; errors name the file."""
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "model.safetensors")) and not os.path.isfile(
                os.path.join(path, "config.json")):  # a model folder's weights without its config
            raise CheckpointError(f"'{path}' holds model.safetensors but no config.json: a model folder "
                                  f"(scripts/export.py --format hf) needs both; export it again")
        raise CheckpointError(f"checkpoint '{path}' is a directory; give a checkpoint file (a run directory's is "
                              f"checkpoints/epoch_NNNN.pt or best.pt)")
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    kind = EXPORTED_KINDS.get(os.path.splitext(path)[1].lower()) or ("a TorchScript model" if _torchscript(path)
                                                                      else None)
    if kind:
        raise CheckpointError(f"'{path}' is {kind} (scripts/export.py), not a checkpoint: give the checkpoint it was "
                              f"exported from (e.g. runs/NAME/best.pt); predict.py and FaceParser also run its ONNX "
                              f"and OpenVINO files")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # corrupt, truncated, or holding non-tensor objects
        raise CheckpointError(f"checkpoint '{path}' cannot be loaded with weights_only=True (corrupt, truncated, or "
                              f"holding objects other than tensors and plain values): {first_line(e)}") from None


def _torchscript(path: str) -> bool:
    """Whether ``path`` is a TorchScript archive (a zip with ``constants.pkl``, which ``torch.save`` never writes)."""
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("/constants.pkl") or n == "constants.pkl" for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


class RunPaths:
    """The files of one run directory (``runs/<name>/``, see the module docstring)."""

    def __init__(self, run_dir: str):
        self.root = run_dir
        self.config = os.path.join(run_dir, "config.yaml")
        self.metrics = os.path.join(run_dir, "metrics.jsonl")
        self.tb = os.path.join(run_dir, "tb")
        self.ckpt_dir = os.path.join(run_dir, "checkpoints")
        self.best = os.path.join(run_dir, "best.pt")

    def epoch_ckpt(self, epoch: int) -> str:
        """The checkpoint after ``epoch`` epochs."""
        return os.path.join(self.ckpt_dir, f"epoch_{epoch:04d}.pt")

    def stop_ckpt(self, epoch: int, batches: int) -> str:
        """The checkpoint of a stop ``batches`` batches into the epoch after ``epoch`` epochs."""
        return os.path.join(self.ckpt_dir, f"epoch_{epoch:04d}_batch_{batches:06d}.pt")

    @staticmethod
    def _position(path: str) -> tuple[int, int]:
        m = re.search(r"epoch_(\d+)(?:_batch_(\d+))?\.pt$", path)
        return int(m.group(1)), int(m.group(2) or 0)

    def checkpoints(self) -> list[str]:
        """The epoch and stop checkpoints, oldest first."""
        files = [p for p in glob.glob(os.path.join(self.ckpt_dir, "epoch_*.pt"))
                 if re.search(r"epoch_\d+(_batch_\d+)?\.pt$", p)]
        return sorted(files, key=self._position)

    def remove_partial_writes(self) -> list[str]:
        """Delete the temporary files of checkpoint writes that never finished (a kill during ``torch.save``)."""
        return remove_partial_writes(self.root, self.ckpt_dir, pattern=".tmp-*.pt")

    def prune(self, keep: int) -> None:
        """Keep the newest ``keep`` (at least one) epoch checkpoints, and the stop checkpoints newer than them."""
        ckpts = self.checkpoints()
        clean = [p for p in ckpts if self._position(p)[1] == 0]
        for old in clean[:-max(keep, 1)]:
            os.remove(old)
        if clean:
            newest = self._position(clean[-1])
            for stop in ckpts:
                if self._position(stop)[1] and self._position(stop) < newest:
                    os.remove(stop)


def find_resume_checkpoint(target: str) -> str:
    """A checkpoint file, or the newest epoch checkpoint of a run directory."""
    if os.path.isfile(target):
        return target
    if os.path.isdir(target):
        ckpts = RunPaths(target).checkpoints()
        if ckpts:
            return ckpts[-1]
        raise CheckpointError(f"run directory '{target}' has no checkpoints/epoch_*.pt to resume from")
    raise CheckpointError(f"--resume '{target}' is neither a checkpoint file nor a run directory")


# the authors' class count -> our label registry entry (Helen and LaPa share the 11-class layout)
OFFICIAL_DATASETS = {11: "helen", 19: "celebamask_hq"}


def official_config(dataset: str, edge_heads: bool = False) -> Config:
    """The config of an authors' model for the class layout ``dataset``: the defaults, which are their architecture
    and their input convention (:mod:`dml_csr.conventions`)."""
    return Config(name=f"official_{dataset}", data=DataConfig(dataset=dataset, root=""),
                  model=ModelConfig(edge_heads=edge_heads))


def official_meta(num_classes: int, dataset: Optional[str] = None) -> dict:
    """Metadata of an authors' file (:func:`dml_csr.checkpoint.make_meta` of :func:`official_config`): the classes of
    ``dataset``, by default the layout of their class count (``class_<i>`` for an unknown one), their input
    convention, and ``source: official``."""
    dataset = dataset or OFFICIAL_DATASETS.get(num_classes)
    if dataset is not None:
        spec = get_spec(dataset)
    else:
        log.warning("authors' file with %d classes: no known class names, using class_<i>", num_classes)
        spec = LabelSpec("unknown", tuple(f"class_{i}" for i in range(num_classes)))
    return make_meta(official_config(spec.name), spec, source="official")


def build_from_official(sd: dict, source: str, edge_heads: bool = False, norm: str = "abn") -> nn.Module:
    """Build the authors' architecture for ``sd``'s class count and load ``sd`` (their names) strictly."""
    sd = unwrap_state_dict(sd, source)
    num_classes = official_num_classes(sd, source)
    cfg = ModelConfig(edge_heads=edge_heads, norm=norm)
    with torch.device("meta"):
        model = build_model(cfg, num_classes)
    model = model.to_empty(device="cpu")
    _reset_counters(model)
    ours = convert_official_state_dict(sd, source)
    load_state_dict_strict(model, ours, source, display=_official_name)
    return model


def _official_name(ours: str) -> str:
    try:
        return ours_to_official(ours)
    except KeyError:
        return ours


def _reset_counters(model: nn.Module) -> None:
    """Buffers that a file may omit (num_batches_tracked) must not hold uninitialised memory after to_empty."""
    for name, buf in model.named_buffers():
        if name.endswith("num_batches_tracked"):
            buf.zero_()


def _build_ours(ckpt: dict, source: str, edge_heads: bool) -> tuple[nn.Module, dict]:
    meta = dict(ckpt.get("meta") or {})
    if not ckpt.get("config"):
        raise CheckpointError(f"{source}: checkpoint has no 'config'; it cannot rebuild its model")
    cfg = config_from_dict(ckpt["config"])
    mcfg = copy.deepcopy(cfg.model)
    mcfg.pretrained = ""  # the checkpoint's weights replace any ImageNet initialisation
    mcfg.edge_heads = edge_heads
    state = ckpt["model"]
    num_classes = meta.get("num_classes")
    if num_classes is None:
        raise CheckpointError(f"{source}: checkpoint meta has no 'num_classes'")
    file_classes = state.get("decoder.conv4.weight")
    if file_classes is not None and file_classes.shape[0] != num_classes:
        raise StateDictMismatch(f"{source}: meta says {num_classes} classes but 'decoder.conv4.weight' has "
                                f"{file_classes.shape[0]}")
    if "classes" in meta and len(meta["classes"]) != num_classes:
        raise StateDictMismatch(f"{source}: meta lists {len(meta['classes'])} class names for {num_classes} classes")
    with torch.device("meta"):
        model = build_model(mcfg, num_classes, meta.get("classes"))
    model = model.to_empty(device="cpu")
    _reset_counters(model)
    load_state_dict_strict(model, state, source)
    return model, meta


def _read_weights(path: str) -> Any:
    """A checkpoint file's content, or a model folder's (or its ``model.safetensors``'s) as a checkpoint in our
    schema, read without pickle (:func:`dml_csr.sharing.folder.read_folder`)."""
    from .sharing import folder

    if str(path).endswith(".safetensors") or folder.is_model_folder(path):
        return folder.read_folder(path)
    return load_checkpoint(path)


def load_model(path: str, device: Union[str, torch.device] = "cpu", edge_heads: bool = False
               ) -> tuple[nn.Module, dict]:
    """Load a model from our checkpoint or an authors' DML-CSR file; returns (model in eval mode, meta).

    Args:
        path: a checkpoint in our format (``{"format": "dml_csr/1", ...}``), an authors' state_dict (raw, in a
            ``state_dict`` wrapper, with or without ``module.``/``edge_layer.*``/``num_batches_tracked``), a
            :mod:`dml_csr.hub` registry name (``dml_csr_helen``: fetched into the cache and verified first), a model
            folder written by ``scripts/export.py --format hf`` (or its ``model.safetensors``), or a Hub name
            ``hf://OWNER/REPO[@REVISION]`` of one.
        device: where the model goes.
        edge_heads: keep the edge heads (training model); the file must then contain them.

    ``meta`` holds ``classes``, ``num_classes``, ``channel_order``, ``mean``, ``std``, ``input_size``: what every
    consumer needs to feed the model. Mismatching names, shapes or class counts, a weight that is not finite (the
    first named) and a meta whose mean, std or input size is not finite or out of range raise an error naming them.
    A registry name is the registry's file even where a local file has that name; a local file is loaded only from
    a path-like argument (``./name``, an absolute path, one with an extension: :func:`dml_csr.hub.is_path_like`).
    """
    entry = get_weights(path) if is_name(path) else None
    if entry is not None or str(path).startswith("hf://"):
        path = resolve(path, kind="dml_csr")
    else:
        check_local(path)
        log.info("weights: the local file '%s'", path)
    obj = _read_weights(path)
    check_finite_weights(obj, path)
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        model, meta = _build_ours(obj, path, edge_heads)
    elif isinstance(obj, dict) and obj.get("format") is not None:
        raise CheckpointError(f"{path}: checkpoint format '{obj.get('format')}' is not supported; expected {FORMAT}")
    else:
        sd = unwrap_state_dict(obj, path)
        if not is_official_state_dict(sd):
            raise CheckpointError(f"{path}: neither a dml_csr checkpoint (no 'format' key) nor an authors' DML-CSR "
                                  "state_dict (no 'layer6.conv4.weight')")
        model = build_from_official(sd, path, edge_heads=edge_heads)
        # Helen and LaPa share a class count: a registry entry names which of them the file is
        named = entry is not None and entry.dataset and len(entry.classes) == model.num_classes
        meta = official_meta(model.num_classes, entry.dataset if named else None)
    try:
        check_convention(meta, f"{path}: meta")
    except ValueError as e:
        raise CheckpointError(str(e)) from None
    model.to(device).eval()
    return model, meta


def check_finite_weights(obj: Any, path: str) -> None:
    """Refuse a file whose weights hold NaN or infinity (a diverged or damaged run), naming the first such tensor:
    loaded, it would predict one class everywhere without a word."""
    state = obj.get("model") if isinstance(obj, dict) and obj.get("format") == FORMAT else obj
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    bad = first_non_finite(state) if isinstance(state, dict) else None
    if bad is not None:
        raise CheckpointError(f"{path}: weight '{bad[0]}' holds {bad[1]} of {bad[2]} values that are not finite "
                              "(NaN or infinity); the file is damaged or from a run that diverged")
