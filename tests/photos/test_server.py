"""The web demo through its own HTTP interface: the page, /health, /parse against the in-process parser, refusals
of bad uploads (with the server still answering), and the command line's one-line errors."""
from __future__ import annotations

import base64
import json
import threading
import types
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
from helpers.tiny_checkpoint import one_thread  # noqa: F401 (fixture)

from dml_csr.photos.server import _load, main, make_server
from dml_csr.data.synthetic import render_face

pytestmark = pytest.mark.usefixtures("one_thread")


def _serve(parser, **kwargs):
    server = make_server(parser, "127.0.0.1", 0, **kwargs)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return server, thread


@pytest.fixture(scope="module")
def url(parser):
    server, thread = _serve(parser, model_name="tiny")
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture(scope="module")
def face_jpg():
    img = render_face(3, size=(90, 70))[0]
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok
    return buf.tobytes()


def _request(url: str, data: bytes | None = None, ctype: str = "image/jpeg") -> tuple[int, dict | str]:
    req = urllib.request.Request(url, data=data, method="GET" if data is None else "POST")
    if data is not None:
        req.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            status, body, kind = r.status, r.read(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        status, body, kind = e.code, e.read(), e.headers.get("Content-Type", "")
    return status, (json.loads(body) if kind.startswith("application/json") else body.decode("utf-8"))


def _png(b64: str) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(base64.b64decode(b64), np.uint8), cv2.IMREAD_UNCHANGED)


def test_health_names_the_model_and_its_classes(url, parser):
    status, body = _request(url + "/health")
    assert status == 200
    assert body["ok"] is True and body["model"] == "tiny" and body["classes"] == parser.classes


def test_the_page_has_the_upload_form_and_posts_to_parse(url):
    status, page = _request(url + "/")
    assert status == 200 and page.lstrip().startswith("<!doctype html>")
    for part in ('type="file"', 'accept="image/*"', 'id="parse"', "<img", "<table", "fetch('parse'"):
        assert part in page


def test_parse_gives_the_in_process_labels_areas_and_overlay(url, parser, face_jpg):
    img = cv2.imdecode(np.frombuffer(face_jpg, np.uint8), cv2.IMREAD_COLOR)
    h, w = img.shape[:2]
    status, body = _request(url + "/parse", face_jpg)
    assert status == 200, body
    assert (body["width"], body["height"]) == (w, h) and "faces" not in body
    labels = parser(img, channel_order="BGR")
    counts = np.bincount(labels.ravel(), minlength=parser.num_classes)
    got = {c["name"]: c["pixels"] for c in body["classes"]}
    assert got == {parser.classes[i]: int(n) for i, n in enumerate(counts) if n > 0}
    assert sum(got.values()) == w * h
    pixels = [c["pixels"] for c in body["classes"]]
    assert pixels == sorted(pixels, reverse=True) and min(pixels) > 0
    assert sum(c["percent"] for c in body["classes"]) == pytest.approx(100.0, abs=0.01)
    overlay = _png(body["overlay_png_base64"])  # decoded BGR, like cv2.imread
    assert overlay.shape == (h, w, 3)
    assert np.array_equal(overlay, parser.overlay(img, labels, channel_order="BGR")[..., ::-1])
    assert np.array_equal(_png(body["prediction_png_base64"]), parser.colorize(labels)[..., ::-1])


def test_concurrent_requests_share_the_model_and_agree(url, face_jpg):
    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda _: _request(url + "/parse", face_jpg), range(3)))
    assert all(status == 200 for status, _ in answers)
    assert len({json.dumps(body["classes"]) for _, body in answers}) == 1


@pytest.mark.parametrize("data,ctype,expect", [
    (b"", "image/jpeg", "empty upload; expected the bytes of an image file"),
    (b"hello, not a picture", "text/plain", "the 20-byte upload is not an image OpenCV can decode; expected a JPEG"),
    (b"--x\r\n\r\nabc\r\n--x--", "multipart/form-data; boundary=x", "expected the image file's raw bytes"),
], ids=["empty", "not-an-image", "multipart"])
def test_a_bad_upload_gets_a_400_saying_what_was_expected(url, face_jpg, data, ctype, expect):
    status, body = _request(url + "/parse", data, ctype)
    assert status == 400 and set(body) == {"error"}
    assert expect in body["error"] and "\n" not in body["error"]
    status, body = _request(url + "/parse", face_jpg)  # the server still answers
    assert status == 200 and body["classes"]


