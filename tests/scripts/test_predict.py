"""scripts/predict.py on a folder with a broken file in it, a glob, a video and a missing path."""
from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
from helpers.scripts import run_script
from helpers.tiny_checkpoint import one_thread, write_tiny_checkpoint  # noqa: F401 (fixture)

from dml_csr.data.synthetic import render_face

pytestmark = pytest.mark.usefixtures("one_thread")


def test_folder_with_broken_file_glob_and_video(tmp_path):
    ckpt = write_tiny_checkpoint(str(tmp_path / "tiny.pt"))
    folder = tmp_path / "in"
    folder.mkdir()
    faces = {"a": render_face(1, size=(48, 40))[0], "b": render_face(2, size=(50, 66))[0]}
    for n, img in faces.items():
        cv2.imwrite(str(folder / f"{n}.png"), img)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    (folder / "notes.txt").write_text("not an image, ignored")
    other = tmp_path / "other"
    other.mkdir()
    cv2.imwrite(str(other / "a.png"), faces["a"][:, ::-1])  # same stem as in/a.png: must not overwrite it
    video = str(tmp_path / "clip.avi")
    w = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"MJPG"), 5, (40, 32))
    for i in range(5):
        w.write(cv2.resize(faces["a"], (40, 32)))
    w.release()
    out = tmp_path / "out"
    r = run_script("predict", str(folder), str(other / "*.png"), video, str(tmp_path / "nope.jpg"), "--checkpoint", ckpt,
                   "--out", str(out), "--batch-size", "2", "--every", "2", "--device", "cpu", "--no-progress")
    assert r.returncode == 1, r.stderr
    assert "2 input(s) failed" in r.stderr and "broken.jpg" in r.stderr and "nope.jpg" in r.stderr
    assert "parsed 6 image(s) and video frame(s)" in r.stdout  # a, b, other/a, video frames 0, 2, 4
    labels = sorted(os.listdir(out / "labels"))
    assert labels == ["a.png", "a_1.png", "b.png", "clip_f000000.png", "clip_f000002.png", "clip_f000004.png"]
    assert sorted(os.listdir(out / "overlays")) == [n.replace(".png", ".jpg") for n in labels]
    # the labels are what the API gives for the same image, at its own size
    from dml_csr import FaceParser

    parser = FaceParser.from_checkpoint(ckpt)
    for n, img in faces.items():
        lab = cv2.imread(str(out / "labels" / f"{n}.png"), cv2.IMREAD_UNCHANGED)
        assert lab.shape == img.shape[:2]
        assert (lab == parser(img, channel_order="BGR")).mean() > 0.999
    assert cv2.imread(str(out / "labels" / "clip_f000002.png"), cv2.IMREAD_UNCHANGED).shape == (32, 40)


