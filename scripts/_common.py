"""Shared command-line plumbing for the scripts: config flags, logging, one-line errors."""
from __future__ import annotations

import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def add_config_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--config", required=required, help="YAML config (with optional _base_ inheritance)")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override config values, e.g. --set train.epochs=2 model.backbone=resnet18")


def add_image_limit_args(p: argparse.ArgumentParser) -> None:
    """The image reader's limits (dml_csr.data.imageio): the most bytes a file may hold, the most pixels an image may
    have (read from its header before decoding)."""
    p.add_argument("--max-image-mb", default=None, help="largest image file read, MiB (default 256, or "
                                                        "$DML_CSR_MAX_IMAGE_MB)")
    p.add_argument("--max-megapixels", default=None, help="largest image, megapixels, read from its header before "
                                                          "decoding (default 100, or $DML_CSR_MAX_MEGAPIXELS)")


def apply_image_limits(args) -> None:
    """The limits given on the command line, checked, into the environment, where the reader finds them (worker
    processes too)."""
    from dml_csr._typed import number
    from dml_csr.data.imageio import ENV_BYTES, ENV_PIXELS

    for flag, env, value in (("--max-image-mb", ENV_BYTES, args.max_image_mb),
                             ("--max-megapixels", ENV_PIXELS, args.max_megapixels)):
        if value is not None:
            os.environ[env] = repr(number(value, flag, 0, 1e6, lo_open=True))


def integer(lo: int, hi: int):
    """An argparse ``type``: an integer in [lo, hi]. Out of range, argparse prints one line naming the flag, the value
    and the range, before any work (a size or count out of reach would allocate, or loop, for minutes first)."""
    return _in_range(lo, hi, True)


def real(lo: float, hi: float):
    """An argparse ``type``: a finite number in [lo, hi] (``nan`` and ``inf`` refused as :func:`integer` refuses)."""
    return _in_range(lo, hi, False)


def device_name(text: str) -> str:
    """An argparse ``type``: auto, cpu, mps, cuda or cuda:N that this machine has (one line otherwise), resolved."""
    import re

    from dml_csr.conventions import DEVICE_NAMES
    from dml_csr.distributed import resolve_device
    if not re.fullmatch(DEVICE_NAMES, text):
        raise argparse.ArgumentTypeError(f"{text!r}; expected auto, cpu, mps, cuda or cuda:N")
    try:
        return str(resolve_device(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_crf_args(p: argparse.ArgumentParser, default) -> None:
    """--crf ITERATIONS and --crf-kernel KEY=VALUE ... (Liu et al.'s CNN-CRF), each checked before any work."""
    from dml_csr.models.dense_crf import KERNEL_SETTINGS
    p.add_argument("--crf", type=integer(0, 50), default=default, metavar="ITERATIONS",
                   help="Liu et al.'s CNN-CRF: this many mean-field steps of a dense CRF on each image's probabilities "
                        + ("(default: eval.crf_iterations; 0: none)" if default is None else "(0: none)"))
    p.add_argument("--crf-kernel", type=crf_kernel, nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="the dense CRF's kernels in place of pydensecrf's suggested ones, e.g. bilateral_weight=5 "
                        f"bilateral_rgb=20 normalization=row (keys: {', '.join(KERNEL_SETTINGS)}); needs the CRF on "
                        "(--crf, or in evaluate.py eval.crf_iterations)")


def crf_kernels_of(p: argparse.ArgumentParser, args) -> dict:
    """{key: value} of every --crf-kernel (the flag may repeat); a key given twice is one line."""
    kernels: dict = {}
    for key, value in args.crf_kernel:
        if key in kernels:
            p.error(f"--crf-kernel sets {key} twice ({kernels[key]} and {value}); give each setting once")
        kernels[key] = value
    return kernels


def crf_kernel(text: str) -> tuple:
    """An argparse ``type``: one dense-CRF kernel setting, ``KEY=VALUE``, checked as CRFParams checks it."""
    from dml_csr.models.dense_crf import KERNEL_SETTINGS, crf_params
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r}; expected KEY=VALUE, e.g. bilateral_rgb=20")
    try:
        if key in KERNEL_SETTINGS and key != "normalization":
            try:
                value = float(value)
            except ValueError:
                raise ValueError(f"{key}={value!r}; expected a number") from None
        crf_params(1, {key: value})
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return key, value


MAX_PIXELS = 2**27  # a benchmark batch's pixels: batch 512 at 512x512


def check_pixels(p: argparse.ArgumentParser, batch: int, size: int, flags: str) -> None:
    """One line before any work when ``batch`` images of ``size`` x ``size`` exceed :data:`MAX_PIXELS` (each in range,
    --size 4096 and --batch 1024 would still ask for terabytes)."""
    if batch * size ** 2 > MAX_PIXELS:
        p.error(f"{flags % (batch, size)} is {batch * size ** 2:,} pixels a batch; expected at most {MAX_PIXELS:,} "
                f"(e.g. batch 512 at size 512)")


def _in_range(lo, hi, whole: bool):
    def parse(text: str):
        from dml_csr._typed import number
        try:
            return number(text, "", lo, hi, integer=whole)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e).lstrip(" =")) from None
    parse.__name__ = "integer" if whole else "number"  # what argparse names in its message
    return parse


def load_cfg(args):
    from dml_csr.config import load_config
    return load_config(args.config, args.set)


def setup_logging(rank: int = 0) -> None:
    level = logging.INFO if rank == 0 else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def run_main(main) -> None:
    """Run ``main()``; expected errors become one line on stderr and exit status 2."""
    from dml_csr.checkpoint import CheckpointError
    from dml_csr.config import ConfigError
    try:
        sys.exit(main())
    # OSError: a path it names; ImportError: an optional package (timm, onnx...) the run needs
    except (ConfigError, CheckpointError, OSError, KeyError, ValueError, ImportError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(2)