def test_too_many_bytes_or_pixels_get_a_400_and_the_server_keeps_going(parser, face_jpg):
    server, thread = _serve(parser, max_bytes=len(face_jpg) - 1, max_pixels=1000)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        status, body = _request(base + "/parse", face_jpg)
        assert status == 400 and body["error"] == (f"upload is {len(face_jpg)} bytes; expected at most "
                                                   f"{len(face_jpg) - 1} ({(len(face_jpg) - 1) / 2**20:g} MiB)")
        server.max_bytes = 10 * len(face_jpg)
        status, body = _request(base + "/parse", face_jpg)
        assert status == 400 and body["error"] == "image is 70x90 (0.0 megapixels); expected at most 0.001 megapixels"
        assert _request(base + "/health")[0] == 200
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_a_huge_image_is_refused_from_its_header_before_decoding(url):
    ok, buf = cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))
    png = bytearray(buf.tobytes())
    png[16:24] = (60000).to_bytes(4, "big") + (50000).to_bytes(4, "big")  # width, height in IHDR
    status, body = _request(url + "/parse", bytes(png), "image/png")
    assert status == 400 and body["error"].startswith("image is 60000x50000 (3000.0 megapixels); expected at most 40")


def test_unknown_pages_are_a_json_404(url):
    status, body = _request(url + "/nope")
    assert status == 404 and "expected /, /health or POST /parse" in body["error"]
    status, body = _request(url + "/health", b"x")
    assert status == 404 and "expected POST /parse" in body["error"]


def test_detect_reports_the_faces_and_parses_the_crops(parser):
    img = render_face(5, size=(160, 160), face_scale=(0.35, 0.4))[0]
    ok, buf = cv2.imencode(".png", img)
    server, thread = _serve(parser, detect=True)
    try:
        status, body = _request(f"http://127.0.0.1:{server.server_address[1]}/parse", buf.tobytes(), "image/png")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert status == 200 and isinstance(body["faces"], list)
    boxes = [[round(float(v), 2) for v in getattr(f, "box", f)] for f in parser.detect_faces(img, "BGR")]
    assert [f["box"] for f in body["faces"]] == boxes
    labels = parser(img, channel_order="BGR", detect=True)
    assert {c["index"]: c["pixels"] for c in body["classes"]} == {
        i: int(n) for i, n in enumerate(np.bincount(labels.ravel())) if n > 0}


