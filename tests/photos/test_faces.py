"""Faces a user gives (boxes, dicts, a JSON file) and their errors, mirrored landmarks refused at any rotation, and
the JSON record predict.py writes read back."""
from __future__ import annotations

import json

import numpy as np
import pytest
from helpers.photos import astronaut

from dml_csr.photos.detection import build_detector
from dml_csr.photos.faces import Face, as_faces, faces_from_json, faces_record, given_faces, write_faces


def test_given_faces_and_their_errors(tmp_path):
    pts = [[60, 40], [40, 40], [50, 50], [58, 60], [42, 60]]
    named = dict(zip(("subject_left_eye", "subject_right_eye", "nose_tip", "subject_left_mouth_corner",
                      "subject_right_mouth_corner"), pts))
    det = given_faces([(10, 20, 30, 40), {"box": [1, 2, 3, 4], "landmarks": pts, "score": 0.5},
                       {"box": [1, 2, 3, 4], "landmarks": named}])
    a, b, c = det(np.zeros((8, 8, 3), np.uint8))
    assert a.box == (10, 20, 30, 40) and a.points is None and a.score == 1.0
    assert np.array_equal(b.points, pts) and b.score == 0.5 and np.array_equal(c.points, pts)
    with pytest.raises(ValueError, match=r"face 0: landmarks have 4 numbers; expected 5 \(x, y\) points"):
        given_faces([{"box": [1, 2, 3, 4], "landmarks": [[1, 2], [3, 4]]}])
    with pytest.raises(ValueError, match=r"face 1: box \[1.0, 2.0, 0.0, 4.0\] is not \(x, y, width, height\)"):
        given_faces([(1, 2, 3, 4), (1, 2, 0, 4)])
    with pytest.raises(ValueError, match="face 0: has no 'box'"):
        given_faces([{"landmarks": pts}])
    path = tmp_path / "faces.json"
    path.write_text(json.dumps({"faces": [b.to_dict()]}))
    (back,) = faces_from_json(str(path))(None)
    assert back.box == b.box and np.allclose(back.points, pts) and back.score == 0.5
    assert build_detector(str(path))(None)[0].box == b.box
    path.write_text("{")
    with pytest.raises(ValueError, match="faces file '.*faces.json' cannot be read as JSON"):
        faces_from_json(str(path))
    assert as_faces([(1, 2, 3, 4)])[0].box == (1.0, 2.0, 3.0, 4.0)
    with pytest.raises(ValueError, match="face 0: expected a box of 4 numbers"):
        given_faces([{"box": [1, 2, "a", 4]}])
    with pytest.raises(ValueError, match="faces file .* face 0: expected a box of 4 numbers"):
        path.write_text('{"faces": [5]}')
        faces_from_json(str(path))
    # a file that records its image's size refuses another image
    path.write_text(json.dumps({"height": 8, "width": 6, "faces": [b.to_dict()]}))
    with pytest.raises(ValueError, match="describes a 6x8 image; this one is 8x8"):
        faces_from_json(str(path))(np.zeros((8, 8, 3), np.uint8))
    assert len(faces_from_json(str(path))(np.zeros((8, 6, 3), np.uint8))) == 1
    assert not b.points.flags.writeable  # a face's landmarks cannot be changed under it


def test_mirrored_landmarks_are_refused_at_any_rotation():
    """The common mistake: the image-left eye first (YuNet's, insightface's, dlib's order). Our order turns the
    eye-to-eye vector clockwise into the eyes-to-mouth one at any rotation; the mirrored order turns it the other
    way."""
    _, face = astronaut()
    ours = face["landmarks"]
    for angle in (0, 30, 90, 170, -120):
        a = np.deg2rad(angle)
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        turned = ours @ rot.T
        given_faces([{"box": [0, 0, 10, 10], "landmarks": turned.tolist()}])  # accepted
        with pytest.raises(ValueError, match=r"landmarks are mirrored .* reorder them \[1, 0, 2, 4, 3\]"):
            given_faces([{"box": [0, 0, 10, 10], "landmarks": turned[[1, 0, 2, 4, 3]].tolist()}])


def test_the_written_record_reads_back_as_the_same_faces(tmp_path):
    faces = [Face((10.0, 20.0, 30.0, 40.0), np.array([[60, 40], [40, 40], [50, 50], [58, 60], [42, 60]]), 0.75),
             Face((1.0, 2.0, 3.0, 4.0))]
    path = str(tmp_path / "f.json")
    write_faces(path, faces, (80, 90), "photo.jpg", "template", tracks=[3, 4])
    record = json.load(open(path))
    assert record["input"] == "photo.jpg" and (record["height"], record["width"]) == (80, 90)
    assert record["crop"] == "template" and [f["track"] for f in record["faces"]] == [3, 4]
    back = faces_from_json(path)(np.zeros((80, 90, 3), np.uint8))
    assert [f.box for f in back] == [f.box for f in faces] and back[1].points is None
    np.testing.assert_allclose(back[0].points, faces[0].points)
    assert back[0].score == 0.75
    assert "track" not in faces_record(faces, (80, 90), "x", "whole_image")["faces"][0]
