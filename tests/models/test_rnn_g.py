"""RNN-G: output contract, gate range, gradients, stability bound, export, and the two-stage crops and merge."""
from __future__ import annotations

import warnings

import pytest
import torch

from dml_csr.config import ModelConfig
from dml_csr.models.rnn_g import RNNG, bounded_transition, build_rnn_g
from dml_csr.models.scan import spatial_rnn_4dir
from dml_csr.models.two_stage import (PARTS, TwoStageRNNG, boxes_from_keypoints, boxes_from_labels, crop_labels,
                                      merge_part_probs, paste)


def _model(classes=3, **kw):
    torch.manual_seed(0)
    return RNNG(classes, width=8, **kw)


@pytest.mark.parametrize("hw", [(32, 32), (36, 28), (30, 26)])
def test_output_contract(hw):
    m = _model().train()
    x = torch.randn(2, 3, *hw)
    out = m(x)
    assert out["parsing"].shape == (2, 3, *hw)
    h2, w2 = out["coarse"].shape[-2:]
    assert out["gate"].shape == (2, 1, h2, w2) and out["gates"].shape == (2, 2, h2, w2)
    assert abs(h2 - hw[0] / 2) <= 2 and abs(w2 - hw[1] / 2) <= 2
    m.eval()
    assert set(m(x)) == {"parsing"}


def test_gate_within_unit_interval_and_final_uses_rnn():
    m = _model().eval()
    with torch.no_grad():
        m.deconv6.weight.mul_(50)  # saturate: tanh must still bound the gates
        xr, gates = m.features(torch.randn(2, 3, 32, 32))
    assert gates.abs().max() <= 1.0 and gates.abs().max() > 0.99
    # the parsing output is the projected RNN output: zeroing the gates changes it
    with torch.no_grad():
        h = spatial_rnn_4dir(xr, gates, bounded_transition(m.rnn_weight), m.rnn_bias)
        h0 = spatial_rnn_4dir(xr, torch.zeros_like(gates), bounded_transition(m.rnn_weight), m.rnn_bias)
    assert (h - h0).abs().max() > 1e-3


def test_every_parameter_gets_a_gradient_and_no_nan():
    m = _model().train()
    out = m(torch.randn(2, 3, 32, 28))
    (out["parsing"].square().mean() + out["coarse"].square().mean() + out["gate"].square().mean()).backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_bounded_transition_keeps_spectral_norm_within_one():
    w = torch.randn(4, 8, 8) * 3
    wb = bounded_transition(w)
    assert (torch.linalg.matrix_norm(wb, ord=2) <= 1 + 1e-5).all()
    eye = torch.eye(8).repeat(4, 1, 1)
    torch.testing.assert_close(bounded_transition(eye), eye)  # already within the bound: untouched


def test_drop_edge_heads_and_state_dict_either_order():
    m = _model().train()
    sd = m.state_dict()
    m.drop_edge_heads()
    m.drop_edge_heads()  # idempotent
    m.load_state_dict(sd)  # heads' weights ignored after the drop
    assert set(m(torch.randn(1, 3, 16, 16))) == {"parsing"}
    full = _model()
    full.load_state_dict(m.state_dict(), strict=False)


def test_build_from_config():
    m = build_rnn_g(ModelConfig(name="rnn_g", rnn_channels=8), 3)
    assert isinstance(m, RNNG) and m.width == 8
    assert isinstance(build_rnn_g(ModelConfig(name="rnn_g", rnn_channels=8, two_stage=True), 11), TwoStageRNNG)
    with pytest.raises(ValueError, match="11-class Helen"):
        build_rnn_g(ModelConfig(name="rnn_g", rnn_channels=8, two_stage=True), 3)
    with pytest.raises(ValueError, match="multiple of 4"):
        RNNG(3, width=6)


