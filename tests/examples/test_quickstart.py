"""examples/quickstart.ipynb runs top to bottom on a tiny checkpoint built here, and shows an overlay.

Needs a Jupyter kernel named ``python3`` for this interpreter (``python -m ipykernel install --sys-prefix``).
"""
from __future__ import annotations

import os

import cv2
import pytest
from helpers import ROOT
from helpers.tiny_checkpoint import write_tiny_checkpoint

from dml_csr.data.synthetic import render_face

NOTEBOOK = os.path.join(ROOT, "examples", "quickstart.ipynb")


@pytest.mark.parametrize("with_image", [False, True])
def test_quickstart_notebook_executes(tmp_path, monkeypatch, with_image):
    import nbformat
    from nbclient import NotebookClient

    ckpt = write_tiny_checkpoint(str(tmp_path / "tiny.pt"))
    monkeypatch.setenv("DML_CSR_CHECKPOINT", ckpt)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    if with_image:
        path = str(tmp_path / "face.png")
        cv2.imwrite(path, render_face(5, size=(60, 44))[0])
        monkeypatch.setenv("DML_CSR_IMAGE", path)
    else:
        monkeypatch.delenv("DML_CSR_IMAGE", raising=False)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")  # committed without outputs
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "11 classes of 'synthetic'" in text and "sum to one: True" in text
    assert ("image (60, 44, 3)" if with_image else "image (256, 256, 3)") in text
    images = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.data]
    assert len(images) == 1  # the image | labels | overlay strip