def test_all_good_inputs_exit_zero(tmp_path):
    ckpt = write_tiny_checkpoint(str(tmp_path / "tiny.pt"))
    cv2.imwrite(str(tmp_path / "x.jpg"), render_face(4, size=(40, 40))[0])
    r = run_script("predict", str(tmp_path / "x.jpg"), "--checkpoint", ckpt, "--out", str(tmp_path / "o"),
                   "--no-overlay", "--device", "cpu", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert os.listdir(tmp_path / "o" / "labels") == ["x.png"] and not (tmp_path / "o" / "overlays").exists()
    # --crf: the same photo with a dense CRF on the network's probabilities (Liu et al.'s CNN-CRF) changes labels
    r = run_script("predict", str(tmp_path / "x.jpg"), "--checkpoint", ckpt, "--out", str(tmp_path / "crf"),
                   "--no-overlay", "--device", "cpu", "--no-progress", "--crf", "5")
    assert r.returncode == 0, r.stderr
    plain, crf = (cv2.imread(str(tmp_path / d / "labels" / "x.png"), cv2.IMREAD_UNCHANGED) for d in ("o", "crf"))
    assert plain.shape == crf.shape == (40, 40) and (plain != crf).any()
    r = run_script("predict", str(tmp_path / "x.jpg"), "--checkpoint", ckpt, "--out", str(tmp_path / "bad"),
                   "--crf", "51")
    assert r.returncode == 2 and "argument --crf: '51'; expected a whole number >= 0 and <= 50" in r.stderr
    # --crf-kernel: with both kernels' weights 0 the CRF moves nothing, and the labels are the plain ones
    r = run_script("predict", str(tmp_path / "x.jpg"), "--checkpoint", ckpt, "--out", str(tmp_path / "off"),
                   "--no-overlay", "--device", "cpu", "--no-progress", "--crf", "1", "--crf-kernel",
                   "bilateral_weight=0", "spatial_weight=0")
    assert r.returncode == 0, r.stderr
    assert (cv2.imread(str(tmp_path / "off" / "labels" / "x.png"), cv2.IMREAD_UNCHANGED) == plain).all()
    r = run_script("predict", str(tmp_path / "x.jpg"), "--checkpoint", ckpt, "--out", str(tmp_path / "bad"),
                   "--crf-kernel", "bilateral_rgb=20")
    assert r.returncode == 2 and "error: --crf-kernel sets the dense CRF's kernels; it needs --crf" in r.stderr


def test_predict_script_writes_labels_at_input_size_rnn_g(rnn_g_run):
    tmp, _, _, best = rnn_g_run
    image, _, _ = render_face(5, size=(70, 90))
    cv2.imwrite(str(tmp / "face.png"), image)
    out = tmp / "pred"
    r = run_script("predict", str(tmp / "face.png"), "--checkpoint", best, "--out", str(out), "--device", "cpu",
                   "--no-progress")
    assert r.returncode == 0, r.stderr
    pngs = [os.path.join(d, f) for d, _, fs in os.walk(out) for f in fs if f.endswith(".png")]
    labels = [cv2.imread(p, cv2.IMREAD_UNCHANGED) for p in pngs]
    maps = [lab for lab in labels if lab.ndim == 2]
    assert maps and all(lab.shape == (70, 90) and lab.max() < 11 for lab in maps)


def test_one_bad_input_does_not_cost_the_others(tmp_path):
    """A 1x1 image (which cannot be cropped), a truncated JPEG and a truncated video are each named; the other
    images of the same batch are parsed and written."""
    ckpt = write_tiny_checkpoint(str(tmp_path / "tiny.pt"))
    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), render_face(1, size=(40, 40))[0])
    cv2.imwrite(str(folder / "dot.png"), np.zeros((1, 1, 3), np.uint8))
    cv2.imwrite(str(folder / "b.png"), render_face(2, size=(40, 48))[0])
    cv2.imwrite(str(folder / "cut.jpg"), render_face(3, size=(64, 64))[0])
    data = open(folder / "cut.jpg", "rb").read()
    open(folder / "cut.jpg", "wb").write(data[: len(data) // 2])
    video = str(folder / "clip.avi")
    w = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"MJPG"), 5, (40, 32))
    for _ in range(6):
        w.write(cv2.resize(render_face(4, size=(40, 40))[0], (40, 32)))
    w.release()
    data = open(video, "rb").read()
    open(video, "wb").write(data[: len(data) * 2 // 3])
    r = run_script("predict", str(folder), "--checkpoint", ckpt, "--out", str(tmp_path / "o"), "--batch-size", "4",
                   "--device", "cpu", "--no-progress")
    assert r.returncode == 1, r.stderr
    assert "dot.png: cannot be parsed: an image of 1x1 pixels cannot be cropped" in r.stderr
    assert "cut.jpg: is truncated" in r.stderr and "clip.avi: video ends after" in r.stderr
    written = sorted(os.listdir(tmp_path / "o" / "labels"))
    assert "a.png" in written and "b.png" in written and "dot.png" not in written
    assert any(n.startswith("clip_f") for n in written)  # the frames read before the cut were parsed


def test_an_output_that_cannot_be_written_is_named_and_the_rest_written(tmp_path):
    ckpt = write_tiny_checkpoint(str(tmp_path / "tiny.pt"))
    for n, seed in (("a", 1), ("b", 2)):
        cv2.imwrite(str(tmp_path / f"{n}.png"), render_face(seed, size=(40, 40))[0])
    (tmp_path / "o" / "labels" / "b.png").mkdir(parents=True)  # a folder where b's label PNG goes
    r = run_script("predict", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--checkpoint", ckpt,
                   "--out", str(tmp_path / "o"), "--device", "cpu", "--no-progress")
    assert r.returncode == 1 and "parsed 1 image(s) and video frame(s)" in r.stdout
    assert "b.png: could not write" in r.stderr and os.path.join("labels", "b.png") in r.stderr
    assert sorted(os.listdir(tmp_path / "o" / "labels")) == ["a.png", "b.png"]  # no .tmp-* left
    assert cv2.imread(str(tmp_path / "o" / "labels" / "a.png"), cv2.IMREAD_UNCHANGED).shape == (40, 40)


def test_detect_writes_the_faces_and_counts_photos_without_one(tmp_path):
    """--detect with faces given in a JSON file (the detector a user already ran): the labels are the API's
    composite for those faces, faces/NAME.json lists them, and a photo without a face is warned about and counted."""
    import json

    from helpers.photos import group_photo

    from dml_csr import FaceParser
    from dml_csr.photos.faces import Face

    ckpt = write_tiny_checkpoint(str(tmp_path / "tiny.pt"))
    canvas, _, points = group_photo()
    small = cv2.resize(canvas, (550, 350))
    faces = [Face(tuple(p.min(0) / 2 - 10) + tuple(np.ptp(p, 0) / 2 + 20), (p / 2).astype(np.float32))
             for p in points]
    faces_file = tmp_path / "faces.json"
    faces_file.write_text(json.dumps({"faces": [f.to_dict() for f in faces]}))
    cv2.imwrite(str(tmp_path / "group.png"), small)
    out = tmp_path / "out"
    r = run_script("predict", str(tmp_path / "group.png"), "--checkpoint", ckpt, "--out", str(out), "--detect",
                   "--detector", str(faces_file), "--device", "cpu", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "parsed 1 image(s) and video frame(s)" in r.stdout and "5 face(s) found" in r.stdout
    record = json.loads((out / "faces" / "group.json").read_text())
    assert (record["height"], record["width"]) == (350, 550) and len(record["faces"]) == 5
    assert record["faces"][0]["landmarks"]["subject_left_eye"] == faces[0].to_dict()["landmarks"]["subject_left_eye"]
    lab = cv2.imread(str(out / "labels" / "group.png"), cv2.IMREAD_UNCHANGED)
    parser = FaceParser.from_checkpoint(ckpt)
    assert (lab == parser.parse_faces(small, faces, channel_order="BGR")).mean() > 0.999
    # no face: a warning naming the file, counted in the summary, all background
    empty = tmp_path / "none.json"
    empty.write_text('{"faces": []}')
    r = run_script("predict", str(tmp_path / "group.png"), "--checkpoint", ckpt, "--out", str(tmp_path / "o2"),
                   "--detect", "--detector", str(empty), "--device", "cpu", "--no-progress")
    assert r.returncode == 0 and "no face found in 1 image(s):" in r.stdout and "group.png" in r.stdout
    assert (cv2.imread(str(tmp_path / "o2" / "labels" / "group.png"), cv2.IMREAD_UNCHANGED) == 0).all()


def test_photo_and_mask_folders_exports_and_progress(tmp_path):
    """A dataset folder (0.jpg beside its label map 0.png) parses the photo only; an exported model given as
    --checkpoint is refused in one line; the progress bar knows its total."""
    ckpt = write_tiny_checkpoint(str(tmp_path / "tiny.pt"))
    folder = tmp_path / "pairs"
    folder.mkdir()
    for i in range(2):
        img, lab = render_face(i, size=(48, 40))[:2]
        cv2.imwrite(str(folder / f"{i}.jpg"), img)
        cv2.imwrite(str(folder / f"{i}.png"), lab)
    cv2.imwrite(str(folder / "extra.png"), render_face(5, size=(48, 40))[0])  # a photo of its own
    out = tmp_path / "out"
    r = run_script("predict", str(folder), "--checkpoint", ckpt, "--out", str(out), "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(out / "labels")) == ["0.png", "1.png", "extra.png"]
    assert "3/3" in r.stderr  # tqdm's count of the total
    for ext, kind in ((".onnx", "an ONNX model"), (".ts", "a TorchScript model")):
        exported = tmp_path / f"model{ext}"
        exported.write_bytes(b"x")
        r = run_script("predict", str(folder), "--checkpoint", str(exported), "--out", str(out))
        assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1
        assert f"is {kind}" in r.stderr and "pass the checkpoint it was exported from" in r.stderr
    missing = str(tmp_path / "missing.onnx")
    (tmp_path / "lone.xml").write_text("<net/>")  # an IR without its .bin
    (tmp_path / "cut.onnx").write_bytes(b"\x08\x07\x12")  # a truncated protobuf
    for path, says in ((missing, f"--checkpoint '{missing}' does not exist"),
                       (str(tmp_path / "lone.xml"), "is an OpenVINO model without its weights: '"),
                       (str(tmp_path / "cut.onnx"), "is an ONNX model that cannot be read as one of scripts/export")):
        r = run_script("predict", str(folder), "--checkpoint", path, "--out", str(out))
        assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert says in r.stderr, r.stderr


def test_given_faces_per_image_from_a_folder(tmp_path):
    """One faces file describes one image: with two inputs it is refused; a folder of NAME.json (as faces/ holds)
    gives each image its own, and an image without its file fails alone."""
    import json

    ckpt = write_tiny_checkpoint(str(tmp_path / "tiny.pt"))
    photos, faces = tmp_path / "photos", tmp_path / "faces"
    photos.mkdir()
    faces.mkdir()
    for i in range(3):
        cv2.imwrite(str(photos / f"p{i}.png"), render_face(i, size=(60, 60))[0])
    for i in range(2):
        (faces / f"p{i}.json").write_text(json.dumps({"height": 60, "width": 60, "faces": [{"box": [10, 10, 20 + i, 30]}]}))
    common = ["--checkpoint", ckpt, "--device", "cpu", "--no-progress", "--detect"]
    r = run_script("predict", str(photos), "--out", str(tmp_path / "o1"), "--detector", str(faces / "p0.json"), *common)
    assert r.returncode == 2 and "a faces file describes one image, and 3 are given" in r.stderr
    r = run_script("predict", str(photos), "--out", str(tmp_path / "o2"), "--detector", str(faces), *common)
    assert r.returncode == 1 and "1 input(s) failed" in r.stderr and "no faces file" in r.stderr and "p2.json" in r.stderr
    for i in range(2):
        rec = json.loads((tmp_path / "o2" / "faces" / f"p{i}.json").read_text())
        assert rec["faces"][0]["box"] == [10, 10, 20 + i, 30]


def test_a_folder_with_an_empty_file_a_bomb_and_a_link_loop(tmp_path):
    """Every good image's outputs are written, the three bad files are each named with the reason, the exit status
    is 1, and the run (a child process, its peak memory measured there) stays under 1 GB resident although the bomb
    declares 20000 x 20000."""
    import json
    import subprocess
    import sys

    from helpers import ROOT, bombs
    from helpers.tiny_checkpoint import subprocess_env

    ckpt = write_tiny_checkpoint(str(tmp_path / "tiny.pt"))
    folder = tmp_path / "in"
    folder.mkdir()
    for n, seed in (("a", 1), ("b", 2), ("c", 3)):
        cv2.imwrite(str(folder / f"{n}.png"), render_face(seed, size=(40, 44))[0])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "bomb.gif").write_bytes(bombs.gif())
    os.symlink("loop.png", folder / "loop.png")
    stats = tmp_path / "peak.json"
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "helpers", "peak_rss.py"), str(stats),
                        os.path.join(ROOT, "scripts", "predict.py"), str(folder), "--checkpoint", ckpt, "--out",
                        str(tmp_path / "o"), "--device", "cpu", "--no-progress"], capture_output=True, text=True,
                       env=subprocess_env(), timeout=300)
    assert r.returncode == 1, r.stderr
    assert json.load(open(stats))["peak_rss_mb"] < 1024
    assert "parsed 3 image(s) and video frame(s)" in r.stdout and "3 input(s) failed" in r.stderr
    assert f"{folder / 'empty.jpg'}: is empty (0 bytes)" in r.stderr
    assert f"{folder / 'bomb.gif'}: is 20000x20000 (400.0 megapixels); expected at most 100 megapixels" in r.stderr
    assert f"{folder / 'loop.png'}: is a symbolic link loop" in r.stderr
    assert "Traceback" not in r.stderr
    assert sorted(os.listdir(tmp_path / "o" / "labels")) == ["a.png", "b.png", "c.png"]
    assert sorted(os.listdir(tmp_path / "o" / "overlays")) == ["a.jpg", "b.jpg", "c.jpg"]


