"""Video: tracks keep their ids, landmarks and probabilities are moving averages, smoothing removes flicker, and
predict.py writes the overlay video and the tracked faces."""
from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest
import torch
from helpers.scripts import load_script, run_script
from helpers.tiny_checkpoint import one_thread, write_tiny_checkpoint  # noqa: F401 (fixture)

from dml_csr import FaceParser
from dml_csr.data.labels import get_spec
from dml_csr.photos.faces import Face
from dml_csr.photos.video import VideoParser, box_iou

pytestmark = pytest.mark.usefixtures("one_thread")
PTS = np.array([[60, 40], [40, 40], [50, 50], [58, 60], [42, 60]], np.float32)


class _Brightness(torch.nn.Module):
    def forward(self, x):
        logits = torch.full((x.shape[0], 11) + x.shape[2:], -30.0)
        logits[:, :1] = 0.0
        logits[:, 1:2] = 20.0 * (x.mean(1, keepdim=True) - 0.5)
        return {"parsing": logits}


def _parser(detector=None) -> FaceParser:
    meta = {"classes": list(get_spec("synthetic").classes), "dataset": "synthetic", "channel_order": "BGR",
            "mean": [0.0] * 3, "std": [1.0] * 3, "input_size": [64, 64]}
    return FaceParser(_Brightness(), meta, detector=detector)


def test_box_iou():
    assert box_iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0


def test_tracks_keep_their_ids_and_landmarks_are_moving_averages():
    video = VideoParser(_parser(), smooth=0.5, max_missing=1)
    a = video.update_tracks([Face((30, 30, 40, 40), PTS), Face((200, 30, 40, 40))])
    assert [t for t, _ in a] == [0, 1]
    b = video.update_tracks([Face((204, 30, 40, 40)), Face((32, 30, 40, 40), PTS + 4)])  # listed the other way
    assert [t for t, _ in b] == [1, 0]
    np.testing.assert_allclose(b[1][1].points, PTS + 2)  # 0.5 * old + 0.5 * new
    np.testing.assert_allclose(b[1][1].box, (31, 30, 40, 40))
    c = video.update_tracks([Face((400, 30, 40, 40))])  # far from both: a new track; 0 and 1 bridged
    assert [t for t, _ in c] == [2, 0, 1] and c[1][1].box == b[1][1].box
    assert [t for t, _ in video.update_tracks([])] == [2]  # 0 and 1 missed twice: ended
    assert video.update_tracks([Face((31, 30, 40, 40), PTS)])[0][0] == 3  # where 0 was: a new track


def test_smoothing_removes_flicker_on_a_noisy_still():
    """Sensor noise flips the labels of pixels near the decision boundary; the moving average of each tracked face's
    probabilities (in its aligned crop) flips fewer; smooth=0 is each frame parsed on its own."""
    rng = np.random.default_rng(0)
    still = np.tile(np.linspace(60, 200, 96, dtype=np.float32), (64, 1))[..., None].repeat(3, 2)
    frames = [np.clip(still + rng.normal(0, 12, still.shape), 0, 255).astype(np.uint8) for _ in range(12)]
    face = [Face((24, 8, 48, 48), PTS * 0.8)]

    def flicker(smooth):
        video = VideoParser(_parser(), smooth=smooth)
        labels = [video(f, face)[0] for f in frames]
        return np.mean([(a != b).mean() for a, b in zip(labels, labels[1:])]), labels
    raw, raw_labels = flicker(0.0)
    smoothed, _ = flicker(0.6)
    assert raw > 0.01 and smoothed < 0.6 * raw
    np.testing.assert_array_equal(raw_labels[3], _parser().parse_faces(frames[3], face, channel_order="BGR"))
    whole = VideoParser(_parser(), detect=False, smooth=0.6)
    np.testing.assert_array_equal(whole(frames[3])[0], _parser()(frames[3], channel_order="BGR"))
    with pytest.raises(ValueError, match=r"smooth must be in \[0, 1\)"):
        VideoParser(_parser(), smooth=1.0)


def test_predict_writes_the_overlay_video_and_tracked_faces(tmp_path):
    ckpt = write_tiny_checkpoint(str(tmp_path / "tiny.pt"))
    from dml_csr.data.synthetic import render_face

    face = render_face(2, size=(64, 80))[0]
    path = str(tmp_path / "clip.avi")
    w = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 10, (80, 64))
    for i in range(6):
        w.write(np.roll(face, i, axis=1))
    w.release()
    faces = tmp_path / "faces"
    faces.mkdir()
    for i in range(0, 6, 2):
        (faces / f"clip_f{i:06d}.json").write_text(json.dumps({"faces": [{"box": [20 + i, 10, 30, 40]}]}))
    out = tmp_path / "out"
    r = run_script("predict", path, "--checkpoint", ckpt, "--out", str(out), "--every", "2", "--detect",
                   "--detector", str(faces), "--device", "cpu", "--no-progress")
    assert r.returncode == 0, r.stderr
    video = out / "videos" / "clip.mp4"
    assert f"overlay video: {video}" in r.stdout and not os.path.exists(out / "videos" / "clip.partial.mp4")
    cap = cv2.VideoCapture(str(video))
    assert cap.get(cv2.CAP_PROP_FRAME_COUNT) == 3 and cap.get(cv2.CAP_PROP_FPS) == pytest.approx(5)
    cap.release()
    tracks = [json.loads((out / "faces" / f"clip_f{i:06d}.json").read_text())["faces"][0]["track"] for i in (0, 2, 4)]
    assert tracks == [0, 0, 0]  # one face moving 2 px a frame: one track


def test_benchmark_video_prints_both_figures(tmp_path):
    ckpt = write_tiny_checkpoint(str(tmp_path / "tiny.pt"))
    out = tmp_path / "flicker.json"
    r = run_script("benchmark_video", "--checkpoint", ckpt, "--frames", "4", "--json", str(out))
    assert r.returncode == 0, r.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [row["smooth"] for row in rows] == [0.0, 0.5] and rows[0]["ratio"] == 1.0
    assert "smooth 0.50" in r.stdout
    frames, mats = load_script("benchmark_video").jittered_frames(np.zeros((20, 20, 3), np.uint8), 2, 0, 0, 0, 0, 0)
    np.testing.assert_allclose(mats[0], [[1, 0, 0], [0, 1, 0]])  # no jitter asked: the identity
