#!/usr/bin/env python
"""Export a checkpoint's inference model (edge heads dropped) to ONNX or TorchScript, then check parity.

    python scripts/export.py --checkpoint runs/helen/best.pt --format onnx --out helen.onnx
    python scripts/export.py --checkpoint helen.pth --format torchscript --out helen.ts.pt --input-size 473,473

The graph maps a normalised (B, 3, H, W) float32 input (the checkpoint's channel order, mean and std, stored in the
file's metadata) to (B, C, H, W) logits. Batch, height and width are dynamic (``--static-size`` fixes H, W).
After writing, the export is run on a random input and compared with PyTorch (max |difference| is printed; above
``--tolerance`` the script fails).
"""
from __future__ import annotations

import argparse
import logging

from _common import run_main, setup_logging

log = logging.getLogger("export")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="our checkpoint or an authors' .pth file")
    p.add_argument("--format", required=True, choices=["onnx", "torchscript"])
    p.add_argument("--out", required=True, help="output file")
    p.add_argument("--input-size", default=None, help="H,W of the tracing input (default: the checkpoint's)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17)")
    p.add_argument("--static-size", action="store_true", help="ONNX: fixed height and width (batch stays dynamic)")
    p.add_argument("--tolerance", default="1e-4", help="parity check: max |export - PyTorch| allowed (finite, >= 0)")
    p.add_argument("--no-check", action="store_true", help="skip the parity check")
    return p.parse_args(argv)


def parity(fmt: str, path: str, model, size: tuple[int, int]) -> float:
    """Max |export - PyTorch| on a random batch of 2 at ``size`` (and, for dynamic exports, a different size); a
    ValueError when either output holds NaN or infinity (max() would skip a NaN difference and pass)."""
    import numpy as np
    import torch

    from dml_csr.photos.export import InferenceWrapper, read_torchscript_meta

    wrapper = InferenceWrapper(model).eval()
    g = torch.Generator().manual_seed(0)
    worst = 0.0
    for h, w in {size, (size[0] + 8, size[1] + 16)}:
        x = torch.randn(2, 3, h, w, generator=g)
        with torch.no_grad():
            ref = wrapper(x).numpy()
        if fmt == "onnx":
            import onnxruntime as ort

            sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            if sess.get_inputs()[0].shape[2] != "height" and (h, w) != size:
                continue  # static height and width
            got = sess.run(None, {"image": x.numpy()})[0]
        else:
            module, _ = read_torchscript_meta(path)
            with torch.no_grad():
                got = module(x).numpy()
        for what, out in (("the export", got), ("PyTorch", ref)):
            if not np.isfinite(out).all():
                raise ValueError(f"{path}: {what}'s output at {h}x{w} holds {int((~np.isfinite(out)).sum())} values "
                                 "that are not finite (NaN or infinity); parity cannot hold")
        worst = max(worst, float(np.abs(got - ref).max()))
    return worst


def main(argv=None) -> int:
    setup_logging()
    args = parse_args(argv)
    from dml_csr._typed import number

    args.tolerance = number(args.tolerance, "--tolerance", 0, 1e6)
    number(args.opset, "--opset", 17, 100, integer=True)
    import torch

    from dml_csr.photos.export import export_onnx, export_torchscript
    from dml_csr.checkpoint import load_model

    model, meta = load_model(args.checkpoint, device="cpu")
    if args.input_size:
        try:
            size = tuple(int(v) for v in args.input_size.split(","))
            assert len(size) == 2 and 8 <= min(size) and max(size) <= 4096
        except (ValueError, AssertionError):
            raise ValueError(f"--input-size '{args.input_size}': expected H,W (each 8 to 4096), e.g. 473,473") from None
    else:
        size = tuple(meta["input_size"])
    meta = dict(meta, input_size=list(size), exported_from=args.checkpoint)
    torch.manual_seed(0)
    if args.format == "onnx":
        info = export_onnx(model, args.out, size, meta, opset=args.opset, dynamic_size=not args.static_size)
        print(f"wrote {args.out} (ONNX opset {info['opset']}, dynamic {', '.join(info['dynamic_axes'])})")
    else:
        export_torchscript(model, args.out, size, meta)
        print(f"wrote {args.out} (TorchScript, traced; dynamic batch, height, width)")
    if not args.no_check:
        diff = parity(args.format, args.out, model, size)
        print(f"parity: max |{args.format} - pytorch| = {diff:.3g} (tolerance {args.tolerance:g})")
        if diff > args.tolerance:
            raise ValueError(f"{args.out}: export differs from PyTorch by {diff:.3g} > {args.tolerance:g}")
    return 0


if __name__ == "__main__":
    run_main(main)
