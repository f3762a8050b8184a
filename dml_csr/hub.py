"""Weights by name: a registry of the files a user can download (the authors' DML-CSR checkpoints, the CE2P deep-stem
ResNet-101 ImageNet initialisation, the YuNet face detector), fetched into a cache and checked before every use.

``fetch("yunet_2023mar")`` returns the local path, downloading the file if the cache lacks it. The cache is
``$DML_CSR_HOME`` (default ``~/.cache/dml_csr``); files live under ``<cache>/weights/<filename>``.

Every entry can be verified, after a download and again each time a cached file is used:

- ``size`` and ``sha256`` where they are known (a short or wrong download is refused: urllib does not raise on a body
  shorter than its Content-Length, so the size and hash are what catch it);
- otherwise ``structure``: a few state_dict keys with their shapes (``torch.load(..., weights_only=True)``, inside a
  ``state_dict`` wrapper or not, ``module.`` prefixes stripped); the file's sha256 is logged so it can be pinned.

A download goes to a temporary file beside the final one and is renamed onto it only once it passes, so a failed or
interrupted download never leaves a partial file at the final path. A cached file that fails is moved aside to
``<path>.rejected`` and the error says so.

Plain URLs go through :func:`torch.hub.download_url_to_file`, Google Drive files through ``gdown`` (optional:
``pip install gdown`` or ``pip install dml_csr[hub]``). ``DML_CSR_MIRROR=<base URL>`` fetches every file from a
mirror instead: a plain URL keeps its path with the scheme and host replaced by the base
(``https://github.com/a/b.onnx`` -> ``<base>/a/b.onnx``), a Google Drive file is read from
``<base>/gdrive/<file or folder id>/<filename>``. ``fetch(name, url=...)`` overrides the source of one call.
Offline, put the file at the path the error names (``<cache>/weights/<filename>``); it is verified like a download.
The authors' checkpoints, without per-file ids, come from their whole share (:mod:`dml_csr.sharing.drive`). Hub names,
``hf://OWNER/REPO[@REVISION]``, are model folders in the Hub's cache (:mod:`dml_csr.sharing.hf`); an entry with
``source="hf"`` names one in its ``url`` and may pin the sha256 of its ``model.safetensors``.
"""
from __future__ import annotations

import logging
import os
import urllib.error
import urllib.parse
import uuid
from dataclasses import dataclass
from typing import Any, Optional

import torch

from .data.labels import get_spec

__all__ = ["Weights", "WEIGHTS", "HubError", "KINDS", "cache_dir", "weights_path", "fetch", "is_name", "resolve",
           "is_path_like", "check_local", "get_weights", "list_weights", "register", "sha256_of"]

log = logging.getLogger(__name__)

KINDS = ("dml_csr", "backbone", "detector")
DRIVE_FOLDER = "https://drive.google.com/drive/folders/{}"
DRIVE_FILE = "https://drive.google.com/uc?id={}"
Shape = tuple[int, ...]


class HubError(OSError):
    """A registry file that cannot be fetched or fails its check; one line naming the entry, the URL and the file
    (an OSError: the scripts report it as one line, as any file they cannot read)."""


