"""The authors' released checkpoints from their Google Drive share, through ``gdown`` (optional: ``pip install
gdown``), a library made for Drive's confirmation pages.

Their README links the share as a file; it most likely is one archive holding the three checkpoints, so
:func:`fetch_share` first downloads the id as a file: a zip or tar archive is opened and the members asked for are
extracted (every member name is checked first: an absolute path, a ``..`` step, a link or a device refuses the whole
archive), and a bare torch file is taken as it is. Should the id be a folder, gdown's folder support lists its files
with their ids without downloading them, and the file asked for is fetched by its own id. Members and listed files
are matched by name (:data:`KEYWORDS`: ``DML_CSR_helen.pth`` is Helen's). What arrives is verified and cached by
:func:`dml_csr.hub.fetch`.
"""
from __future__ import annotations

import logging
import os
import posixpath
import shutil
import tarfile
import zipfile
from typing import Callable, Iterable, Optional

from .folder import ShareError, one_line

__all__ = ["KEYWORDS", "fetch_share", "fetch_entry", "member_for", "extract", "safe_member_name"]

log = logging.getLogger(__name__)

# a dataset -> what the name of its checkpoint contains (lowercase); the first that matches decides
KEYWORDS = {"helen": ("helen",), "lapa": ("lapa",), "celebamask_hq": ("celebamask", "celeba")}
CHECKPOINT_EXTS = (".pth", ".pt", ".pth.tar", ".ckpt", ".bin")


def member_for(names: Iterable[str], dataset: str) -> Optional[str]:
    """The one checkpoint among ``names`` (archive members or listed paths) whose file name names ``dataset``;
    None when none does; an error when several do."""
    keys = KEYWORDS.get(dataset, (dataset.lower(),))
    found = [n for n in names if posixpath.basename(n).lower().endswith(CHECKPOINT_EXTS)
             and any(k in posixpath.basename(n).lower() for k in keys)]
    if len(found) > 1:
        raise ShareError(f"the authors' share holds several {dataset} checkpoints ({', '.join(found)}); put the one "
                         "you want in the cache by hand")
    return found[0] if found else None


def safe_member_name(name: str) -> bool:
    """A member name that stays inside the folder it is extracted to."""
    n = name.replace("\\", "/")
    return bool(n) and not n.startswith("/") and ":" not in n.split("/")[0] and ".." not in n.split("/")


def _listing(path: str) -> tuple[str, list[str]]:
    """("zip" | "tar" | "torch" | "other", the regular files' names) of a downloaded share; refuses an archive
    with an unsafe member."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            infos = [i for i in z.infolist() if not i.is_dir()]
        names = [i.filename for i in infos]
        if any(n.endswith("/data.pkl") and n.count("/") == 1 for n in names):
            return "torch", []  # torch.save's own zip layout: a checkpoint, not an archive of them
        kind, links = "zip", [i.filename for i in infos if (i.external_attr >> 16) & 0o170000 == 0o120000]
    elif tarfile.is_tarfile(path):
        with tarfile.open(path) as t:
            members = t.getmembers()
        names = [m.name for m in members if m.isfile()]
        kind, links = "tar", [m.name for m in members if not (m.isfile() or m.isdir())]
    else:
        with open(path, "rb") as f:
            return ("torch" if f.read(1) == b"\x80" else "other"), []  # a legacy torch file is a pickle
    bad = links + [n for n in names if not safe_member_name(n)]
    if bad:
        raise ShareError(f"the authors' share holds member '{bad[0]}' (a link, an absolute path or a '..' step); "
                         "refusing to extract anything from it")
    return kind, names


def extract(path: str, member: str, out: str) -> str:
    """Copy archive member ``member`` of ``path`` to the file ``out`` (never to a path made from its name)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z, z.open(member) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    else:
        with tarfile.open(path) as t:
            src = t.extractfile(t.getmember(member))
            with src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    return out


def _gdown(what: str):
    try:
        import gdown
    except ImportError:
        raise ShareError(f"{what} needs gdown (pip install gdown)") from None
    return gdown


def fetch_share(share_id: str, wanted: dict[str, str], workdir: str, quiet: bool = True) -> dict[str, str]:
    """Fetch the checkpoints ``wanted`` (a key -> its dataset) from the share ``share_id`` into files in
    ``workdir``; returns key -> file for those found. The first key is the one asked for: a folder share fetches it
    alone, an archive yields every key it holds (one download serves the three)."""
    gdown = _gdown(f"downloading the authors' share {share_id} from Google Drive")
    blob = os.path.join(workdir, "share.download")
    try:
        got = gdown.download(id=share_id, output=blob, quiet=quiet)
    except Exception as e:  # gdown's errors for folders, quotas, permissions and the network
        got, why = None, one_line(e)
    else:
        why = "gdown returned no file"
    if got is not None and os.path.isfile(blob):
        kind, names = _listing(blob)
        if kind != "other":
            return _from_file(blob, kind, names, wanted, workdir)
        os.remove(blob)
        why = "neither an archive nor a torch file: a web page?"
    log.info("share %s is not a file gdown can fetch (%s); listing it as a folder", share_id, why)
    return _from_folder(gdown, share_id, wanted, workdir, quiet)


