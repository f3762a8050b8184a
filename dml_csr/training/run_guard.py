"""A run directory protects itself: one training in it at a time, and a resume that continues the run it was.

- :func:`run_lock`: an exclusive lock (``flock``) on ``<run>/.lock`` for the whole training (the main process of a
  torchrun job holds it). A second training on the directory stops at once with one line naming the process that
  holds it; a lock left by a process that died (killed, the machine restarted) is taken over, and the log says so.
- :func:`resume_checkpoint`: the checkpoint to continue from, refused in one line when it was trained as another
  model or on another label set (which would fail in ``load_state_dict``), or with other data or schedule settings
  (which would go on silently), unless ``allow_changes``. Then :func:`record_changes` appends the difference to
  ``metrics.jsonl`` and keeps the earlier config as ``config_until_epoch_NNNN.yaml`` beside the new ``config.yaml``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import socket
import time
from typing import Iterator, Optional

from .._typed import shown
from ..checkpoint import CheckpointError, RunPaths, find_resume_checkpoint, load_checkpoint
from ..config import Config, DataConfig, LossConfig, TrainConfig, config_to_dict
from ..data.class_map import label_spec
from ..files import write_bytes

try:
    import fcntl
except ImportError:  # not a POSIX system: no lock
    fcntl = None

__all__ = ["run_lock", "resume_checkpoint", "check_same_model", "config_changes", "record_changes", "LOCK_FILE",
           "FREE_TO_CHANGE"]

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
# settings a resume may change freely: where and how the same computation runs, and what it reports
# (and init_from, read only when a run starts: a resume takes the weights from its checkpoint)
FREE_TO_CHANGE = {"data": ("workers",), "train": ("device", "log_every", "image_log_every", "keep_last",
                                                  "dist_timeout_s", "compile", "init_from")}


@contextlib.contextmanager
def run_lock(run_dir: str, enabled: bool = True) -> Iterator[None]:
    """Hold the exclusive lock of ``run_dir`` (created if missing) while the block runs; ``enabled=False`` (the
    other processes of a job) holds nothing. Raises :class:`~dml_csr.checkpoint.CheckpointError` when another
    process holds it."""
    if not enabled or fcntl is None:
        yield
        return
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CheckpointError(f"run directory '{run_dir}' is in use by another training ({_holder(fd)}); wait for "
                                  "it to end, or choose another name (--set name=...)") from None
        left = _holder(fd)
        if left:  # a holder releases by emptying the file: this one never did
            log.warning("run directory '%s': taking over the lock left by %s, which is no longer running", run_dir,
                        left)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}"
                      .encode(), 0)
        yield
        os.ftruncate(fd, 0)  # released cleanly
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _holder(fd: int) -> str:
    """What the lock file says about its holder ("process N on HOST since TIME"), or ""."""
    return os.pread(fd, 200, 0).decode("utf-8", "replace").strip()


def resume_checkpoint(cfg: Config, paths: RunPaths, resume: Optional[str], allow_changes: bool = False
                      ) -> Optional[dict]:
    """The checkpoint ``resume`` names (a file or a run directory; None: a new run, which must find no checkpoint in
    ``paths``), checked against ``cfg``: the same model and label set always, the same data and schedule unless
    ``allow_changes`` (the differences are then in the returned dict's ``"config_changes"``)."""
    if resume is not None and os.path.isdir(resume) and not RunPaths(resume).checkpoints():
        # a restart script that always passes --resume: the first launch starts the run
        log.warning("--resume: '%s' holds no checkpoint yet; starting the run from the beginning", resume)
        resume = None
    if resume is None:
        if paths.checkpoints():
            raise CheckpointError(f"run directory '{paths.root}' already holds checkpoints; pass --resume to "
                                  f"continue it or choose another name (--set name=...)")
        return None
    path = find_resume_checkpoint(resume)
    ckpt = load_checkpoint(path, map_location="cpu")
    if not isinstance(ckpt, dict) or "train_state" not in ckpt:
        raise CheckpointError(f"'{path}' holds no training state (an inference checkpoint?); resume needs one of "
                              f"{paths.ckpt_dir}/epoch_*.pt")
    check_same_model(cfg, ckpt, path)
    changes = config_changes(cfg, ckpt)
    if changes and not allow_changes:
        raise CheckpointError(f"'{path}' was trained with other data or schedule settings ({'; '.join(changes[:4])}"
                              f"{' ...' if len(changes) > 4 else ''}); resume with the config it was trained with (its "
                              "run directory's config.yaml), or pass --allow-changes to go on with these")
    ckpt["config_changes"] = changes
    return ckpt


def check_same_model(cfg: Config, ckpt: dict, path: str) -> None:
    """A checkpoint resumes only the model it was trained as, on the classes it was trained on: the message names
    the settings that differ."""
    theirs = (ckpt.get("config") or {}).get("model", {})
    ours = config_to_dict(cfg)["model"]
    differ = [k for k in ours if k in theirs and k not in ("pretrained", "sync_bn") and ours[k] != theirs[k]]
    if differ:
        text = ", ".join(f"model.{k} = {shown(theirs[k])} there, {shown(ours[k])} here" for k in differ[:4])
        raise CheckpointError(f"'{path}' was trained with other model settings ({text}); resume it with the config "
                              f"it was trained with (its run directory's config.yaml)")
    classes = list((ckpt.get("meta") or {}).get("classes") or [])
    spec = label_spec(cfg)
    if classes and classes != list(spec.classes):
        theirs_text, ours_text = (shown(", ".join(c), 80)[1:-1] for c in (classes, spec.classes))
        raise CheckpointError(f"'{path}' was trained on {len(classes)} classes ({theirs_text}), data.dataset "
                              f"'{spec.name}' has {spec.num_classes} ({ours_text}); resume with the dataset it was "
                              "trained on")


def config_changes(cfg: Config, ckpt: dict) -> list[str]:
    """The data, schedule (train, loss) and seed settings of ``cfg`` that differ from those ``ckpt`` was trained
    with, as "key: old -> new" (settings in :data:`FREE_TO_CHANGE` left out)."""
    theirs, ours = ckpt.get("config") or {}, config_to_dict(cfg)
    if not theirs:
        return []
    out = [f"seed: {shown(theirs.get('seed'))} -> {ours['seed']}"] if theirs.get("seed", ours["seed"]) != ours["seed"] \
        else []
    for section, kind in (("data", DataConfig), ("train", TrainConfig), ("loss", LossConfig)):
        old, new, defaults = theirs.get(section) or {}, ours[section], _defaults(kind)
        for key in new:
            # a key the run's config predates was trained with its default (e.g. data.align: whole)
            before = old.get(key, defaults.get(key, new[key]))
            if key in FREE_TO_CHANGE.get(section, ()) or before == new[key]:
                continue
            out.append(f"{section}.{key}: {shown(before, 60)} -> {shown(new[key], 60)}")
    return out


def _defaults(kind) -> dict:
    """The plain (YAML-safe) defaults of a config section's fields; fields without one are left out."""
    out = {}
    for f in dataclasses.fields(kind):
        if f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            continue
        value = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
        out[f.name] = json.loads(json.dumps(value))  # tuples -> lists, as config_to_dict writes them
    return out


def record_changes(paths: RunPaths, ckpt: dict) -> None:
    """After ``--allow-changes``: the earlier config kept as ``config_until_epoch_NNNN.yaml`` (the config the first
    NNNN epochs were trained with) and the difference appended to ``metrics.jsonl``."""
    changes = ckpt.get("config_changes")
    if not changes:
        return
    import yaml

    epoch = int(ckpt["train_state"].get("epoch", 0))
    kept = os.path.join(paths.root, f"config_until_epoch_{epoch:04d}.yaml")
    write_bytes(kept, yaml.safe_dump(ckpt.get("config") or {}, sort_keys=False).encode())
    with open(paths.metrics, "a") as f:
        f.write(json.dumps({"time": time.time(), "type": "config_change", "epoch": epoch, "changes": changes,
                            "earlier_config": os.path.basename(kept)}) + "\n")
    log.warning("resuming after epoch %d with changed settings (--allow-changes): %s; the earlier config is kept as %s",
                epoch, "; ".join(changes), kept)
