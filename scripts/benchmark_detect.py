#!/usr/bin/env python
"""What searching turned photos costs: face detection on a photo upright and turned by 90, 180 and 270 degrees, with
and without the search (``dml_csr.photos.detection.any_rotation``), in one run.

    python scripts/benchmark_detect.py [--detector yuface] [--image tests/fixtures/photos/astronaut.jpg] [--repeats 20]

An upright photo whose face scores 0.9 or more costs one detection either way; a turned one costs up to four with
the search, and is found (without it, the detector finds nothing or a face with its landmarks misplaced).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

from _common import integer, run_main, setup_logging

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None) -> int:
    setup_logging()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--detector", default="auto", help="auto, yuface, yunet or haar")
    p.add_argument("--image", default=os.path.join(HERE, "..", "tests", "fixtures", "photos", "astronaut.jpg"))
    p.add_argument("--repeats", type=integer(1, 100000), default=20)
    args = p.parse_args(argv)
    import numpy as np

    from dml_csr.data.imageio import to_bgr
    from dml_csr.photos.detection import build_detector

    image = to_bgr(args.image)
    detectors = {"upright only": build_detector(args.detector, rotations=False),
                 "any rotation": build_detector(args.detector)}
    base = None
    print(f"{'photo':<12} {'detector':<13} {'faces':>5} {'best score':>10} {'ms':>8} {'x upright only':>15}")
    for k in range(4):
        turned = np.ascontiguousarray(np.rot90(image, k))
        for label, detect in detectors.items():
            faces = detect(turned)  # warm-up
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                detect(turned)
                times.append(time.perf_counter() - t0)
            ms = statistics.median(times) * 1e3
            base = ms if k == 0 and label == "upright only" else base
            best = max((f.score for f in faces), default=float("nan"))
            print(f"{f'turned {90 * k}':<12} {label:<13} {len(faces):>5} {best:>10.2f} {ms:>8.2f} {ms / base:>15.2f}")
    return 0


if __name__ == "__main__":
    run_main(main)
