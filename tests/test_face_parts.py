"""The face components of the two-stage RNN-G: class tables from names, boxes from labels and keypoints, crops."""
import numpy as np
import pytest
import torch
from helpers.face_labels import face_labels

from dml_csr.data.labels import get_spec
from dml_csr.data.synthetic import render_face
from dml_csr.face_parts import boxes_from_keypoints, boxes_from_labels, crop_labels, part_table

PARTS = part_table(get_spec("helen").classes)


def test_boxes_from_labels_margin_and_aspect():
    lab = face_labels()
    boxes = boxes_from_labels(lab, PARTS)
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


def test_eye_crops_are_placed_by_side_even_when_stage1_mixes_left_and_right():
    """Both eyes labelled "left" (a typical first-stage confusion) still give one crop per eye, the subject's left
    crop on the image's right (an upright face), each around its own eye."""
    lab = torch.zeros(1, 64, 64, dtype=torch.long)
    lab[0, 20:24, 10:18] = 4  # the eye on the image's left, mislabelled as the subject's left eye
    lab[0, 20:24, 44:52] = 4  # the eye on the image's right
    lab[0, 16:18, 10:18] = 3  # a brow, labelled right
    lab[0, 28:40, 29:35] = 6  # nose between them
    boxes = boxes_from_labels(lab, PARTS)
    left, right = boxes["subject_left_eye"][0], boxes["subject_right_eye"][0]
    assert left[0] > 32 and left[2] > 52  # image-right eye, with margin
    assert right[2] < 32 and right[0] < 10  # image-left eye and its brow
    assert right[1] < 16 <= right[3]  # the brow is inside the right crop
    for box in (left, right):
        assert (box[2] - box[0]) < 24  # one eye, not a box spanning both


def test_part_table_finds_classes_by_name_in_any_order():
    helen = get_spec("helen").classes
    assert PARTS["subject_left_eye"] == ((2, 4), (64, 64), "eye") and PARTS["mouth"][0] == (7, 8, 9)
    shuffled = list(reversed(helen))
    table = part_table(shuffled)
    assert [shuffled[i] for i in table["nose"][0]] == ["nose"]
    assert [shuffled[i] for i in table["subject_right_eye"][0]] == ["right_brow", "right_eye"]
    with pytest.raises(ValueError, match="needs the classes"):
        part_table(get_spec("celebamask_hq").classes)


def test_dataset_keypoints_place_each_crop_on_its_component():
    """The synthetic landmark order (subject's left eye first) puts every crop over its own classes."""
    for seed in range(4):
        image, label, kps = render_face(seed, size=(128, 128), second_face_prob=0.0)
        lab = torch.from_numpy(label.astype(np.int64))[None]
        boxes = boxes_from_keypoints(torch.from_numpy(kps)[None])
        for name, (classes, size, _) in PARTS.items():
            local = crop_labels(lab, boxes[name], size, classes)
            inside = [(local == i + 1).sum().item() for i in range(len(classes))]
            total = [(lab == c).sum().item() for c in classes]
            # most of each component's pixels fall in its own crop
            assert all(i >= 0.8 * t for i, t in zip(inside, total)), (seed, name, inside, total)


# ------------------------------------------------------------------------------- whose left: one test per convention
@pytest.mark.parametrize("left_is", ["subject", "image"])
def test_the_subject_left_eye_crop_parses_the_subject_left_eye_in_either_convention(left_is):
    """A frontal face: the subject's left eye lies on the image's right. A dataset of the subject convention labels
    it with its own 'left_eye' (index 4 in Helen's order), one of the image convention with its own 'right_eye'
    (index 5). Either way the registry names it left_eye, and the eye network's subject-left crop, placed on the
    image's right, is trained on that eye as its eye class (local label 2), from labels and from keypoints alike."""
    from dml_csr.data.labels import make_spec

    helen = ("background", "skin", "left_brow", "right_brow", "left_eye", "right_eye", "nose", "upper_lip",
             "inner_mouth", "lower_lip", "hair")
    spec = make_spec("d", helen, [(0, 0, 0)], ((2, 3), (4, 5)), left_is=left_is)
    own_left_eye, own_right_eye = 4, 5  # the dataset's own indices
    image_right_eye = own_left_eye if left_is == "subject" else own_right_eye
    label = torch.ones(1, 64, 64, dtype=torch.long)  # skin
    label[0, 24:28, 40:48] = image_right_eye
    label[0, 24:28, 16:24] = own_right_eye if left_is == "subject" else own_left_eye
    label[0, 30:40, 30:34] = 6  # nose
    assert spec.classes[image_right_eye] == "left_eye"
    table = part_table(spec.classes)
    classes, size, _ = table["subject_left_eye"]
    kp = torch.tensor([[[44.0, 26.0], [20.0, 26.0], [32.0, 38.0], [40.0, 48.0], [24.0, 48.0]]])
    for boxes in (boxes_from_labels(label, table), boxes_from_keypoints(kp)):
        box = boxes["subject_left_eye"]
        assert box[0, 0] > 32  # on the image's right
        local = crop_labels(label, box, size, classes)
        assert (local == 2).sum() > 20 and not (local == 1).any()  # the eye as eye; no brow in this face
