"""A small web demo: upload a photo in a browser, see the parsing overlay and the area of every class.

Usage::

    python -m dml_csr.app --checkpoint runs/helen/best.pt            # then open http://127.0.0.1:7860/
    python -m dml_csr.app --checkpoint NAME --device cuda --detect --host 0.0.0.0 --port 8080

    from dml_csr import FaceParser
    from dml_csr.photos.server import make_server
    server = make_server(FaceParser.from_checkpoint("best.pt"), "127.0.0.1", 0)   # port 0: any free port
    server.serve_forever()                       # server.server_address[1] is the port it got

Endpoints (standard-library HTTP server, one model shared by the request threads behind a lock):

- ``GET /``: the page (a file input, a Parse button, the photo, overlay and prediction side by side, a table of
  class areas); its script posts the file to ``/parse``.
- ``POST /parse``: the body is the image file's bytes (``curl --data-binary @face.jpg URL/parse``); the answer is
  JSON ``{"width", "height", "faces" (with --detect: [{"box": [x, y, w, h], ...}]), "classes": [{"name", "index",
  "pixels", "percent", "color"}, ...] (present classes, largest first), "overlay_png_base64",
  "prediction_png_base64", "seconds"}``.
  An empty, undecodable, truncated, too large, too small or too many-pixel upload gets HTTP 400 and
  ``{"error": "<one line>"}``; the size is read from the header before anything is decoded
  (:func:`dml_csr.data.imageio.decode_image`), and at most ``decodes`` uploads are decoded at a time.
- ``GET /health``: ``{"ok": true, "model", "classes", ...}``; the model is named by its registry name or file name,
  never by its path on the server.

A client that stops sending is dropped after ``timeout`` seconds; each aborted request is one line in the log.
"""
from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional

import cv2
import numpy as np

from .._typed import number
from ..data.imageio import FORMATS, ImageError, ImageLimits, decode_image

__all__ = ["make_server", "DemoServer", "parse_upload", "main", "UploadError",
           "MAX_UPLOAD_BYTES", "MAX_PIXELS", "MIN_SIDE", "TIMEOUT_S", "DECODES", "PAGE"]

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 20 * 2**20  # 20 MiB
MAX_PIXELS = 40_000_000  # 40 megapixels
MIN_SIDE = 2  # the smallest image the crop takes (2 x 2)
TIMEOUT_S = 30.0  # a client silent this long is dropped
DECODES = 2  # uploads decoded at a time
_FORMATS = FORMATS


class UploadError(ValueError):
    """An upload the demo refuses; the message says what was expected (sent back with HTTP 400)."""


def _too_many_bytes(n: int, max_bytes: int) -> str:
    return f"upload is {n} bytes; expected at most {max_bytes} ({max_bytes / 2**20:g} MiB)"