@dataclass(frozen=True)
class Weights:
    """One downloadable file.

    Attributes:
        name: registry key.
        filename: the file's name in the cache (``<cache>/weights/<filename>``).
        kind: "dml_csr" (a parsing checkpoint), "backbone" (an ImageNet initialisation) or "detector".
        description: one line for listings.
        url: a plain http(s) URL (``source="url"``), or a Hub name ``hf://OWNER/REPO[@REVISION]`` (``source="hf"``).
        source: "url", "gdrive" or "hf".
        drive_id: the Google Drive file id (``source="gdrive"``).
        drive_folder: the Google Drive folder holding the file, when no per-file id is known (then the user fetches
            the file by hand or through ``DML_CSR_MIRROR``).
        size, sha256: the file's bytes and hash, None where unknown.
        structure: required state_dict entries ``((key, shape), ...)``; checked where ``sha256`` is unknown.
        dataset, classes: a parsing model's class layout (:func:`dml_csr.checkpoint.load_model` names an authors' file's
            classes by it; their input convention is the config's default, :func:`dml_csr.checkpoint.official_meta`).
    """
    name: str
    filename: str
    kind: str
    description: str
    url: str = ""
    source: str = "url"
    drive_id: str = ""
    drive_folder: str = ""
    size: Optional[int] = None
    sha256: Optional[str] = None
    structure: tuple[tuple[str, Shape], ...] = ()
    dataset: str = ""
    classes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        where = f"weights entry '{self.name}'"
        if self.kind not in KINDS:
            raise ValueError(f"{where}: kind '{self.kind}'; expected one of {', '.join(KINDS)}")
        if self.source not in ("url", "gdrive", "hf"):
            raise ValueError(f"{where}: source '{self.source}'; expected url, gdrive or hf")
        if self.source == "url" and not self.url:
            raise ValueError(f"{where}: source url needs a url")
        if self.source == "hf" and not self.url.startswith("hf://"):
            raise ValueError(f"{where}: source hf needs a url hf://OWNER/REPO[@REVISION]")
        if self.source == "gdrive" and not (self.drive_id or self.drive_folder):
            raise ValueError(f"{where}: source gdrive needs a drive_id or a drive_folder")
        if self.sha256 is not None and (len(self.sha256) != 64 or self.sha256.strip("0123456789abcdef")):
            raise ValueError(f"{where}: sha256 '{self.sha256}' is not 64 lowercase hex digits")
        if self.sha256 is None and not self.structure and self.source != "hf":  # a Hub folder records its hash
            raise ValueError(f"{where}: give a sha256 or a structure; an entry must be verifiable")

    @property
    def page(self) -> str:
        """Where a person downloads the file by hand."""
        if self.source == "url":
            return self.url
        return DRIVE_FILE.format(self.drive_id) if self.drive_id else DRIVE_FOLDER.format(self.drive_folder)


def _parsing(dataset: str, num_classes: int, **kw: Any) -> dict:
    """The class layout of an authors' file."""
    classes = get_spec(dataset).classes
    assert len(classes) == num_classes
    return dict(kind="dml_csr", source="gdrive", dataset=dataset, classes=classes, **kw)


# the authors' released models on Google Drive (their README links this id as drive.google.com/file/d/<id>/view);
# the ids of the single checkpoints are not known, so these files are fetched by hand or through a mirror
_AUTHORS_FOLDER = "1-PjUts1AMzXNyvw3VaJQmg43GJbfEpEQ"
_DEEP_STEM = (("conv1.weight", (64, 3, 3, 3)), ("conv2.weight", (64, 64, 3, 3)), ("conv3.weight", (128, 64, 3, 3)),
              ("layer1.0.conv1.weight", (64, 128, 1, 1)), ("layer3.22.conv3.weight", (1024, 256, 1, 1)),
              ("layer4.2.conv3.weight", (2048, 512, 1, 1)))

# FaRL's releases: its whole pretraining model in a "state_dict" wrapper, OpenAI CLIP's names, visual.* the image tower
_FARL_RELEASE = "https://github.com/FacePerceiver/FaRL/releases/download/pretrained_weights/"
_FARL = (("visual.conv1.weight", (768, 3, 16, 16)), ("visual.positional_embedding", (197, 768)),
         ("visual.transformer.resblocks.11.mlp.c_proj.weight", (768, 3072)), ("visual.proj", (768, 512)))


def _authors_structure(num_classes: int) -> tuple[tuple[str, Shape], ...]:
    return _DEEP_STEM[:1] + _DEEP_STEM[3:] + (("context.conva.0.weight", (512, 2048, 3, 3)),
                                              ("layer6.conv1.0.weight", (256, 512, 1, 1)),
                                              ("layer6.conv4.weight", (num_classes, 256, 1, 1)))


