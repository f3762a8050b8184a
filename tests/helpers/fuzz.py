"""Seeded, time-bounded fuzzing of the image reader and the config loader, run in a child process whose address space
is capped (``RLIMIT_AS``: what it holds after its imports, plus 1 GiB) and whose peak resident memory is reported.

    python tests/helpers/fuzz.py reader --seconds 20 --seed 0      # prints one JSON line of figures
    python tests/helpers/fuzz.py config --seconds 20 --seed 0
    python tests/helpers/fuzz.py config --case 51708748         # one recorded input again, its traceback printed

The reader gets valid PNG, JPEG, WebP, TIFF, GIF, BMP and PPM files (made here, several variants each) and the
bombs of :mod:`helpers.bombs` at a smaller declared size, mutated: random bytes, truncations, bit flips, byte runs
overwritten with extreme values, header fields overwritten, slices repeated; and random bytes alone. The config
loader gets the shipped configs (copied with their ``_base_`` tree) with their text mutated: bytes flipped, lines
dropped, repeated or swapped, and YAML fragments spliced in (aliases, deep nesting, NaN and infinity, huge numbers
and strings, tags, tabs). The only exceptions allowed to escape are the project's own (:class:`ImageError`,
:class:`ConfigError`); any other is recorded with the seed of its input.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import random
import resource
import shutil
import sys
import tempfile
import time
import traceback
from typing import Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
EXTRA = 1 << 30  # bytes of address space the fuzzing may add to what the imports took


def _cap_memory() -> int:
    """Cap the address space at its present size plus :data:`EXTRA`; returns the cap."""
    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (vm + EXTRA, vm + EXTRA))
    return vm + EXTRA


def _peak_rss_mb() -> float:
    from peak_rss import peak_rss_mb  # VmHWM: ru_maxrss carries the forking parent's peak over exec

    return peak_rss_mb()


# ---------------------------------------------------------------------------------------------------------- inputs
def image_seeds() -> list[bytes]:
    """Valid small images of every accepted format (several encodings each), and bombs declaring 6000 x 6000."""
    import cv2
    import numpy as np
    from PIL import Image

    import bombs

    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (23, 31, 3), np.uint8)
    out = []
    for ext, params in ((".png", ()), (".jpg", ()), (".jpg", (cv2.IMWRITE_JPEG_PROGRESSIVE, 1)),
                        (".webp", (cv2.IMWRITE_WEBP_QUALITY, 101)), (".webp", (cv2.IMWRITE_WEBP_QUALITY, 60)),
                        (".bmp", ()), (".ppm", ()), (".pgm", ()), (".tif", ())):
        src = img[..., 0] if ext == ".pgm" else img
        out.append(cv2.imencode(ext, src, list(params))[1].tobytes())
    for fmt, kw in (("GIF", {}), ("TIFF", {"compression": "tiff_deflate"}), ("TIFF", {"compression": "packbits"}),
                    ("BMP", {}), ("PNG", {"bits": 4}), ("WEBP", {"lossless": True})):
        buf = io.BytesIO()
        Image.fromarray(img).convert("P" if fmt == "GIF" else "RGB").save(buf, format=fmt, **kw)
        out.append(buf.getvalue())
    out.append(cv2.imencode(".png", (img.astype(np.uint16) * 257))[1].tobytes())  # 16-bit
    for fmt in bombs.FORMATS:
        out.append(getattr(bombs, fmt)(6000))
    return out


_EXTREMES = (b"\x00", b"\xff", b"\x7f", b"\x80", b"\xff\xff\xff\x7f", b"\x00\x00\x00\x00", b"\xff\xfe")


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    """One to three mutations of ``data``, or random bytes alone."""
    if rng.random() < 0.05:
        return rng.randbytes(rng.randrange(0, 2048))
    b = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(6)
        if not b:
            b = bytearray(rng.randbytes(16))
        if op == 0:  # truncation
            del b[rng.randrange(len(b)):]
        elif op == 1:  # bit flips
            for _ in range(rng.randint(1, 8)):
                i = rng.randrange(len(b))
                b[i] ^= 1 << rng.randrange(8)
        elif op == 2:  # an extreme value over a header field (the first 64 bytes) or anywhere
            i = rng.randrange(min(len(b), 64) if rng.random() < 0.7 else len(b))
            v = rng.choice(_EXTREMES)
            b[i:i + len(v)] = v
        elif op == 3:  # random bytes overwritten
            i = rng.randrange(len(b))
            n = rng.randint(1, 32)
            b[i:i + n] = rng.randbytes(n)
        elif op == 4:  # a slice repeated
            i = rng.randrange(len(b))
            b[i:i] = b[i:i + rng.randint(1, 64)] * rng.randint(1, 8)
        else:  # bytes removed from the middle
            i = rng.randrange(len(b))
            del b[i:i + rng.randint(1, 64)]
    return bytes(b)


def drive(kind: str, seconds: float, seed: int, try_one, case: Optional[int] = None) -> dict:
    """Call ``try_one(rng)`` with a fresh seeded generator per input for ``seconds``, the address space capped;
    it returns the outcome's name (the project's own error included) and raises anything else, which is recorded
    with the seed of its input (``case``: that one input alone, its exception raised). Returns the figures."""
    if case is not None:
        return {"kind": kind, "case": case, "outcome": try_one(random.Random(case))}
    cap = _cap_memory()
    rng = random.Random(seed)
    counts: dict[str, int] = {}
    escaped, n, start = [], 0, time.time()
    while time.time() - start < seconds:
        case = rng.randrange(1 << 30)
        try:
            outcome = try_one(random.Random(case))
            counts[outcome] = counts.get(outcome, 0) + 1
        except Exception as e:  # anything else escaped: a finding
            escaped.append({"case": case, "error": f"{type(e).__name__}: {e}"[:300],
                            "where": traceback.format_exc().splitlines()[-3:]})
        n += 1
    return {"kind": kind, "seed": seed, "inputs": n, "seconds": round(time.time() - start, 1),
            "peak_rss_mb": round(_peak_rss_mb(), 1), "address_space_cap_mb": cap >> 20, "outcomes": counts,
            "escaped": escaped}


def fuzz_reader(seconds: float, seed: int, case: Optional[int] = None) -> dict:
    """Feed mutated images to :func:`dml_csr.data.imageio.decode_image` (and one in 16 to ``imread_checked``
    through a file) for ``seconds``; the figures and every escaped exception."""
    import cv2

    from dml_csr.data.imageio import ImageError, ImageLimits, decode_image, imread_checked

    cv2.setNumThreads(1)
    seeds = image_seeds()
    limits = ImageLimits(max_bytes=4 << 20, max_pixels=16_000_000)
    flags = (cv2.IMREAD_COLOR, cv2.IMREAD_UNCHANGED, cv2.IMREAD_GRAYSCALE)
    tmp = tempfile.mkdtemp(prefix="fuzz-reader-")

    def try_one(r: random.Random) -> str:
        data = mutate_bytes(r.choice(seeds), r)
        try:
            if r.random() < 1 / 16:  # the file path too: the same checks, plus the file system's
                path = os.path.join(tmp, "x.img")
                with open(path, "wb") as f:
                    f.write(data)
                imread_checked(path, r.choice(flags), ImageError, "image", limits)
            else:
                decode_image(data, r.choice(flags), limits)
            return "decoded"
        except ImageError as e:
            return getattr(e, "kind", "file")

    try:
        return drive("reader", seconds, seed, try_one, case)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


_FRAGMENTS = ("&a [1, 2]", "*a", "[*a, *a, *a]", "<<: *a", "[" * 200 + "]" * 200, "{a: {b: {c: {d: 1}}}}",
              ".nan", ".inf", "-.inf", "1e999", "9" * 5000, "x" * 100000, "!!python/object:os.system", "!!binary AAAA",
              "\t", "? [a, b]\n: c", "~", "null", "[]", "{}", "'", '"', "%YAML 1.1", "---", "...", "&a a\nb: *a",
              "0x7fffffffffffffff", "-1", "0", "1e-400", "[1.0, .nan]", "2001-12-14", "yes", "\udcff")


def mutate_text(text: str, rng: random.Random) -> str:
    """One to three mutations of a YAML text: bytes flipped, lines dropped, repeated or swapped, a value replaced
    or a fragment spliced in."""
    lines = text.splitlines()
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(5)
        if not lines:
            lines = [""]
        i = rng.randrange(len(lines))
        if op == 0:
            del lines[i]
        elif op == 1:
            lines.insert(i, lines[rng.randrange(len(lines))])
        elif op == 2 and ":" in lines[i]:
            key = lines[i].split(":", 1)[0]
            lines[i] = f"{key}: {rng.choice(_FRAGMENTS)}"
        elif op == 3:
            lines.insert(i, rng.choice(_FRAGMENTS))
        else:
            chars = list(lines[i]) or [" "]
            j = rng.randrange(len(chars))
            chars[j] = chr(rng.choice((ord(chars[j]) ^ (1 << rng.randrange(7)), rng.randrange(32, 127))))
            lines[i] = "".join(chars)
    return "\n".join(lines) + "\n"


def fuzz_config(seconds: float, seed: int, case: Optional[int] = None) -> dict:
    """Feed mutated shipped configs (and ``--set`` overrides) to :func:`dml_csr.config.load_config` for
    ``seconds``; the figures and every escaped exception (a refusal of more than one line or 2000 characters too)."""
    from dml_csr.config import ConfigError, load_config

    tmp = tempfile.mkdtemp(prefix="fuzz-config-")
    tree = os.path.join(tmp, "configs")
    shutil.copytree(os.path.join(ROOT, "configs"), tree)
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(tree) for f in fs if f.endswith(".yaml"))
    originals = {p: open(p, encoding="utf-8").read() for p in files}
    tops = [p for p in files if "_base_" not in p]

    def try_one(r: random.Random) -> str:
        target = r.choice(files)  # a top-level config, or one of the bases it reads
        top = target if target in tops else r.choice(tops)
        try:
            with open(target, "w", encoding="utf-8", errors="surrogateescape") as f:
                f.write(mutate_text(originals[target], r))
            overrides = [f"{r.choice(['train.lr', 'eval.scales', 'data', 'x.y', 'model.mean'])}="
                         f"{r.choice(_FRAGMENTS)}"] if r.random() < 0.3 else []
            load_config(top, overrides)
            return "loaded"
        except ConfigError as e:
            if len(str(e)) > 2000 or "\n" in str(e):
                raise AssertionError(f"a refusal of {len(str(e))} characters or several lines") from None
            return "refused"
        finally:
            with open(target, "w", encoding="utf-8") as f:
                f.write(originals[target])

    try:
        return drive("config", seconds, seed, try_one, case)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("kind", choices=["reader", "config"])
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--case", type=int, default=None, help="run one recorded input (an escaped one's 'case') alone")
    args = p.parse_args(argv)
    sys.path[:0] = [ROOT, HERE]
    run = fuzz_reader if args.kind == "reader" else fuzz_config
    print(json.dumps(run(args.seconds, args.seed, args.case)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
