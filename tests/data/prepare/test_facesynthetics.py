"""FaceSynthetics: a fixture laid out as the download unpacks (the dataset README's file names and class order) into a
prepared root; its classes and colours in the registry; the 70 landmarks as the five keypoints."""
import json
import os

import cv2
import numpy as np
import pytest
from helpers.raw_layouts import load_all, write_facesynthetics

from dml_csr.data.labels import get_spec
from dml_csr.data.prepare import facesynthetics
from dml_csr.data.prepare.check import check_root
from dml_csr.data.prepare.common import PrepareError

# the dataset README's classes, in its order: BACKGROUND = 0 ... FACEWEAR = 18 (IGNORE = 255)
README_CLASSES = ["BACKGROUND", "SKIN", "NOSE", "RIGHT_EYE", "LEFT_EYE", "RIGHT_BROW", "LEFT_BROW", "RIGHT_EAR",
                  "LEFT_EAR", "MOUTH_INTERIOR", "TOP_LIP", "BOTTOM_LIP", "NECK", "HAIR", "BEARD", "CLOTHING",
                  "GLASSES", "HEADWEAR", "FACEWEAR"]


def test_the_registry_holds_the_readmes_classes_in_its_order():
    spec = get_spec("facesynthetics")
    assert list(spec.classes) == [c.lower() for c in README_CLASSES]
    assert spec.palette.shape == (19, 3) and len({tuple(c) for c in spec.palette.tolist()}) == 19
    assert spec.palette[0].tolist() == [0, 0, 0]
    named = {spec.classes[a]: spec.classes[b] for a, b in spec.flip_pairs}
    assert named == {"right_eye": "left_eye", "right_brow": "left_brow", "right_ear": "left_ear"}


def test_a_download_shaped_fixture_becomes_a_prepared_root(tmp_path):
    raw, out = str(tmp_path / "dataset_100"), str(tmp_path / "out")
    write_facesynthetics(os.path.join(raw, "dataset_100"), n=5)  # the zip's own top folder, as it unpacks
    info = facesynthetics.prepare(raw, out, val=1, test=1, workers=1, progress=False)
    assert info["counts"] == {"train": 3, "val": 1, "test": 1}
    assert [line.split()[0] for line in open(os.path.join(out, "test_list.txt"))] == ["images/000004.jpg"]
    assert open(os.path.join(out, "label_names.txt")).read().split() == ["bg"] + [c.lower() for c in README_CLASSES[1:]]
    frames = os.path.join(raw, "dataset_100")
    seg = cv2.imread(os.path.join(frames, "000004_seg.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(cv2.imread(os.path.join(out, "test", "labels", "000004.png"), cv2.IMREAD_UNCHANGED), seg)
    assert seg.max() == 255 and set(np.unique(seg).tolist()) == set(range(19)) | {255}
    hist = json.load(open(os.path.join(out, "info.json")))["pixel_histogram_by_split"]["test"]
    assert hist["facewear"] == int((seg == 18).sum()) and hist["background"] == int((seg == 0).sum())
    # five keypoints from the 70: the subject's left eye is iBUG 42-47 (the image's right), nose tip 30, mouth 54, 48
    pts = np.loadtxt(os.path.join(frames, "000004_ldmks.txt"))
    lines = open(os.path.join(out, "test", "landmarks", "000004.txt")).read().split("\n")
    five = np.array([[float(v) for v in line.split()] for line in lines[1:6]])
    expected = [pts[42:48].mean(0), pts[36:42].mean(0), pts[30], pts[54], pts[48]]
    assert lines[0] == "5" and np.allclose(five, expected, atol=1e-3)
    assert check_root(out, "facesynthetics") == []
    load_all(out, "facesynthetics")


def test_a_frame_missing_its_labels_or_landmarks_is_named(tmp_path):
    raw = str(tmp_path / "raw")
    write_facesynthetics(raw, n=4)
    os.remove(os.path.join(raw, "000001_seg.png"))
    with open(os.path.join(raw, "000002_ldmks.txt"), "a") as f:
        f.write("1 2\n")
    with pytest.raises(PrepareError, match="2 of 4 samples failed"):
        facesynthetics.prepare(raw, str(tmp_path / "out"), val=1, test=1, workers=1, progress=False)
    with pytest.raises(PrepareError, match="holds 4 frames .*--val 2 --test 2 leave none to train on"):
        facesynthetics.collect(raw, 2, 2)


def test_its_classes_meet_celebamask_hq_and_lapa_by_name():
    """The pretraining configs' class maps, written out: FaceSynthetics index -> CelebAMask-HQ's and LaPa's."""
    from dml_csr.data.class_map import build_class_map

    source = get_spec("facesynthetics")
    # background, skin, nose, r_eye, l_eye, r_brow, l_brow, r_ear, l_ear, mouth, u_lip, l_lip, neck, hair,
    # beard -> ignore, cloth, eye_g, hat, facewear -> ignore
    to_celeba = [0, 1, 2, 5, 4, 7, 6, 9, 8, 10, 11, 12, 17, 13, 255, 18, 3, 14, 255]
    # LaPa (Helen's order): 1 skin, 2 left_brow, 3 right_brow, 4 left_eye, 5 right_eye, 6 nose, 7 upper_lip,
    # 8 inner_mouth, 9 lower_lip, 10 hair; ears, neck, beard, clothing, glasses, headwear, facewear -> ignore
    to_lapa = [0, 1, 6, 5, 4, 3, 2, 255, 255, 8, 7, 9, 255, 10, 255, 255, 255, 255, 255]
    for target, expected in (("celebamask_hq", to_celeba), ("lapa", to_lapa)):
        cmap = build_class_map(source, target, "data.class_map")
        assert cmap.lut[:19].tolist() == expected and cmap.lut[255] == 255
    unsupervised = build_class_map(source, "celebamask_hq", "data.class_map").record["unsupervised"]
    assert unsupervised == ["ear_r", "neck_l"]  # earrings and necklaces: out of the pretraining's mean F1
