"""Procedural synthetic faces with exact labels, for demos, tests and smoke runs.

Each face is a set of parts described in a canonical frame (face centre at the origin, x to the image's right,
y down, face half-width 1) and painted back to front with a similarity transform (scale, rotation, translation) and
a small yaw that slides the inner parts sideways. The label map is painted with the same polygons, so labels are
exact. "Left" parts are the *subject's* left: in a frontal picture they lie on the image's right (x > 0).

Two class orders are available (see :mod:`dml_csr.data.labels`): ``synthetic`` (Helen/LaPa 11 classes) and
``synthetic19`` (CelebAMask-HQ 19 classes). Parts a class order has no class for are painted into the image but
leave the label unchanged (glasses over skin stay skin in the 11-class order, as in Helen), or are background.

``write_dataset`` writes the prepared on-disk layout read by :class:`dml_csr.data.dataset.FaceParsingDataset`::

    <root>/{split}_list.txt, <root>/{split}/images/NAME.jpg, labels/NAME.png, landmarks/NAME.txt, label_names.txt
"""
from __future__ import annotations

import os
import zlib
from dataclasses import dataclass

import cv2
import numpy as np

from ..files import write_bytes, write_image, write_json
from ..progress import progress as progress_display
from .labels import get_spec

__all__ = ["SyntheticFace", "render_face", "write_dataset", "KEEP"]

KEEP = -1  # label value meaning "paint the image, leave the label as it is"

# part -> class index in each order; None = background, KEEP = leave label unchanged
_PARTS = {
    "synthetic": {"hair": 10, "skin": 1, "l_ear": 1, "r_ear": 1, "neck": 0, "cloth": 0, "necklace": 0, "earring": KEEP,
                  "hat": 0, "nose": 6, "l_brow": 2, "r_brow": 3, "l_eye": 4, "r_eye": 5, "glasses": KEEP,
                  "u_lip": 7, "mouth": 8, "l_lip": 9},
    "synthetic19": {"hair": 13, "skin": 1, "l_ear": 8, "r_ear": 9, "neck": 17, "cloth": 18, "necklace": 16, "earring": 15,
                    "hat": 14, "nose": 2, "l_brow": 6, "r_brow": 7, "l_eye": 4, "r_eye": 5, "glasses": 3,
                    "u_lip": 11, "mouth": 10, "l_lip": 12},
}


def _ellipse(cx: float, cy: float, ax: float, ay: float, angle: float = 0.0, t0: float = 0.0,
             t1: float = 2 * np.pi, n: int = 48) -> np.ndarray:
    t = np.linspace(t0, t1, n)
    x, y = ax * np.cos(t), ay * np.sin(t)
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], 1)