def parse_upload(data: bytes, max_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode uploaded file bytes into an (H, W, 3) uint8 BGR image; raises :class:`UploadError` saying what was
    expected when the bytes are empty, too many, not an image, cut short, an image with more than ``max_pixels`` (read
    from the header, before decoding) or smaller than 2 x 2."""
    if not data:
        raise UploadError(f"empty upload; expected the bytes of an image file ({_FORMATS}) as the request body")
    if len(data) > max_bytes:
        raise UploadError(_too_many_bytes(len(data), max_bytes))
    try:
        img = decode_image(data, cv2.IMREAD_COLOR, ImageLimits(int(max_bytes), int(max_pixels)))
    except ImageError as e:
        if e.kind == "pixels":
            raise UploadError(f"image {e.reason}") from None
        if e.kind == "truncated":
            raise UploadError(f"the {len(data)}-byte upload {e.reason}; expected a whole image file") from None
        raise UploadError(f"the {len(data)}-byte upload is not an image OpenCV can decode; expected {_FORMATS}"
                          ) from None
    if min(img.shape[:2]) < MIN_SIDE:
        raise UploadError(f"image is {img.shape[1]}x{img.shape[0]} pixels; expected at least {MIN_SIDE}x{MIN_SIDE}")
    return img


def _png_base64(rgb: np.ndarray) -> str:
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise RuntimeError(f"could not encode a {rgb.shape} image as PNG")
    return base64.b64encode(buf.tobytes()).decode("ascii")


class DemoServer(ThreadingHTTPServer):
    """The HTTP server with the model and the limits its request handlers use."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], parser: Any, *, detect: bool = False,
                 model_name: Optional[str] = None, max_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_PIXELS,
                 timeout: float = TIMEOUT_S, decodes: int = DECODES):
        super().__init__(address, _Handler)
        self.parser = parser
        self.detect = bool(detect)
        name = model_name or str(parser.meta.get("model_name", "model"))
        self.model_name = os.path.basename(name.rstrip("/" + os.sep)) or name  # a file's name, never its path
        self.max_bytes = int(max_bytes)
        self.max_pixels = int(max_pixels)
        self.timeout_s = float(timeout)
        self.lock = threading.Lock()  # one model, many request threads: one forward pass at a time
        self.decoding = threading.BoundedSemaphore(int(decodes))  # decoded images in memory at a time

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A request that failed outside the handler's answers (the client went away mid-answer, ...): one line."""
        e = sys.exc_info()[1]
        log.warning("%s: request aborted: %s", client_address[0], f"{type(e).__name__}: {e}".splitlines()[0])

    def health(self) -> dict:
        return {"ok": True, "model": self.model_name, "dataset": self.parser.meta.get("dataset"),
                "classes": list(self.parser.classes), "detect": self.detect, "max_upload_bytes": self.max_bytes,
                "max_pixels": self.max_pixels}

    def parse(self, img: np.ndarray) -> dict:
        """Parse a BGR image; the JSON answer of ``POST /parse``."""
        start = time.perf_counter()
        with self.lock:
            result = self.parser.parse(img, channel_order="BGR", detect=self.detect)
        labels, faces = result.labels, result.faces
        h, w = labels.shape
        counts = np.bincount(labels.ravel(), minlength=self.parser.num_classes)
        names = list(self.parser.classes)
        classes = [{"name": names[i] if i < len(names) else f"label_{i}", "index": int(i), "pixels": int(counts[i]),
                    "percent": round(100.0 * counts[i] / (h * w), 3), "color": self._colour(i)}
                   for i in np.argsort(-counts, kind="stable") if counts[i] > 0]
        out = {"width": int(w), "height": int(h), "classes": classes,
               "overlay_png_base64": _png_base64(self.parser.overlay(img, labels, channel_order="BGR")),
               "prediction_png_base64": _png_base64(self.parser.colorize(labels))}
        if faces is not None:
            out["faces"] = [f.to_dict() for f in faces]  # box (x, y, w, h), score, landmarks when known
        out["seconds"] = round(time.perf_counter() - start, 3)
        return out

    def _colour(self, index: int) -> str:
        rgb = self.parser.colorize(np.array([[index]], np.uint8))[0, 0]
        return "#%02x%02x%02x" % tuple(int(v) for v in rgb)


