"""Atomic writes: a failed write keeps the old file and leaves no temporary, a full disk or a read-only folder is one
line naming the file, and written files get the umask's permissions."""
import os

import pytest
import torch

from dml_csr.files import WriteError, atomic_write


def save(obj, path: str) -> None:
    atomic_write(path, lambda f: torch.save(obj, f), suffix=".pt")


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = str(tmp_path / "ck.pt")
    save({"v": torch.ones(1)}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(WriteError, match="could not write .*ck.pt': cannot pickle$"):
        save({"v": Unpicklable()}, path)
    assert torch.equal(torch.load(path)["v"], torch.ones(1)) and os.listdir(tmp_path) == ["ck.pt"]


def test_a_full_disk_or_a_read_only_folder_is_one_line_naming_the_file(tmp_path, monkeypatch):
    path = str(tmp_path / "ck.pt")

    def full_disk(obj, f):
        f.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")  # torch's words

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(WriteError, match=f"could not write '{path}': no space left on the device$"):
        save({"w": torch.ones(1)}, path)
    assert os.listdir(tmp_path) == []  # the partial write is gone

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("tempfile.mkstemp", read_only)
    with pytest.raises(WriteError, match="permission denied"):
        save({"w": torch.ones(1)}, path)


def test_written_files_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        save({"w": torch.ones(1)}, str(tmp_path / "a.pt"))
        os.umask(0o002)
        save({"w": torch.ones(1)}, str(tmp_path / "b.pt"))
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "a.pt").st_mode & 0o777 == 0o644  # readable by a lab-mate (mkstemp gives 0600)
    assert os.stat(tmp_path / "b.pt").st_mode & 0o777 == 0o664