WEIGHTS: dict[str, Weights] = {w.name: w for w in (
    Weights("dml_csr_helen", "dml_csr_helen.pth", description="authors' DML-CSR trained on Helen (11 classes)",
            drive_folder=_AUTHORS_FOLDER, structure=_authors_structure(11), **_parsing("helen", 11)),
    Weights("dml_csr_lapa", "dml_csr_lapa.pth", description="authors' DML-CSR trained on LaPa (11 classes)",
            drive_folder=_AUTHORS_FOLDER, structure=_authors_structure(11), **_parsing("lapa", 11)),
    Weights("dml_csr_celebamask_hq", "dml_csr_celebamask_hq.pth",
            description="authors' DML-CSR trained on CelebAMask-HQ (19 classes)",
            drive_folder=_AUTHORS_FOLDER, structure=_authors_structure(19), **_parsing("celebamask_hq", 19)),
    Weights("resnet101_deepstem_imagenet", "resnet101-imagenet.pth", kind="backbone", source="gdrive",
            drive_id="1rzLU-wK6rEorCNJfwrmIu5hY2wRMyKTK", structure=_DEEP_STEM,
            description="CE2P deep-stem ResNet-101 ImageNet init (model.pretrained for backbone resnet101_deepstem)"),
    Weights("farl_vit_b16_ep16", "FaRL-Base-Patch16-LAIONFace20M-ep16.pth", kind="backbone",
            url=_FARL_RELEASE + "FaRL-Base-Patch16-LAIONFace20M-ep16.pth", structure=_FARL,
            description="FaRL's ViT-B/16 pretrained on LAION-Face, 16 epochs (model.pretrained for farl_vit_b16)"),
    Weights("farl_vit_b16_ep64", "FaRL-Base-Patch16-LAIONFace20M-ep64.pth", kind="backbone",
            url=_FARL_RELEASE + "FaRL-Base-Patch16-LAIONFace20M-ep64.pth", structure=_FARL,
            description="FaRL's ViT-B/16 pretrained on LAION-Face, 64 epochs (model.pretrained for farl_vit_b16)"),
    Weights("yunet_2023mar", "face_detection_yunet_2023mar.onnx", kind="detector",
            url="https://github.com/opencv/opencv_zoo/raw/main/models/face_detection_yunet/"
                "face_detection_yunet_2023mar.onnx",
            size=232589, sha256="8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
            description="YuNet face detector (OpenCV zoo, 2023mar, ONNX)"),
)}


def register(weights: Weights, *, replace: bool = False) -> Weights:
    """Add an entry (a mirror of your own, a new checkpoint); an existing name needs ``replace=True``."""
    if weights.name in WEIGHTS and not replace:
        raise HubError(f"weights name '{weights.name}' is already registered; pass replace=True to replace it")
    WEIGHTS[weights.name] = weights
    return weights


def list_weights() -> list[Weights]:
    """The registry's entries, in registry order."""
    return list(WEIGHTS.values())


def is_name(s: Any) -> bool:
    """Whether ``s`` is a registry name."""
    return isinstance(s, str) and s in WEIGHTS


def cache_dir() -> str:
    """``$DML_CSR_HOME`` if set, else ``~/.cache/dml_csr``."""
    return os.path.expanduser(os.environ.get("DML_CSR_HOME") or os.path.join("~", ".cache", "dml_csr"))


def weights_path(name: str) -> str:
    """Where entry ``name``'s file lives in the cache (whether or not it is there)."""
    return os.path.join(cache_dir(), "weights", get_weights(name).filename)


def get_weights(name: str) -> Weights:
    """The registry entry ``name``; an unknown name raises naming the known ones."""
    if name not in WEIGHTS:
        raise HubError(f"unknown weights name '{name}'; expected one of {', '.join(WEIGHTS)}")
    return WEIGHTS[name]