def _from_file(blob: str, kind: str, names: list[str], wanted: dict[str, str], workdir: str) -> dict[str, str]:
    first = next(iter(wanted))
    if kind == "torch":
        log.info("the share is a single file: taken as the checkpoint asked for")
        return {first: blob}
    log.info("the share is a %s archive of %d files", kind, len(names))
    out = {}
    for key, dataset in wanted.items():
        member = member_for(names, dataset)
        if member is not None:
            out[key] = extract(blob, member, os.path.join(workdir, f"{key}.member"))
    os.remove(blob)
    if first not in out:
        raise ShareError(f"the authors' archive holds no {wanted[first]} checkpoint (its files: "
                         f"{', '.join(names[:12])}{' ...' if len(names) > 12 else ''})")
    return out


def _from_folder(gdown, share_id: str, wanted: dict[str, str], workdir: str, quiet: bool) -> dict[str, str]:
    first = next(iter(wanted))
    try:
        listed = gdown.download_folder(id=share_id, skip_download=True, quiet=quiet)
    except Exception as e:
        raise ShareError(f"cannot list the authors' share {share_id} as a Google Drive folder either "
                         f"({one_line(e)})") from None
    by_path = {f.path: f.id for f in listed or []}
    path = member_for(by_path, wanted[first])
    if path is None:
        raise ShareError(f"the authors' Drive folder lists no {wanted[first]} checkpoint (its files: "
                         f"{', '.join(sorted(by_path)[:12]) or 'none'})")
    out = os.path.join(workdir, f"{first}.member")
    try:
        got, why = gdown.download(id=by_path[path], output=out, quiet=quiet), "gdown returned no file"
    except Exception as e:
        got, why = None, one_line(e)
    if got is None or not os.path.isfile(out):
        raise ShareError(f"cannot download {path} (file id {by_path[path]}) from the authors' Drive folder ({why})")
    return {first: out}


def fetch_entry(w, tmp: str, path: str, progress: bool, registry: Iterable = (),
                check: Optional[Callable] = None, cache_path: Optional[Callable[[str], str]] = None) -> None:
    """Registry entry ``w`` (a :class:`dml_csr.hub.Weights`) from Google Drive into ``tmp``: its own file id, or the
    authors' share, whose other entries in ``registry`` that come with it (an archive) are checked
    (``check(entry, file, cached_path, fresh=True)`` -> a problem or None) and cached at ``cache_path(name)`` where
    missing. A :class:`ShareError` naming ``path`` (where to put a file fetched by hand) on failure."""
    if w.drive_id:
        _one_file(w, tmp, path, progress)
        return
    others = [v for v in registry if v.drive_folder == w.drive_folder and not v.drive_id and v is not w
              and not os.path.exists(cache_path(v.name))]
    work = f"{tmp}.share"
    os.makedirs(work)
    try:
        try:
            got = fetch_share(w.drive_folder, {v.name: v.dataset for v in [w] + others}, work, not progress)
        except OSError as e:
            raise ShareError(f"{w.name}: no per-file Google Drive id is known for {w.filename} (the authors share one "
                             f"id: {w.page}); {e}; or download it by hand (gdown --folder {w.drive_folder}, or gdown "
                             f"{w.drive_folder} should the id be a single archive) and put the "
                             f"{w.dataset or w.kind} file at '{path}', or set DML_CSR_MIRROR") from None
        os.replace(got.pop(w.name), tmp)
        by_name = {v.name: v for v in others}
        for name, f in got.items():
            problem = check(by_name[name], f, cache_path(name), fresh=True)
            if problem is None:
                os.replace(f, cache_path(name))
            log.warning("%s: the share's file %s", name, f"{problem}; not cached" if problem else "is cached too")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _one_file(w, tmp: str, path: str, progress: bool) -> None:
    try:
        import gdown
    except ImportError:
        raise ShareError(f"{w.name}: downloading {w.page} from Google Drive needs gdown (pip install gdown); or "
                         f"download it by hand and put it at '{path}'") from None
    try:
        out = gdown.download(id=w.drive_id, output=tmp, quiet=not progress)
    except Exception as e:  # gdown raises its own errors for quotas, permissions and network failures
        out, why = None, one_line(e)
    else:
        why = "gdown returned no file"
    if out is None or not os.path.isfile(tmp):
        raise ShareError(f"{w.name}: cannot download {w.page} ({why}); download it by hand and put it at '{path}'")