class _Parsing(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m(x)["parsing"]


def test_trace_is_shape_dynamic():
    m = _model().eval()
    m.drop_edge_heads()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(_Parsing(m), torch.randn(1, 3, 32, 32), check_trace=False)
        for shape in [(2, 3, 32, 32), (1, 3, 40, 28)]:
            x = torch.randn(*shape)
            torch.testing.assert_close(traced(x), m(x)["parsing"], rtol=1e-5, atol=1e-5)


def test_onnx_export_dynamic(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    wrapper = _Parsing(_model()).eval()
    wrapper.m.drop_edge_heads()
    path = str(tmp_path / "rnn_g.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (torch.randn(1, 3, 32, 32),), path, opset_version=17, dynamo=False,
                          input_names=["image"], output_names=["parsing"],
                          dynamic_axes={"image": {0: "b", 2: "h", 3: "w"}, "parsing": {0: "b", 2: "h", 3: "w"}})
    wrapper.eval()  # export restores the wrapper's mode
    sess = ort.InferenceSession(path)
    for shape in [(1, 3, 32, 32), (2, 3, 36, 24)]:
        x = torch.randn(*shape)
        got = sess.run(None, {"image": x.numpy()})[0]
        with torch.no_grad():
            torch.testing.assert_close(torch.from_numpy(got), wrapper(x), rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------------------------- two stage
def _face_labels(hh=96, ww=96):
    lab = torch.zeros(1, hh, ww, dtype=torch.long)
    lab[:, 10:90, 15:80] = 1  # skin
    lab[:, 30:34, 50:66] = 2  # subject's left brow (image right)
    lab[:, 38:44, 52:64] = 4  # subject's left eye
    lab[:, 30:34, 28:44] = 3
    lab[:, 38:44, 30:42] = 5
    lab[:, 45:60, 43:53] = 6  # nose
    lab[:, 66:70, 38:58] = 7
    lab[:, 70:73, 38:58] = 8
    lab[:, 73:77, 38:58] = 9
    return lab


def test_boxes_from_labels_margin_and_aspect():
    lab = _face_labels()
    boxes = boxes_from_labels(lab)
    for name, (classes, (ch, cw), _) in PARTS.items():
        x0, y0, x1, y1 = boxes[name][0].tolist()
        assert abs((y1 - y0) / (x1 - x0) - ch / cw) < 1e-5, name
        mask = sum(lab[0] == c for c in classes).bool()
        ys, xs = torch.nonzero(mask, as_tuple=True)
        fh, fw = ys.max() + 1 - ys.min(), xs.max() + 1 - xs.min()
        assert x0 <= xs.min() - 0.2 * fw + 1e-4 and x1 >= xs.max() + 1 + 0.2 * fw - 1e-4, name
        assert y0 <= ys.min() - 0.2 * fh + 1e-4 and y1 >= ys.max() + 1 + 0.2 * fh - 1e-4, name
        # cropped labels contain every pixel of the component
        local = crop_labels(lab, boxes[name], (ch, cw), classes)
        assert set(torch.unique(local).tolist()) == set(range(len(classes) + 1)), name


def test_boxes_from_keypoints_aspect_and_centre():
    # the landmark files' order: subject's left eye (image right in a frontal face), right eye, nose, left and
    # right mouth corner
    kp = torch.tensor([[[58.0, 41.0], [36.0, 41.0], [48.0, 56.0], [58.0, 71.0], [38.0, 71.0]]])
    boxes = boxes_from_keypoints(kp)
    mx0, my0, mx1, my1 = boxes["mouth"][0].tolist()
    assert abs((my1 - my0) / (mx1 - mx0) - 0.5) < 1e-5 and abs((mx0 + mx1) / 2 - 48) < 1e-4
    assert mx1 - mx0 >= 1.4 * 20 - 1e-4
    ex0, _, ex1, _ = boxes["subject_left_eye"][0].tolist()
    assert ex0 < 58 < ex1 and not ex0 < 36 < ex1  # the subject's left eye keypoint places the subject's left crop
    # a mirrored face with mirrored semantic keypoints gets mirrored boxes (no image-left/right assumption)
    mirrored = kp.clone()
    mirrored[..., 0] = 96 - mirrored[..., 0]
    mb = boxes_from_keypoints(mirrored)["subject_left_eye"][0]
    torch.testing.assert_close(torch.stack([96 - mb[2], mb[1], 96 - mb[0], mb[3]]), boxes["subject_left_eye"][0])
    with pytest.raises(ValueError, match="keypoints"):
        boxes_from_keypoints(kp[:, :4])


def test_merge_changes_labels_only_inside_crops():
    torch.manual_seed(0)
    bsz, c, hh, ww = 2, 11, 40, 48
    p1 = torch.randn(bsz, c, hh, ww).softmax(1)
    boxes = {"subject_left_eye": torch.tensor([[5.0, 4.0, 17.0, 16.0], [30.0, 2.0, 46.0, 18.0]]),
             "mouth": torch.tensor([[10.0, 25.0, 30.0, 35.0], [0.0, 20.0, 20.0, 30.0]])}
    parts, union = [], torch.zeros(bsz, 1, hh, ww, dtype=torch.bool)
    for name, box in boxes.items():
        classes, size, _ = PARTS[name]
        logits = torch.randn(bsz, len(classes) + 1, *size) * 4
        probs, inside = paste(logits.softmax(1), box, (hh, ww))
        parts.append((probs, inside, classes))
        union |= inside
    merged = merge_part_probs(p1, parts)
    torch.testing.assert_close(merged.sum(1), torch.ones(bsz, hh, ww))
    before, after = p1.argmax(1), merged.argmax(1)
    outside = ~union[:, 0]
    assert torch.equal(merged * outside[:, None], p1 * outside[:, None])
    assert torch.equal(before[outside], after[outside])
    assert (before[~outside] != after[~outside]).any()  # the crops do change labels
    # inside a crop the component's classes come from the second stage
    probs, inside, classes = parts[-1]
    pasted_labels = probs.argmax(1)
    mouth_pixels = inside[:, 0] & (pasted_labels > 0)
    expected = torch.tensor(classes)[pasted_labels[mouth_pixels] - 1]
    assert torch.equal(after[mouth_pixels], expected)
    # the inside mask covers exactly the pixel centres within the box
    assert parts[0][1][0, 0].sum() == 12 * 12


def test_two_stage_forward_and_gradients():
    torch.manual_seed(0)
    m = TwoStageRNNG(RNNG(11, width=8), 11, part_width=8).train()
    x, lab = torch.randn(1, 3, 96, 96), _face_labels()
    out = m(x, label=lab)
    assert out["parsing"].shape == (1, 11, 96, 96)
    assert out["part/mouth"].shape == (1, 4, 32, 64) and out["box/nose"].shape == (1, 4)
    sum(v.float().square().mean() for k, v in out.items() if not k.startswith("box/")).backward()
    assert all(p.grad is not None for p in m.parameters())
    m.eval()
    m.drop_edge_heads()
    assert set(m(x)) == {"parsing"}


def test_eye_crops_are_placed_by_side_even_when_stage1_mixes_left_and_right():
    """Both eyes labelled "left" (a typical first-stage confusion) still give one crop per eye, the subject's left
    crop on the image's right (an upright face), each around its own eye."""
    from dml_csr.models.two_stage import boxes_from_labels

    lab = torch.zeros(1, 64, 64, dtype=torch.long)
    lab[0, 20:24, 10:18] = 4  # the eye on the image's left, mislabelled as the subject's left eye
    lab[0, 20:24, 44:52] = 4  # the eye on the image's right
    lab[0, 16:18, 10:18] = 3  # a brow, labelled right
    lab[0, 28:40, 29:35] = 6  # nose between them
    boxes = boxes_from_labels(lab)
    left, right = boxes["subject_left_eye"][0], boxes["subject_right_eye"][0]
    assert left[0] > 32 and left[2] > 52  # image-right eye, with margin
    assert right[2] < 32 and right[0] < 10  # image-left eye and its brow
    assert right[1] < 16 <= right[3]  # the brow is inside the right crop
    for box in (left, right):
        assert (box[2] - box[0]) < 24  # one eye, not a box spanning both


def test_two_stage_components_subset():
    from dml_csr.config import ModelConfig
    from dml_csr.models.rnn_g import build_rnn_g

    model = build_rnn_g(ModelConfig(name="rnn_g", two_stage=True, rnn_components=["eye"]), 11).train()
    out = model(torch.randn(2, 3, 64, 64), label=torch.randint(0, 11, (2, 64, 64)))
    assert sorted(k for k in out if k.startswith("part/")) == ["part/subject_left_eye", "part/subject_right_eye"]
    assert set(model.part_nets) == {"eye"}
    with pytest.raises(ValueError, match="rnn_components.*eye, nose, mouth"):
        build_rnn_g(ModelConfig(name="rnn_g", two_stage=True, rnn_components=["ear"]), 11)