def is_path_like(s: Any) -> bool:
    """Whether ``s`` names a local file as a path does: ``./name``, ``../name``, ``~/name``, an absolute path, one
    with a folder in it, or a name with an extension. Only such an argument loads a local file (:func:`resolve`): a
    bare word is a registry name, so a file called like an entry never replaces the registry's checked file."""
    if not isinstance(s, (str, os.PathLike)):
        return False
    s = os.fspath(s)
    return (os.path.isabs(s) or s.startswith(("~", ".")) or "/" in s or os.sep in s
            or bool(os.path.splitext(s)[1]))


def check_local(path: str) -> None:
    """Refuse, in one line, an existing local file named by a bare word (neither a registry name nor path-like)."""
    if not is_path_like(path) and os.path.exists(path):
        raise HubError(f"'{path}' is not a weights name (expected one of {', '.join(WEIGHTS)}); to load the local "
                       f"file of that name, pass it as a path: ./{path}")


def resolve(name_or_path: str, *, kind: Optional[str] = None) -> str:
    """A registry name -> its fetched file (of ``kind``, if given), even where a local file has that name; a Hub name
    (``hf://OWNER/REPO[@REVISION]``) -> its model folder (a backbone: its weights file); a path-like argument
    (:func:`is_path_like`) of an existing file or folder as is; else an error. The log says which."""
    if str(name_or_path).startswith("hf://"):
        from .sharing import hf

        return hf.resolve(name_or_path, kind)
    if not is_name(name_or_path):
        check_local(name_or_path)
        if is_path_like(name_or_path) and os.path.exists(name_or_path):
            log.info("weights: the local file '%s'", name_or_path)
            return name_or_path
        names = [w.name for w in WEIGHTS.values() if kind is None or w.kind == kind]
        raise HubError(f"'{name_or_path}' is neither an existing file nor a weights name; expected a path or one of "
                       f"{', '.join(names)}")
    if os.path.exists(name_or_path):
        log.warning("'%s' is a weights name: the registry's checked file is used, not the local file of that name "
                    "(pass ./%s to load that one)", name_or_path, name_or_path)
    w = WEIGHTS[name_or_path]
    if kind is not None and w.kind != kind:
        names = [v.name for v in WEIGHTS.values() if v.kind == kind]
        raise HubError(f"weights '{w.name}' is a {w.kind} file; expected a {kind} file: one of "
                       f"{', '.join(names) or '(none registered)'}")
    path = fetch(name_or_path)
    log.info("weights: '%s' from the registry (%s)", name_or_path, path)
    return path


def sha256_of(path: str) -> str:
    """The file's sha256, hex (:func:`dml_csr.sharing.folder.sha256_of_file`, which model folders check with)."""
    from .sharing.folder import sha256_of_file

    return sha256_of_file(path)


def fetch(name: str, *, progress: bool = True, force: bool = False, url: Optional[str] = None) -> str:
    """The verified local path of entry ``name``, downloaded into the cache if missing (or if ``force``).

    ``url`` replaces the entry's source for this call (a plain URL); otherwise ``$DML_CSR_MIRROR`` if set.
    Raises :class:`HubError` (one line naming the entry, the URL and the file to put where) when the file cannot be
    downloaded or fails its check.
    """
    w = get_weights(name)
    if w.source == "hf":  # the Hub's cache, not ours
        from .sharing import hf

        return hf.resolve(w.url, w.kind, sha256=w.sha256)
    path = weights_path(name)
    if os.path.exists(path) and not force:
        problem = check_file(w, path, path, fresh=False)
        if problem is None:
            return path
        aside = _move_aside(path)
        raise HubError(f"{name}: cached file '{path}' {problem}; moved it to '{aside}'; fetch again to download it "
                       f"afresh, or put the right file ({w.page}) at '{path}'")
    src = url or _mirror_url(w, os.environ.get("DML_CSR_MIRROR", ""))
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    except OSError as e:
        raise HubError(f"{name}: cannot create the cache folder '{os.path.dirname(path)}' ({_reason(e)}); set "
                       f"DML_CSR_HOME to a writable folder") from None
    tmp = os.path.join(os.path.dirname(path), f".{w.filename}.{uuid.uuid4().hex}.download")
    try:
        _download(w, src, tmp, path, progress)
        problem = check_file(w, tmp, path, fresh=True)
        if problem is not None:
            raise HubError(f"{name}: the file downloaded from {src or w.page} {problem}; deleted it; put the right "
                           f"file at '{path}'")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    log.info("%s: %s", name, path)
    return path


