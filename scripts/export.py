#!/usr/bin/env python
"""Export a checkpoint's inference model (edge heads dropped): ONNX, TorchScript, OpenVINO IR (fp32, and int8), or a
model folder for the Hugging Face Hub; every export is checked.

    python scripts/export.py --checkpoint runs/helen/best.pt --format onnx --out helen.onnx
    python scripts/export.py --checkpoint helen.pth --format torchscript --out helen.ts.pt --input-size 473,473
    python scripts/export.py --checkpoint runs/demo/best.pt --format openvino --out demo.xml --int8 --calib data/synthetic
    python scripts/export.py --checkpoint runs/demo/best.pt --format hf --out demo_hf [--push OWNER/REPO [--revision B]]

The graphs map a normalised (B, 3, H, W) float32 input (the checkpoint's channel order, mean and std, stored in the
file's metadata) to (B, C, H, W) logits; batch, height and width are dynamic (``--static-size`` fixes H, W). After
writing, the export runs on a random input beside PyTorch (max |difference| printed; above ``--tolerance`` the script
fails). ``--int8`` adds ``NAME.int8.xml``: NNCF calibrated on ``--calib``'s train split, written only when it keeps at
least ``--min-agreement`` of the fp32 model's labels on its test split. ``--format hf`` writes model.safetensors,
config.json and a model card README.md (with the test metrics of the run's metrics.json files that scored this
checkpoint); ``--push`` uploads the folder with huggingface_hub's own login.
"""
from __future__ import annotations

import argparse
import logging

from _common import run_main, setup_logging

log = logging.getLogger("export")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="our checkpoint, an authors' .pth file, a registry name, a "
                                                       "model folder or hf://OWNER/REPO[@REVISION]")
    p.add_argument("--format", required=True, choices=["onnx", "torchscript", "openvino", "hf"])
    p.add_argument("--out", required=True, help="output file (openvino: NAME.xml, beside NAME.bin; hf: a folder)")
    p.add_argument("--input-size", default=None, help="H,W of the tracing input (default: the checkpoint's)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17)")
    p.add_argument("--static-size", action="store_true", help="ONNX, OpenVINO: fixed height and width (batch stays "
                                                              "dynamic)")
    p.add_argument("--tolerance", default="1e-4", help="parity check: max |export - PyTorch| allowed (finite, >= 0)")
    p.add_argument("--no-check", action="store_true", help="skip the parity check")
    p.add_argument("--int8", action="store_true", help="openvino: also write NAME.int8.xml (NNCF, needs --calib)")
    p.add_argument("--calib", default=None, help="with --int8: a prepared root (calibrated on its train split, "
                                                 "checked on its test split) or 'synthetic'")
    p.add_argument("--calib-count", type=int, default=32, help="with --int8: images calibrated on and checked on")
    p.add_argument("--min-agreement", type=float, default=0.99, help="with --int8: the share of the fp32 labels "
                                                                     "the int8 IR must keep")
    p.add_argument("--metrics", nargs="+", default=None, help="hf: metrics.json files for the card (default: the "
                                                              "checkpoint folder's eval_*/metrics.json)")
    p.add_argument("--push", default=None, metavar="REPO_ID", help="hf: upload the folder to OWNER/REPO")
    p.add_argument("--revision", default=None, help="with --push: the branch (created if missing)")
    p.add_argument("--private", action="store_true", help="with --push: create the repository private")
    args = p.parse_args(argv)
    if args.int8 and (args.format != "openvino" or not args.calib):
        p.error("--int8 is for --format openvino and needs --calib ROOT")
    if (args.push or args.metrics) and args.format != "hf":
        p.error("--push and --metrics are for --format hf")
    if args.int8:
        from dml_csr.photos.quantize import check_calibration_root

        try:
            check_calibration_root(args.calib)
        except FileNotFoundError as e:
            p.error(str(e))
    return args


def input_size(args, meta) -> tuple[int, int]:
    if not args.input_size:
        return tuple(meta["input_size"])
    try:
        size = tuple(int(v) for v in args.input_size.split(","))
        assert len(size) == 2 and 8 <= min(size) and max(size) <= 4096
    except (ValueError, AssertionError):
        raise ValueError(f"--input-size '{args.input_size}': expected H,W (each 8 to 4096), e.g. 473,473") from None
    return size


def share(args) -> int:
    from dml_csr.photos.share import export_hf
    from dml_csr.sharing import hf

    info = export_hf(args.checkpoint, args.out, args.metrics, repo=args.push or "")
    print(f"wrote {args.out} (model.safetensors, config.json, README.md; metrics of the splits: "
          f"{', '.join(map(str, info['metrics'])) or 'none found'})")
    if args.push:
        print(f"pushed to {args.push}: {hf.push(args.out, args.push, args.revision, args.private)}")
    return 0


def main(argv=None) -> int:
    setup_logging()
    args = parse_args(argv)
    from dml_csr._typed import number

    args.tolerance = number(args.tolerance, "--tolerance", 0, 1e6)
    number(args.opset, "--opset", 17, 100, integer=True)
    args.min_agreement = number(args.min_agreement, "--min-agreement", 0, 1)
    if args.format == "hf":
        return share(args)
    import torch

    from dml_csr.checkpoint import load_model
    from dml_csr.photos import openvino
    from dml_csr.photos.export import export_onnx, export_torchscript
    from dml_csr.photos.runtime import parity

    model, meta = load_model(args.checkpoint, device="cpu")
    size = input_size(args, meta)
    meta = dict(meta, input_size=list(size), exported_from=args.checkpoint)
    torch.manual_seed(0)
    dynamic = not args.static_size or args.format == "torchscript"
    if args.format == "onnx":
        info = export_onnx(model, args.out, size, meta, opset=args.opset, dynamic_size=dynamic)
        print(f"wrote {args.out} (ONNX opset {info['opset']}, dynamic {', '.join(info['dynamic_axes'])})")
    elif args.format == "openvino":
        openvino.export_openvino(model, args.out, size, meta, dynamic_size=dynamic)
        print(f"wrote {args.out} (OpenVINO IR, fp32; dynamic {'batch, height, width' if dynamic else 'batch'})")
    else:
        export_torchscript(model, args.out, size, meta)
        print(f"wrote {args.out} (TorchScript, traced; dynamic batch, height, width)")
    if not args.no_check:
        diff = parity(args.out, model, size, dynamic)
        print(f"parity: max |{args.format} - pytorch| = {diff:.3g} (tolerance {args.tolerance:g})")
        if diff > args.tolerance:
            raise ValueError(f"{args.out}: export differs from PyTorch by {diff:.3g} > {args.tolerance:g}")
    if args.int8:
        r = openvino.export_int8(model, args.out, openvino.int8_path(args.out), meta, args.calib,
                                 count=args.calib_count, min_agreement=args.min_agreement)
        print(f"wrote {r['path']} (OpenVINO IR, int8 by NNCF): {100 * r['agreement']:.2f}% of the fp32 labels kept "
              f"on {r['images']} test images (at least {100 * args.min_agreement:g}% required)")
    return 0


if __name__ == "__main__":
    run_main(main)