@dataclass
class SyntheticFace:
    """Random parameters of one face (all drawn from one ``np.random.Generator``)."""
    cx: float
    cy: float
    scale: float  # pixels per canonical unit (face half-width)
    angle: float  # radians, in-plane rotation
    yaw: float  # [-1, 1]: inner parts slide towards the image side the face turns to
    skin: tuple
    hair: tuple
    lips: tuple
    brows: tuple
    iris: tuple
    cloth: tuple
    hair_len: float
    mouth_open: float
    glasses: bool
    hat: bool
    necklace: bool
    earrings: bool

    @classmethod
    def sample(cls, rng: np.random.Generator, cx: float, cy: float, scale: float) -> "SyntheticFace":
        tone = rng.uniform(0.25, 1.0)
        skin = tuple(float(v) for v in np.array([150, 180, 230]) * tone + rng.uniform(-15, 15, 3))
        def col():
            return tuple(float(v) for v in rng.uniform(0, 255, 3))
        hair = tuple(float(v) for v in rng.uniform(10, 120, 3) * rng.choice([0.5, 1.0, 2.0]))
        lips = (rng.uniform(40, 110), rng.uniform(40, 90), rng.uniform(140, 230))  # BGR reds
        return cls(cx=cx, cy=cy, scale=scale, angle=rng.uniform(-0.5, 0.5), yaw=rng.uniform(-0.6, 0.6),
                   skin=skin, hair=hair, lips=lips, brows=tuple(float(v) for v in rng.uniform(10, 70, 3)),
                   iris=col(), cloth=col(), hair_len=rng.uniform(0.0, 1.0), mouth_open=rng.uniform(0.02, 0.12),
                   glasses=bool(rng.random() < 0.2), hat=bool(rng.random() < 0.15),
                   necklace=bool(rng.random() < 0.2), earrings=bool(rng.random() < 0.25))

    def to_pixels(self, pts: np.ndarray) -> np.ndarray:
        c, s = np.cos(self.angle), np.sin(self.angle)
        x, y = pts[:, 0], pts[:, 1]
        return np.stack([self.cx + self.scale * (c * x - s * y), self.cy + self.scale * (s * x + c * y)], 1)

    def parts(self) -> list[tuple[str, np.ndarray, tuple]]:
        """(part, canonical polygon, BGR colour) back to front."""
        d = 0.3 * self.yaw  # inner parts slide sideways with the yaw
        near = 1.0 + 0.25 * self.yaw  # yaw also resizes the two halves of the face
        far = 1.0 - 0.25 * self.yaw
        darker = tuple(v * 0.8 for v in self.skin)
        out = [
            ("cloth", np.array([[-2.2, 2.6], [2.2, 2.6], [1.7, 1.75], [-1.7, 1.75]]), self.cloth),
            ("neck", np.array([[-0.45, 0.9], [0.45, 0.9], [0.55, 1.95], [-0.55, 1.95]]), darker),
            ("hair", _ellipse(0, -0.25, 1.18, 1.15 + 0.6 * self.hair_len, t0=np.pi, t1=2 * np.pi).tolist()
             + [[1.18, 0.9 * self.hair_len], [-1.18, 0.9 * self.hair_len]], self.hair),
            ("l_ear", _ellipse(1.0, 0.0, 0.17, 0.3), darker),
            ("r_ear", _ellipse(-1.0, 0.0, 0.17, 0.3), darker),
            ("skin", _ellipse(0, 0.05, 1.0, 1.3), self.skin),
        ]
        if self.necklace:
            out.append(("necklace", _ellipse(0, 1.55, 0.6, 0.12, t0=0, t1=np.pi).tolist()
                        + _ellipse(0, 1.55, 0.5, 0.05, t0=np.pi, t1=0).tolist(), (40, 200, 230)))
        if self.earrings:
            out += [("earring", _ellipse(1.02, 0.38, 0.06, 0.06), (0, 215, 255)),
                    ("earring", _ellipse(-1.02, 0.38, 0.06, 0.06), (0, 215, 255))]
        out += [
            ("hair", _ellipse(0, -0.95, 0.95, 0.33 + 0.1 * self.hair_len, t0=np.pi, t1=2 * np.pi), self.hair),
            ("nose", np.array([[d, -0.2], [d + 0.17, 0.38], [d, 0.45], [d - 0.17, 0.38]]),
             tuple(v * 0.72 for v in self.skin)),
            ("l_brow", _ellipse(0.4 * near + d, -0.45, 0.27 * near, 0.07, angle=0.1), self.brows),
            ("r_brow", _ellipse(-0.4 * far + d, -0.45, 0.27 * far, 0.07, angle=-0.1), self.brows),
            ("l_eye", _ellipse(0.4 * near + d, -0.17, 0.2 * near, 0.09), (235, 235, 235)),
            ("r_eye", _ellipse(-0.4 * far + d, -0.17, 0.2 * far, 0.09), (235, 235, 235)),
        ]
        if self.glasses:
            for ex, k in ((0.4 * near + d, near), (-0.4 * far + d, far)):
                ring = _ellipse(ex, -0.17, 0.32 * k, 0.22).tolist() + _ellipse(ex, -0.17, 0.27 * k, 0.17)[::-1].tolist()
                out.append(("glasses", np.array(ring), (30, 30, 30)))
        m = self.mouth_open
        out += [
            ("u_lip", _ellipse(d, 0.75, 0.38, 0.13 + m, t0=np.pi, t1=2 * np.pi), self.lips),
            ("l_lip", _ellipse(d, 0.75, 0.36, 0.15 + m, t0=0, t1=np.pi), tuple(v * 0.85 for v in self.lips)),
            ("mouth", _ellipse(d, 0.75, 0.3, m), (40, 30, 60)),
        ]
        if self.hat:
            out.append(("hat", np.array([[-1.35, -0.85], [1.35, -0.85], [0.9, -1.95], [-0.9, -1.95]]), self.cloth))
        return [(name, np.asarray(poly, np.float64), colour) for name, poly, colour in out]

    def keypoints(self) -> np.ndarray:
        """Five landmarks in pixels: subject's left eye, right eye, nose tip, left and right mouth corner."""
        d = 0.3 * self.yaw
        near, far = 1.0 + 0.25 * self.yaw, 1.0 - 0.25 * self.yaw
        pts = np.array([[0.4 * near + d, -0.17], [-0.4 * far + d, -0.17], [d, 0.42], [d + 0.38, 0.75],
                        [d - 0.38, 0.75]])
        return self.to_pixels(pts)