@pytest.mark.parametrize("flag,value,expected", [
    ("--scales", "0", "--scales = '0'; expected comma-separated numbers, each a finite number > 0 and <= 8"),
    ("--scales", "-1", "--scales = '-1'; expected comma-separated numbers"),
    ("--scales", "1,inf", "--scales = '1,inf'; expected comma-separated numbers"),
    ("--threshold", "nan", "--threshold = nan; expected a finite number >= 0 and <= 1"),
    ("--margin", "inf", "--margin = inf; expected a finite number >= 0 and <= 10"),
    ("--alpha", "-0.5", "--alpha = -0.5; expected a finite number >= 0 and <= 1"),
    ("--batch-size", "0", "--batch-size = 0; expected a whole number >= 1 and <= 4096"),
    ("--max-megapixels", "nan", "--max-megapixels = 'nan'; expected a finite number > 0"),
])
def test_numbers_of_the_command_line_are_checked_in_one_line(tmp_path, flag, value, expected):
    r = run_script("predict", str(tmp_path), "--checkpoint", "x.pt", "--out", str(tmp_path / "o"), flag, value)
    assert r.returncode == 2 and r.stderr.startswith(f"error: {expected}") and r.stderr.count("\n") == 1, r.stderr


def test_the_image_limits_of_the_command_line_reach_the_reader(tmp_path, monkeypatch):
    from dml_csr.data.imageio import ENV_PIXELS

    monkeypatch.setenv(ENV_PIXELS, "100")  # the script sets it in this process: undone after the test
    ckpt = write_tiny_checkpoint(str(tmp_path / "tiny.pt"))
    cv2.imwrite(str(tmp_path / "x.png"), render_face(4, size=(40, 40))[0])
    r = run_script("predict", str(tmp_path / "x.png"), "--checkpoint", ckpt, "--out", str(tmp_path / "o"),
                   "--device", "cpu", "--no-progress", "--max-megapixels", "0.001")
    assert r.returncode == 1
    assert "x.png: is 40x40 (0.0 megapixels); expected at most 0.001 megapixels (the pixel limit" in r.stderr


