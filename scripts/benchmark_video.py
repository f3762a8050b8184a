#!/usr/bin/env python
"""Flicker on video: the share of pixels whose label changes between consecutive frames of a jittered still, with
and without the temporal smoothing of ``dml_csr.photos.video.VideoParser``, measured in the same run.

    python scripts/benchmark_video.py --checkpoint runs/demo/best.pt     # the astronaut portrait, 40 frames
    python scripts/benchmark_video.py --checkpoint NAME --image face.jpg --smooth 0.3 0.5 0.7

Faces are detected, tracked and aligned in every frame (smoothing applies to tracked faces; "no smoothing" parses
every frame on its own, without tracking). Each frame is the still moved by a small random similarity (shift up to ``--shift`` px, rotation up to ``--rotate``
degrees, scale up to ``--zoom``) plus sensor noise (``--noise``, grey levels); its labels are mapped back onto the
still (the inverse of the frame's own jitter, nearest) so that only flicker is counted, not the motion.
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np

from _common import device_name, integer, real, run_main, setup_logging

PHOTO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "photos", "astronaut.jpg")


def jittered_frames(still: np.ndarray, n: int, shift: float, rotate: float, zoom: float, noise: float, seed: int):
    """(frames, affines still -> frame) of a still shaken by random similarities and noise."""
    import cv2

    rng = np.random.default_rng(seed)
    h, w = still.shape[:2]
    frames, mats = [], []
    for _ in range(n):
        m = cv2.getRotationMatrix2D((w / 2, h / 2), rng.uniform(-rotate, rotate), 1 + rng.uniform(-zoom, zoom))
        m[:, 2] += rng.uniform(-shift, shift, 2)
        frame = cv2.warpAffine(still, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        frame = np.clip(frame + rng.normal(0, noise, frame.shape), 0, 255).astype(np.uint8)
        frames.append(frame)
        mats.append(m)
    return frames, mats


def flicker(labels: list[np.ndarray], mats: list[np.ndarray], margin: int = 8) -> float:
    """Mean share of pixels (away from the border) whose label, mapped back onto the still, changes from a frame to
    the next."""
    import cv2

    h, w = labels[0].shape
    back = [cv2.warpAffine(lab, m, (w, h), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP) for lab, m in
            zip(labels, mats)]
    inner = (slice(margin, h - margin), slice(margin, w - margin))
    return float(np.mean([(a[inner] != b[inner]).mean() for a, b in zip(back, back[1:])]))


def main(argv=None) -> int:
    setup_logging()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="checkpoint path or registry name")
    p.add_argument("--image", default=PHOTO, help="the still (default: NASA's astronaut portrait, public domain, "
                                                  "from the tests' fixtures); 'synthetic': a synthetic face")
    p.add_argument("--frames", type=integer(1, 100000), default=40)
    p.add_argument("--smooth", type=real(0, 0.99), nargs="+", default=[0.5], help="smoothing weights to compare with 0")
    p.add_argument("--shift", type=real(0, 64), default=1.5)
    p.add_argument("--rotate", type=real(0, 45), default=1.0)
    p.add_argument("--zoom", type=real(0, 0.5), default=0.01)
    p.add_argument("--noise", type=real(0, 128), default=4.0)
    p.add_argument("--seed", type=integer(0, 2**32 - 1), default=0)
    p.add_argument("--device", type=device_name, default="cpu")
    p.add_argument("--json", default="", help="also write the figures here")
    args = p.parse_args(argv)
    import torch

    from dml_csr.data.imageio import to_bgr
    from dml_csr.photos.parser import FaceParser
    from dml_csr.photos.video import VideoParser

    torch.manual_seed(0)
    parser = FaceParser.from_checkpoint(args.checkpoint, device=args.device)
    if args.image == "synthetic":
        from dml_csr.data.synthetic import render_face

        still = render_face(11, size=(256, 256))[0]
    else:  # the one image reader: a missing, empty, oversized or undecodable file is named in one line
        still = to_bgr(args.image)
    frames, mats = jittered_frames(still, args.frames, args.shift, args.rotate, args.zoom, args.noise, args.seed)
    rows = []
    for s in [0.0] + [float(v) for v in args.smooth]:  # 0: every frame on its own (no tracking either)
        video = VideoParser(parser, smooth=s, max_missing=5 if s > 0 else 0)
        labels = [video(f)[0] for f in frames]
        rows.append({"smooth": s, "flicker": flicker(labels, mats)})
    base = rows[0]["flicker"]
    print(f"flicker on {args.frames} frames of a jittered still ({still.shape[1]}x{still.shape[0]}, faces "
          "detected, tracked and aligned): share of pixels whose label changes between consecutive frames")
    for r in rows:
        ratio = r["flicker"] / base if base > 0 else float("nan")
        r["ratio"] = ratio
        print(f"  smooth {r['smooth']:.2f}: {100 * r['flicker']:.3f}%   ({ratio:.2f}x of no smoothing)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"frames": args.frames, "image": args.image, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    run_main(main)