def _fill(img: np.ndarray, label: np.ndarray, poly_px: np.ndarray, colour: tuple, cls: int | None,
          shade: np.ndarray | None = None) -> None:
    pts = [np.round(poly_px * 16).astype(np.int32)]
    cv2.fillPoly(img, pts, colour, lineType=cv2.LINE_AA, shift=4)
    if cls is not None and cls != KEEP:
        cv2.fillPoly(label, pts, int(cls), lineType=cv2.LINE_8, shift=4)


def render_face(seed: int, size: tuple[int, int] = (256, 256), order: str = "synthetic",
                second_face_prob: float = 0.3, face_scale: tuple[float, float] = (0.2, 0.27)
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one synthetic picture.

    Args:
        seed: the picture is a pure function of (seed, size, order, second_face_prob).
        size: (height, width) in pixels.
        order: ``"synthetic"`` (11 classes) or ``"synthetic19"`` (19 classes).
        second_face_prob: chance of a second, partly visible face behind the main one.
        face_scale: range of the main face's half-width as a fraction of the image's shorter side; (0.2, 0.27)
            shows head and shoulders, about (0.35, 0.42) is a tight face crop like Helen's or LFW-PL's.

    Returns:
        image (H, W, 3) uint8 BGR, label (H, W) uint8 class indices, keypoints (5, 2) float (x, y) of the main face.
    """
    if order not in _PARTS:
        raise KeyError(f"unknown synthetic class order '{order}'; expected one of {', '.join(_PARTS)}")
    table = _PARTS[order]
    rng = np.random.default_rng(seed)
    h, w = size
    # background: a colour gradient plus clutter
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    t = (xx / w * rng.uniform(-1, 1) + yy / h * rng.uniform(-1, 1))[..., None]
    img = np.clip(c0 + (c1 - c0) * (t - t.min()) / (np.ptp(t) + 1e-6), 0, 255).astype(np.uint8)
    for _ in range(rng.integers(3, 9)):
        colour = tuple(float(v) for v in rng.uniform(0, 255, 3))
        if rng.random() < 0.5:
            p0 = rng.uniform(0, 1, 2) * (w, h)
            p1 = p0 + rng.uniform(-0.4, 0.4, 2) * (w, h)
            cv2.rectangle(img, tuple(int(v) for v in p0), tuple(int(v) for v in p1), colour, -1)
        else:
            cv2.circle(img, (int(rng.uniform(0, w)), int(rng.uniform(0, h))), int(rng.uniform(3, 0.15 * w)), colour, -1)
    label = np.zeros((h, w), np.uint8)

    side = min(h, w)
    faces = []
    if rng.random() < second_face_prob:
        sx = rng.choice([0.1, 0.9]) * w
        faces.append(SyntheticFace.sample(rng, sx, rng.uniform(0.2, 0.8) * h, side * rng.uniform(0.12, 0.18)))
    main = SyntheticFace.sample(rng, w / 2 + rng.uniform(-0.08, 0.08) * w, h / 2 + rng.uniform(-0.06, 0.06) * h,
                                side * rng.uniform(*face_scale))
    faces.append(main)
    for face in faces:
        for part, poly, colour in face.parts():
            _fill(img, label, face.to_pixels(poly), colour, table[part] if table[part] is not None else 0)
        # irises: image only, inside the eyes
        for ex in (0.4 * (1 + 0.25 * face.yaw), -0.4 * (1 - 0.25 * face.yaw)):
            iris = _ellipse(ex + 0.3 * face.yaw, -0.17, 0.07, 0.07)
            cv2.fillPoly(img, [np.round(face.to_pixels(iris) * 16).astype(np.int32)], face.iris, cv2.LINE_AA, 4)

    # lighting, blur and sensor noise: image only
    gx, gy = rng.uniform(-0.5, 0.5, 2)
    light = 1.0 + gx * (xx / w - 0.5) + gy * (yy / h - 0.5)
    out = img.astype(np.float32) * light[..., None] * rng.uniform(0.8, 1.2)
    if rng.random() < 0.5:
        out = cv2.GaussianBlur(out, (3, 3), rng.uniform(0.3, 1.0))
    out += rng.normal(0, rng.uniform(2, 8), out.shape).astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8), label, main.keypoints()


JPEG_95 = [cv2.IMWRITE_JPEG_QUALITY, 95]


def _sample_seed(seed: int, split: str, index: int) -> int:
    return (seed * 1_000_003 + zlib.crc32(split.encode()) * 7919 + index) % (2 ** 63)


def write_dataset(root: str, splits: dict[str, int], seed: int = 0, size: tuple[int, int] = (256, 256),
                  order: str = "synthetic", second_face_prob: float = 0.3, progress: bool = False,
                  face_scale: tuple[float, float] = (0.2, 0.27)) -> dict:
    """Write synthetic faces in the prepared layout. Existing complete samples are kept (resumable).

    Args:
        root: output folder.
        splits: samples per split, e.g. ``{"train": 400, "val": 50, "test": 50}``.
        seed: dataset seed; sample ``i`` of split ``s`` depends only on (seed, s, i).
    Returns:
        the ``info.json`` contents (counts per split, pixel histogram per class).
    """
    spec = get_spec(order)
    os.makedirs(root, exist_ok=True)
    hists = {s: np.zeros(spec.num_classes, np.int64) for s in splits}
    iterator = [(s, i) for s, n in splits.items() for i in range(n)]
    bar = progress_display(len(iterator), f"synthetic faces -> {root}", "img", enabled=progress)
    lists: dict[str, list[str]] = {s: [] for s in splits}
    for split, i in iterator:
        name = f"{split}_{i:05d}"
        d = os.path.join(root, split)
        paths = {k: os.path.join(d, k, f"{name}.{ext}") for k, ext in
                 (("images", "jpg"), ("labels", "png"), ("landmarks", "txt"))}
        if all(os.path.exists(p) for p in paths.values()):
            label = cv2.imread(paths["labels"], cv2.IMREAD_UNCHANGED)
        else:
            for p in paths.values():
                os.makedirs(os.path.dirname(p), exist_ok=True)
            image, label, kps = render_face(_sample_seed(seed, split, i), size, order, second_face_prob, face_scale)
            write_image(paths["images"], image, JPEG_95)
            write_image(paths["labels"], label)
            write_bytes(paths["landmarks"], (f"{len(kps)}\n" + "".join(f"{x:.2f} {y:.2f}\n" for x, y in kps)).encode())
        hists[split] += np.bincount(label.ravel(), minlength=spec.num_classes)[: spec.num_classes]
        lists[split].append(f"images/{name}.jpg labels/{name}.png")
        bar.update()
    for split, lines in lists.items():
        write_bytes(os.path.join(root, f"{split}_list.txt"), ("\n".join(lines) + "\n").encode())
    write_bytes(os.path.join(root, "label_names.txt"), ("\n".join(["bg"] + list(spec.classes[1:])) + "\n").encode())
    info = {"dataset": order, "seed": seed, "size": list(size), "face_scale": list(face_scale),
            "counts": {s: len(v) for s, v in lists.items()},
            "class_names": list(spec.classes),
            "pixel_histogram": {c: int(n) for c, n in zip(spec.classes, sum(hists.values()))},
            "pixel_histogram_by_split": {s: {c: int(n) for c, n in zip(spec.classes, h)} for s, h in hists.items()}}
    bar.close()
    write_json(os.path.join(root, "info.json"), info)
    return info
