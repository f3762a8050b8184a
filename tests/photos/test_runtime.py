"""dml_csr.photos.runtime: an exported ONNX model runs through FaceParser's own pre- and post-processing and gives the
checkpoint's labels; a file without our metadata is refused; the label agreement is a pooled pixel count."""
from __future__ import annotations

import numpy as np
import pytest
from helpers.tiny_checkpoint import one_thread, write_tiny_checkpoint  # noqa: F401 (fixture)

from dml_csr import FaceParser, load_model
from dml_csr.data.synthetic import render_face
from dml_csr.photos import quantize, runtime
from dml_csr.photos.export import export_onnx

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runtime")
    ckpt = write_tiny_checkpoint(str(tmp / "tiny.pt"))
    model, meta = load_model(ckpt)
    export_onnx(model, str(tmp / "tiny.onnx"), meta["input_size"], meta)
    return ckpt, str(tmp / "tiny.onnx")


def test_an_onnx_export_parses_photos_as_its_checkpoint_does(exported):
    ckpt, onnx_path = exported
    ours, theirs = FaceParser.from_checkpoint(ckpt), FaceParser.from_checkpoint(onnx_path)
    assert theirs.classes == ours.classes and theirs.meta["input_size"] == [64, 64]
    assert isinstance(theirs.model, runtime.ExportedModel) and theirs.model.runtime == "onnxruntime"
    photos = [render_face(i, size=(90, 70))[0] for i in range(3)]
    for photo in photos:  # whole images: crop, normalise, run, paste back at the photo's size
        a, pa = ours(photo, channel_order="BGR", return_probs=True)
        b, pb = theirs(photo, channel_order="BGR", return_probs=True)
        assert a.shape == b.shape == (90, 70) and np.abs(pa - pb).max() < 1e-4
        assert (a == b).mean() > 0.999 and len(np.unique(a)) > 1
    faces = [(10, 10, 40, 50)]  # an aligned face crop, pasted back
    assert (ours.parse_faces(photos[0], faces, channel_order="BGR") ==
            theirs.parse_faces(photos[0], faces, channel_order="BGR")).mean() > 0.999
    with pytest.raises(ValueError, match="is an exported model, which runs at the precision it was exported with"):
        FaceParser.from_checkpoint(onnx_path, precision="bf16")


def test_a_file_without_our_metadata_is_refused(exported, tmp_path):
    import onnx

    _, onnx_path = exported
    proto = onnx.load(onnx_path)
    del proto.metadata_props[:]
    bare = str(tmp_path / "bare.onnx")
    onnx.save(proto, bare)
    assert runtime.read_meta(onnx_path)["classes"]
    with pytest.raises(KeyError, match="has no 'dml_csr_meta' metadata"):
        runtime.load_exported(bare)
    xml = tmp_path / "model.xml"
    xml.write_text('<?xml version="1.0"?>\n<net name="x"><rt_info><other value="1"/></rt_info></net>\n')
    with pytest.raises(KeyError, match="has no 'dml_csr_meta' rt_info"):
        runtime.read_meta(str(xml))
    xml.write_text('<net name="x"><rt_info><dml_csr_meta value="{&quot;classes&quot;: [&quot;a&quot;]}"/>'
                   '</rt_info></net>')
    assert runtime.read_meta(str(xml)) == {"classes": ["a"]}  # read from the XML itself, no runtime needed
    with pytest.raises(KeyError, match="its metadata lacks input_size, channel_order, mean, std"):
        runtime.load_exported(str(xml))


def test_label_agreement_pools_pixels_over_inputs():
    inputs = [np.zeros((3, 2, 2), np.float32), np.ones((3, 2, 3), np.float32)]

    def run(x):  # class 1 wins where the input is positive, class 0 elsewhere; pixel (0, 0) always class 2
        logits = np.stack([1 - x[:, 0], x[:, 0], np.zeros_like(x[:, 0])], 1)
        logits[:, 2, 0, 0] = 5
        return logits
    reference = [np.zeros((2, 2), int), np.ones((2, 3), int)]
    assert quantize.label_agreement(run, inputs, reference) == pytest.approx(8 / 10)  # one pixel off in each input
    assert runtime.is_exported("a/model.XML") and runtime.is_exported("m.onnx") and not runtime.is_exported("m.pt")
