"""The second stage of RNN-G: merging component probabilities, the two-stage forward pass, component subsets."""
import pytest
import torch
from helpers.face_labels import face_labels

from dml_csr.data.labels import get_spec
from dml_csr.face_parts import part_table, paste
from dml_csr.models.rnn_g import RNNG
from dml_csr.models.two_stage import TwoStageRNNG, merge_part_probs

HELEN = get_spec("helen").classes
PARTS = part_table(HELEN)


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
    m = TwoStageRNNG(RNNG(11, width=8), HELEN, part_width=8).train()
    x, lab = torch.randn(1, 3, 96, 96), face_labels()
    out = m(x, label=lab)
    assert out["parsing"].shape == (1, 11, 96, 96)
    assert out["part/mouth"].shape == (1, 4, 32, 64) and out["box/nose"].shape == (1, 4)
    sum(v.float().square().mean() for k, v in out.items() if not k.startswith("box/")).backward()
    assert all(p.grad is not None for p in m.parameters())
    m.eval()
    assert m.drop_edge_heads() is m
    assert set(m(x)) == {"parsing"}


def test_two_stage_components_subset():
    from dml_csr.config import ModelConfig
    from dml_csr.models.rnn_g import build_rnn_g

    model = build_rnn_g(ModelConfig(name="rnn_g", two_stage=True, rnn_components=["eye"]), 11, HELEN).train()
    out = model(torch.randn(2, 3, 64, 64), label=torch.randint(0, 11, (2, 64, 64)))
    assert sorted(k for k in out if k.startswith("part/")) == ["part/subject_left_eye", "part/subject_right_eye"]
    assert set(model.part_nets) == {"eye"}
    with pytest.raises(ValueError, match="rnn_components.*eye, nose, mouth"):
        build_rnn_g(ModelConfig(name="rnn_g", two_stage=True, rnn_components=["ear"]), 11, HELEN)


def test_windowed_merge_equals_the_whole_image_merge_with_its_gradients():
    """The two-stage models paste and merge each component over the window its boxes span: the same values and
    gradients as over the whole image."""
    from dml_csr.face_parts import window

    torch.manual_seed(1)
    hw = (40, 48)
    stage1 = torch.randn(2, 11, *hw).softmax(1).requires_grad_(True)
    boxes = {"subject_left_eye": torch.tensor([[5.2, 4.0, 17.5, 16.1], [30.0, 2.0, 46.0, 18.0]]),
             "mouth": torch.tensor([[10.0, 25.0, 30.0, 35.0], [-3.0, 20.0, 20.0, 41.0]])}  # one crosses the border
    logits = {n: torch.randn(2, len(PARTS[n][0]) + 1, *PARTS[n][1], requires_grad=True) for n in boxes}
    results = []
    for windowed in (False, True):
        parts = []
        for n, box in boxes.items():
            region = window(box, hw) if windowed else None
            probs, inside = paste(logits[n].softmax(1), box, hw, region)
            parts.append((probs, inside, PARTS[n][0]) + ((region,) if windowed else ()))
        merged = merge_part_probs(stage1, parts)
        grads = torch.autograd.grad((merged * torch.arange(11.0).view(1, 11, 1, 1)).sum(),
                                    [stage1, *logits.values()])
        results.append((merged.detach(), grads))
    (a, ga), (b, gb) = results
    torch.testing.assert_close(b, a)
    for x, y in zip(gb, ga):
        torch.testing.assert_close(x, y)
    assert window(boxes["mouth"], hw) == (20, 40, 0, 30)  # clipped to the image