def _mirror_url(w: Weights, mirror: str) -> str:
    """The entry's URL at ``mirror`` ("" -> "" when there is no mirror)."""
    if not mirror:
        return ""
    base = mirror.rstrip("/")
    if w.source == "url":
        parts = urllib.parse.urlsplit(w.url)
        return base + parts.path + (f"?{parts.query}" if parts.query else "")
    return f"{base}/gdrive/{w.drive_id or w.drive_folder}/{w.filename}"


def _download(w: Weights, src: str, tmp: str, path: str, progress: bool) -> None:
    """Download into ``tmp``: ``src`` (a URL override or mirror) or the entry's own source."""
    if src or w.source == "url":
        src = src or w.url
        try:
            torch.hub.download_url_to_file(src, tmp, progress=progress)
        except Exception as e:  # HTTP errors, refused connections, DNS failures, resets
            raise HubError(f"{w.name}: cannot download {src} ({_reason(e)}); download it elsewhere and put it at "
                           f"'{path}', or set DML_CSR_MIRROR") from None
        return
    from .sharing import drive

    try:
        drive.fetch_entry(w, tmp, path, progress, WEIGHTS.values(), check_file, weights_path)
    except drive.ShareError as e:
        raise HubError(str(e)) from None


def _reason(e: BaseException) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):
        return str(e.reason)
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def check_file(w: Weights, path: str, shown: str, fresh: bool) -> Optional[str]:
    """What is wrong with ``path`` as entry ``w``'s file (None: nothing); ``shown``: its final path, for the log;
    ``fresh``: it was just downloaded."""
    n = os.path.getsize(path)
    if w.size is not None and n != w.size:
        return f"has {n} bytes, expected {w.size}"
    if w.sha256 is not None:
        digest = sha256_of(path)
        return None if digest == w.sha256 else f"has sha256 {digest}, expected {w.sha256}"
    problem = _check_structure(w, path)
    if problem is None and fresh:  # hashed once, when it arrives: a cached file is not read twice on every use
        log.warning("%s: %s has no pinned sha256 (dml_csr.hub.WEIGHTS); its size is %d and its sha256 %s",
                    w.name, shown, n, sha256_of(path))
    return problem


def _check_structure(w: Weights, path: str) -> Optional[str]:
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # a legacy (non-zip) torch file cannot be memory-mapped
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, corrupt, not a torch file, or holding pickled objects
        return f"cannot be loaded with torch.load(weights_only=True) ({_reason(e)})"
    sd = _state_dict(obj)
    if sd is None:
        return f"holds a {type(obj).__name__}, expected a state_dict"
    for key, shape in w.structure:
        if key not in sd:
            return f"has no entry '{key}' (expected shape {tuple(shape)})"
        got = tuple(sd[key].shape) if isinstance(sd[key], torch.Tensor) else type(sd[key]).__name__
        if got != tuple(shape):
            return f"has '{key}' of shape {got}, expected {tuple(shape)}"
    return None


def _state_dict(obj: Any) -> Optional[dict]:
    """A state_dict: raw, in a ``state_dict`` wrapper or our checkpoint's ``model``; ``module.`` prefixes stripped."""
    if not isinstance(obj, dict):
        return None
    for wrapper in ("state_dict", "model"):
        if isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
            break
    return {(k[7:] if isinstance(k, str) and k.startswith("module.") else k): v for k, v in obj.items()}


def _move_aside(path: str) -> str:
    aside = path + ".rejected"
    os.replace(path, aside)
    return aside