class _Handler(BaseHTTPRequestHandler):
    server: DemoServer
    server_version = "dml_csr-demo"

    def do_GET(self) -> None:  # noqa: N802 (the http.server naming)
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, PAGE.encode("utf-8"), "text/html; charset=utf-8")
        elif path == "/favicon.ico":
            self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
        elif path == "/health":
            self._json(HTTPStatus.OK, self.server.health())
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no page '{path}'; expected /, /health or POST /parse"})

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0]
        if path != "/parse":
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no endpoint POST '{path}'; expected POST /parse"})
            return
        try:
            body = self._read_body()
            with self.server.decoding:
                img = parse_upload(body, self.server.max_bytes, self.server.max_pixels)
        except UploadError as e:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(e)})
            return
        except _Aborted as e:
            self.close_connection = True
            log.warning("%s: POST /parse aborted: %s", self.address_string(), e)
            return
        try:
            answer = self.server.parse(img)
        except Exception as e:  # the server keeps running; the reason goes to the client and the log, one line
            msg = f"parsing a {img.shape[1]}x{img.shape[0]} image failed: {type(e).__name__}: {e}".splitlines()[0]
            log.error("%s", msg)
            self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": msg})
            return
        self._json(HTTPStatus.OK, answer)

    def _read_body(self) -> bytes:
        ctype = self.headers.get("Content-Type", "")
        if ctype.startswith("multipart/"):
            self.close_connection = True
            raise UploadError(f"got a {ctype.split(';')[0]} body; expected the image file's raw bytes as the body "
                              "(curl --data-binary @face.jpg)")
        raw = self.headers.get("Content-Length")
        try:
            length = int(raw) if raw is not None else 0
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            raise UploadError(f"Content-Length is '{raw}'; expected the body's size in bytes")
        if length > self.server.max_bytes:
            self.close_connection = True  # the body stays unread
            raise UploadError(_too_many_bytes(length, self.server.max_bytes))
        try:
            body = self.rfile.read(length) if length else b""
        except (TimeoutError, ConnectionError) as e:
            raise _Aborted(f"no data for {self.server.timeout_s:g} s while reading a {length}-byte body"
                           if isinstance(e, TimeoutError) else f"connection lost ({type(e).__name__})") from None
        if len(body) < length:
            raise _Aborted(f"the client sent {len(body)} of the {length} bytes it announced and closed the connection")
        return body

    def setup(self) -> None:
        self.timeout = self.server.timeout_s  # a socket read waiting longer raises (StreamRequestHandler applies it)
        super().setup()

    def _json(self, status: HTTPStatus, obj: dict) -> None:
        self._send(status, json.dumps(obj).encode("utf-8"), "application/json")

    def _send(self, status: HTTPStatus, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        log.info('%s "%s" %s', self.address_string(), self.requestline, getattr(code, "value", code))

    def log_error(self, format: str, *args: Any) -> None:  # noqa: A002 (the http.server signature)
        """http.server's own errors (a malformed request line, a read timing out before a request): one line."""
        log.info("%s: %s", self.address_string(), (format % args).splitlines()[0] if args else format)


class _Aborted(Exception):
    """A request whose client stopped sending or went away: logged, not answered."""


def make_server(parser: Any, host: str = "127.0.0.1", port: int = 7860, *, detect: bool = False,
                model_name: Optional[str] = None, max_bytes: int = MAX_UPLOAD_BYTES,
                max_pixels: int = MAX_PIXELS, timeout: float = TIMEOUT_S, decodes: int = DECODES) -> DemoServer:
    """A bound, not yet serving :class:`DemoServer` for ``parser`` (a :class:`dml_csr.photos.parser.FaceParser`); call its
    ``serve_forever()`` (in a thread for tests) and ``shutdown()``/``server_close()``. Port 0 picks a free port."""
    return DemoServer((host, int(port)), parser, detect=detect, model_name=model_name, max_bytes=max_bytes,
                      max_pixels=max_pixels, timeout=timeout, decodes=decodes)


def _args(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m dml_csr.app", description="Face-parsing web demo")
    p.add_argument("--checkpoint", required=True, metavar="NAME_OR_PATH",
                   help="our checkpoint or an authors' file (or a model name known to dml_csr.hub)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", default="7860", help="port to listen on (0: any free port)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--detect", action="store_true", help="find faces first and parse a crop around each")
    p.add_argument("--no-rotations", action="store_true", help="with --detect: take faces as upright only (by "
                   "default a photo without a confident upright face is searched turned by 90, 180, 270 degrees)")
    p.add_argument("--max-upload-mb", default=f"{MAX_UPLOAD_BYTES / 2**20:g}", help="largest upload, MiB")
    p.add_argument("--max-megapixels", default=f"{MAX_PIXELS / 1e6:g}", help="largest image, megapixels")
    p.add_argument("--timeout", default=f"{TIMEOUT_S:g}", help="seconds a client may stay silent before it is dropped")
    p.add_argument("--decodes", default=str(DECODES), help="uploads decoded at a time (each holds its pixels)")
    return p.parse_args(argv)


def _check_flags(args: argparse.Namespace) -> None:
    """The numbers of the command line, checked finite and in range (a ValueError of one line names the flag)."""
    args.port = number(args.port, "--port", 0, 65535, integer=True)
    args.max_upload_mb = number(args.max_upload_mb, "--max-upload-mb", 0, 4096, lo_open=True)
    args.max_megapixels = number(args.max_megapixels, "--max-megapixels", 0, 10000, lo_open=True)
    args.timeout = number(args.timeout, "--timeout", 0, 86400, lo_open=True)
    args.decodes = number(args.decodes, "--decodes", 1, 64, integer=True)


def _load(args: argparse.Namespace):
    from .parser import FaceParser

    # a registry name is fetched there
    parser = FaceParser.from_checkpoint(args.checkpoint, device=args.device, rotations=not args.no_rotations)
    if args.detect:
        parser.detect_faces(np.zeros((32, 32, 3), np.uint8), "BGR")  # no detector (OpenCV 5): fail now, not later
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    """The command line; returns the exit status (2 with a one-line error on stderr when it cannot start)."""
    args = _args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    try:
        _check_flags(args)
        parser = _load(args)
    except (OSError, KeyError, ValueError, LookupError, RuntimeError, ImportError) as e:  # CheckpointError too
        msg = str(e.args[0] if isinstance(e, KeyError) and e.args else e).strip().splitlines()
        print(f"error: {msg[0] if msg else type(e).__name__}", file=sys.stderr)
        return 2
    try:
        server = make_server(parser, args.host, args.port, detect=args.detect, model_name=args.checkpoint,
                             max_bytes=max(1, int(args.max_upload_mb * 2**20)),
                             max_pixels=max(1, int(args.max_megapixels * 1e6)), timeout=args.timeout,
                             decodes=args.decodes)
    except OSError as e:
        print(f"error: cannot listen on {args.host}:{args.port} ({e.strerror or e}); expected a free port on an "
              "address of this machine (--port 0 picks a free one)", file=sys.stderr)
        return 2
    host, port = server.server_address[:2]
    log.info("serving %r (%d classes, %s) on http://%s:%d/ ; Ctrl+C stops", args.checkpoint, parser.num_classes,
             parser.device, host, port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Face parsing demo</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em;margin:0 0 .2em} #model{color:#666;margin-bottom:1em} #status.err{color:#b00020}
#controls{display:flex;gap:.8em;align-items:center;margin-bottom:1em} .views{display:flex;gap:1em;flex-wrap:wrap}
figure{margin:0} figcaption{color:#666;font-size:.9em} td.n{text-align:right;font-variant-numeric:tabular-nums}
.views img{max-width:360px;max-height:360px;border:1px solid #ccc;background:#f4f4f4}
table{border-collapse:collapse;margin-top:1em} td,th{padding:.25em .8em;border-bottom:1px solid #ddd}
.sw{display:inline-block;width:.9em;height:.9em;border:1px solid #888;vertical-align:middle;margin-right:.4em}
</style></head><body>
<h1>Face parsing</h1><div id="model">loading model information&hellip;</div>
<div id="controls"><input type="file" id="file" accept="image/*">
<button id="parse" disabled>Parse</button><span id="status"></span></div>
<div class="views">
<figure><img id="photo" alt=""><figcaption>photo</figcaption></figure>
<figure><img id="overlay" alt=""><figcaption>overlay</figcaption></figure>
<figure><img id="prediction" alt=""><figcaption>prediction</figcaption></figure></div>
<table id="areas" hidden><thead><tr><th>class</th><th>pixels</th><th>% of image</th></tr></thead>
<tbody></tbody></table>
<script>
const $ = id => document.getElementById(id);
function status(text, bad) { $('status').textContent = text; $('status').className = bad ? 'err' : ''; }
fetch('health').then(r => r.json()).then(h => {
  $('model').textContent = `model ${h.model}: ${h.classes.length} classes` + (h.detect ? ', face detection on' : '');
}).catch(e => { $('model').textContent = 'server not answering: ' + e.message; });
$('file').onchange = () => {
  const f = $('file').files[0];
  $('parse').disabled = !f;
  if (f) { $('photo').src = URL.createObjectURL(f); status(''); }
};
function cell(row, text, cls) {
  const td = row.insertCell(); td.textContent = text; if (cls) td.className = cls; return td;
}
$('parse').onclick = async () => {
  const f = $('file').files[0];
  if (!f) return;
  $('parse').disabled = true; status('parsing\\u2026');
  try {
    const r = await fetch('parse', {method: 'POST', body: f,
                                    headers: {'Content-Type': f.type || 'application/octet-stream'}});
    const j = await r.json().catch(() => ({error: r.statusText}));
    if (!r.ok) throw new Error(j.error || r.statusText);
    $('overlay').src = 'data:image/png;base64,' + j.overlay_png_base64;
    $('prediction').src = 'data:image/png;base64,' + j.prediction_png_base64;
    const body = $('areas').tBodies[0];
    body.replaceChildren();
    for (const c of j.classes) {
      const row = body.insertRow();
      const sw = document.createElement('span'); sw.className = 'sw'; sw.style.background = c.color;
      cell(row, c.name).prepend(sw);
      cell(row, c.pixels.toLocaleString(), 'n'); cell(row, c.percent.toFixed(2), 'n');
    }
    $('areas').hidden = false;
    status(`${j.width}\\u00d7${j.height} px` + (j.faces ? `, ${j.faces.length} face(s)` : '') + `, ${j.seconds} s`);
  } catch (e) { status('error: ' + e.message, true); }
  finally { $('parse').disabled = false; }
};
</script></body></html>
"""
