"""Files written whole or not at all: checkpoints, exports, metrics, label and colour images, JSON records.

Every file this package writes goes through :func:`atomic_write`: the bytes go to a temporary file in the same folder,
are flushed to the disk, and the temporary file is renamed onto the final name. A crash or a kill never leaves half
a file under the final name (a kill leaves a ``.tmp-*`` file beside it, which :func:`remove_partial_writes` clears),
and a failure -- a full disk, a read-only folder -- is one :class:`WriteError` naming the file. The file gets the
permissions the umask gives a new file (not ``mkstemp``'s 0600), so others can read a shared run.
"""
from __future__ import annotations

import errno
import glob
import json
import os
import tempfile
from typing import Any, Callable, Optional, Sequence

__all__ = ["WriteError", "atomic_write", "write_bytes", "write_json", "write_image", "remove_partial_writes"]


class WriteError(OSError):
    """A file that could not be written; the message names it and says why (an OSError: the scripts report it as
    one line, as any file they cannot write)."""


def atomic_write(path: str, write: Callable[[Any], None], suffix: str = "") -> None:
    """``write(binary file)`` into a temporary file beside ``path``, fsync, then rename onto ``path``.

    Raises :class:`WriteError` naming ``path`` when the folder cannot be made or the file cannot be written."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=folder)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # RuntimeError: torch.save's own write errors
        _remove(tmp)
        raise WriteError(f"could not write '{path}': {_why(e)}") from None
    except BaseException:
        _remove(tmp)
        raise


def write_bytes(path: str, data: bytes) -> None:
    """``data`` into ``path``, atomically."""
    atomic_write(path, lambda f: f.write(data), suffix=os.path.splitext(path)[1])


def write_json(path: str, obj: Any, indent: Optional[int] = 2, default: Optional[Callable[[Any], Any]] = None
               ) -> None:
    """``obj`` as JSON into ``path``, atomically (NaN written as ``NaN``, as Python's json module reads it back;
    ``default`` turns other objects into JSON values, as in :func:`json.dumps`)."""
    write_bytes(path, json.dumps(obj, indent=indent, allow_nan=True, default=default).encode())


def write_image(path: str, image, params: Sequence[int] = ()) -> None:
    """Encode ``image`` (BGR or single-channel uint8) by ``path``'s extension (``params``: OpenCV's encoder flags,
    e.g. ``[cv2.IMWRITE_JPEG_QUALITY, 95]``) and write it atomically; a failure (full disk, read-only folder, unknown
    extension) raises naming ``path``, where ``cv2.imwrite`` returns False."""
    import cv2

    ok, buf = cv2.imencode(os.path.splitext(path)[1], image, list(params))
    if not ok:
        raise WriteError(f"could not encode an image for '{path}' (an extension OpenCV cannot write?)")
    write_bytes(path, buf.tobytes())


def remove_partial_writes(*folders: str, pattern: str = ".tmp-*") -> list[str]:
    """Delete what writes killed before their rename left in ``folders``; returns the paths removed."""
    left = [p for folder in folders for p in glob.glob(os.path.join(folder, pattern))]
    for p in left:
        os.remove(p)
    return left


def _remove(tmp: Optional[str]) -> None:
    if tmp is not None and os.path.exists(tmp):
        os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _why(e: BaseException) -> str:
    """One line for a failed write; torch's "unexpected pos" is what a full disk looks like from inside torch.save."""
    if getattr(e, "errno", None) == errno.ENOSPC or "unexpected pos" in str(e):
        return "no space left on the device"
    if isinstance(e, PermissionError):
        return "permission denied (a read-only folder?)"
    return str(e).splitlines()[0] if str(e) else type(e).__name__
