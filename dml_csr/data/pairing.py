"""Files of two folders paired by stem (``face_001.jpg`` with ``face_001.png``): a prepare script's photos and masks,
an evaluation's predictions and label maps. A file without its partner is an error naming it."""
from __future__ import annotations

import os

__all__ = ["LABEL_EXTS", "IMAGE_EXTS", "files_by_stem", "check_paired"]

LABEL_EXTS = (".png", ".bmp", ".tif", ".tiff")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def files_by_stem(folder: str, exts: tuple, what: str) -> dict:
    """``{stem: path}`` of the files of ``folder`` ending in one of ``exts`` (hidden files skipped); a missing or
    empty folder, or two files of one stem, raise naming them."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{what} folder '{folder}' does not exist")
    found = {}
    for f in sorted(os.listdir(folder)):
        stem, ext = os.path.splitext(f)
        path = os.path.join(folder, f)
        if f.startswith(".") or ext.lower() not in exts or not os.path.isfile(path):
            continue
        if stem in found:
            raise ValueError(f"{what} '{path}' and '{found[stem]}' share the stem '{stem}'; expected one file a "
                             "sample")
        found[stem] = path
    if not found:
        raise FileNotFoundError(f"{what} folder '{folder}' holds no {'/'.join(exts)} file")
    return found


def check_paired(have: dict, other: dict, what: str, folder: str) -> None:
    """FileNotFoundError naming the files of ``have`` (``{stem: path}``) without a file of the same stem in
    ``other`` (the files of ``folder``)."""
    lone = sorted(set(have) - set(other))
    if lone:
        raise FileNotFoundError(f"{len(lone)} {what} without a file of the same stem in '{folder}': "
                                f"{', '.join(have[n] for n in lone[:5])}{' ...' if len(lone) > 5 else ''}")