def test_main_on_a_port_in_use_prints_one_line(ckpt, url, capsys):
    port = url.rsplit(":", 1)[1]
    assert main(["--checkpoint", ckpt, "--device", "cpu", "--port", port]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot listen on 127.0.0.1:{port} (") and err.count("\n") == 1


def test_main_with_a_missing_checkpoint_prints_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["--checkpoint", "nonexistent.pt", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "nonexistent.pt" in err
    assert "Traceback" not in err


def test_names_go_through_the_hub(ckpt, monkeypatch):
    """--checkpoint NAME loads the registry's file (fetched and verified by the hub); a path is used as it is."""
    from dml_csr import hub

    seen = []
    monkeypatch.setitem(hub.WEIGHTS, "helen-resnet101", hub.Weights("helen-resnet101", "x.pt", "dml_csr", "test",
                                                                             url="http://127.0.0.1:9/x.pt", sha256="0" * 64))
    monkeypatch.setattr("dml_csr.checkpoint.resolve", lambda name, kind=None: seen.append((name, kind)) or ckpt)
    parser = _load(types.SimpleNamespace(checkpoint="helen-resnet101", device="cpu", detect=False, no_rotations=False))
    assert seen == [("helen-resnet101", "dml_csr")] and parser.num_classes == 11
    _load(types.SimpleNamespace(checkpoint=ckpt, device="cpu", detect=False, no_rotations=False))
    assert len(seen) == 1  # an existing file is used as it is


# ------------------------------------------------------------------------------------------------ hostile uploads
import os  # noqa: E402
import re  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

from helpers import ROOT, bombs  # noqa: E402
from helpers.tiny_checkpoint import subprocess_env  # noqa: E402


@pytest.mark.parametrize("fmt", bombs.FORMATS)
def test_a_bomb_of_any_format_is_a_400_from_its_header(url, fmt):
    side = bombs.WEBP_SIDE if fmt == "webp" else bombs.SIDE
    status, body = _request(url + "/parse", bombs.bomb(fmt), "application/octet-stream")
    assert status == 400 and body == {"error": f"image is {side}x{side} ({side * side / 1e6:.1f} megapixels); "
                                                "expected at most 40 megapixels"}


def test_a_tiny_or_truncated_image_is_a_400(url, face_jpg):
    ok, dot = cv2.imencode(".png", np.zeros((1, 1, 3), np.uint8))
    status, body = _request(url + "/parse", dot.tobytes(), "image/png")
    assert status == 400 and body["error"] == "image is 1x1 pixels; expected at least 2x2"
    status, body = _request(url + "/parse", face_jpg[: len(face_jpg) // 2])
    assert status == 400 and body["error"] == (f"the {len(face_jpg) // 2}-byte upload is truncated (no JPEG "
                                               "end-of-image marker); expected a whole image file")


def test_no_server_path_in_the_answers(parser, tmp_path):
    server, thread = _serve(parser, model_name=str(tmp_path / "runs" / "demo" / "best.pt"))
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        status, body = _request(base + "/health")
        assert status == 200 and body["model"] == "best.pt" and str(tmp_path) not in json.dumps(body)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.mark.parametrize("flag,value,expected", [
    ("--port", "99999", "--port = '99999'; expected a whole number >= 0 and <= 65535"),
    ("--max-upload-mb", "nan", "--max-upload-mb = 'nan'; expected a finite number > 0 and <= 4096"),
    ("--max-megapixels", "-1", "--max-megapixels = '-1'; expected a finite number > 0 and <= 10000"),
    ("--timeout", "inf", "--timeout = 'inf'; expected a finite number > 0 and <= 86400"),
    ("--decodes", "0", "--decodes = '0'; expected a whole number >= 1 and <= 64"),
])
def test_the_flags_are_checked_in_one_line(ckpt, capsys, flag, value, expected):
    assert main(["--checkpoint", ckpt, "--device", "cpu", flag, value]) == 2
    assert capsys.readouterr().err == f"error: {expected}\n"


def _post(port: int, data: bytes) -> tuple[int, dict]:
    return _request(f"http://127.0.0.1:{port}/parse", data, "application/octet-stream")


def test_the_app_under_bombs_stalls_and_aborts(ckpt):
    """The demo as started from the command line: four bombs of different formats posted at once are four 400s and
    the server's peak resident memory (VmHWM, read from /proc) stays under 1 GB; an upload that stalls is dropped
    after --timeout with one log line, as is one whose client goes away mid-body; /health names no server path."""
    proc = subprocess.Popen([sys.executable, "-m", "dml_csr.app", "--checkpoint", ckpt, "--device", "cpu", "--port",
                             "0", "--timeout", "1"], cwd=ROOT, env=dict(subprocess_env(), PYTHONPATH=ROOT),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = ""
        while "serving" not in line:
            line = proc.stdout.readline()
            assert line, "the server ended before serving"
        port = int(re.search(r"http://127\.0\.0\.1:(\d+)/", line).group(1))
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda f: _post(port, bombs.bomb(f)), ("png", "webp", "tif", "gif")))
        assert [status for status, _ in answers] == [400] * 4
        assert all(body["error"].startswith("image is ") and "\n" not in body["error"] for _, body in answers)
        with open(f"/proc/{proc.pid}/status") as f:
            peak_kb = next(int(x.split()[1]) for x in f if x.startswith("VmHWM:"))
        assert peak_kb < 1 << 20, f"peak resident memory {peak_kb / 1024:.0f} MiB"
        stalled = socket.create_connection(("127.0.0.1", port))
        stalled.sendall(b"POST /parse HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + b"x" * 100)
        gone = socket.create_connection(("127.0.0.1", port))
        gone.sendall(b"POST /parse HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + b"x" * 200)
        gone.close()
        assert stalled.recv(100) == b""  # closed by the server after its timeout, unanswered
        stalled.close()
        status, body = _request(f"http://127.0.0.1:{port}/health")
        assert status == 200 and body["model"] == os.path.basename(ckpt) and os.path.dirname(ckpt) not in str(body)
    finally:
        proc.terminate()
        log = proc.communicate(timeout=30)[0]
    aborted = [x for x in log.splitlines() if "POST /parse aborted" in x]
    assert len(aborted) == 2, log
    assert any("no data for 1 s while reading a 5000-byte body" in x for x in aborted)
    assert any("sent 200 of the 5000 bytes it announced" in x for x in aborted)
    assert "Traceback" not in log