def test_edges_writes_the_binary_and_category_edge_maps_beside_the_labels(tmp_path, rnn_g_run):
    """--edges with a DML-CSR checkpoint that keeps its edge heads: per image a 0/255 binary map and a category map
    of class indices at the image's size, each the argmax of its head's probabilities mapped back, and a colour
    version; a checkpoint without the heads (RNN-G) is refused in one line."""
    import torch

    from dml_csr import inference
    from dml_csr.checkpoint import load_model
    from dml_csr.conventions import resize_bilinear

    ckpt = write_tiny_checkpoint(str(tmp_path / "tiny.pt"))
    image = render_face(4, size=(50, 70))[0]
    cv2.imwrite(str(tmp_path / "x.png"), image)
    r = run_script("predict", str(tmp_path / "x.png"), "--checkpoint", ckpt, "--out", str(tmp_path / "o"),
                   "--edges", "--no-overlay", "--device", "cpu", "--no-progress")
    assert r.returncode == 0, r.stderr
    edges = tmp_path / "o" / "edges"
    assert sorted(os.listdir(edges)) == ["x_binary.png", "x_category.png", "x_category_color.png"]
    binary = cv2.imread(str(edges / "x_binary.png"), cv2.IMREAD_UNCHANGED)
    category = cv2.imread(str(edges / "x_category.png"), cv2.IMREAD_UNCHANGED)
    assert binary.shape == category.shape == (50, 70) and set(np.unique(binary)) <= {0, 255}
    # the maps, recomputed here from the heads' outputs: the probabilities mapped back, then the argmax
    model, meta = load_model(ckpt, edge_heads=True)
    x, (inverse,) = inference.network_input([cv2.imread(str(tmp_path / "x.png"))], inference.input_transform(meta))
    with torch.no_grad():
        out = model(x)
    for key, got, scale in (("edge", binary, 255), ("semantic_edge", category, 1)):
        p = resize_bilinear(out[key], x.shape[-2:]).softmax(1)[0].numpy()
        expected = np.stack([cv2.warpAffine(c, inverse, (70, 50), flags=cv2.INTER_LINEAR,
                                            borderMode=cv2.BORDER_REPLICATE) for c in p]).argmax(0)
        assert (got == expected * scale).mean() > 0.999, key
    _, _, _, rnn_g = rnn_g_run
    r = run_script("predict", str(tmp_path / "x.png"), "--checkpoint", rnn_g, "--out", str(tmp_path / "r"),
                   "--edges", "--device", "cpu", "--no-progress")
    assert r.returncode == 2 and "edge" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
