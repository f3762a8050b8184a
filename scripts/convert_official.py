"""Convert an authors' DML-CSR file (raw state_dict) into our checkpoint format, with class names and input convention.

    python scripts/convert_official.py helen_best.pth runs/official/helen.pt [--dataset lapa] [--keep-edges]

The class count is read from the file (11: helen, 19: celebamask_hq by default); the stored config rebuilds the
authors' architecture and records their input convention (BGR, RGB ImageNet mean/std, 473x473).
"""
from __future__ import annotations

import argparse
import logging
from typing import Optional

from _common import run_main, setup_logging

from dml_csr.checkpoint import load_checkpoint, save_checkpoint
from dml_csr.config import config_to_dict
from dml_csr.data.labels import get_spec
from dml_csr.checkpoint import OFFICIAL_DATASETS, build_from_official, official_config, official_meta
from dml_csr.models.official import official_num_classes, unwrap_state_dict

log = logging.getLogger("convert_official")


def convert(src: str, dst: str, dataset: Optional[str] = None, keep_edges: bool = False) -> dict:
    """Load ``src`` strictly through the name mapping and write our checkpoint to ``dst``; returns its meta."""
    sd = unwrap_state_dict(load_checkpoint(src), src)
    num_classes = official_num_classes(sd, src)
    dataset = dataset or OFFICIAL_DATASETS.get(num_classes)
    if dataset is None:
        raise ValueError(f"{src}: {num_classes} classes; pass --dataset to name the class layout")
    spec = get_spec(dataset)
    if spec.num_classes != num_classes:
        raise ValueError(f"{src}: the file has {num_classes} classes but dataset '{dataset}' has {spec.num_classes}")
    has_edges = any(k.startswith("edge_layer.") for k in sd)
    if keep_edges and not has_edges:
        raise ValueError(f"{src}: --keep-edges given but the file has no edge_layer.* entries")
    model = build_from_official(sd, src, edge_heads=keep_edges)
    meta = official_meta(num_classes, dataset)
    save_checkpoint(dst, model.state_dict(), meta, config_to_dict(official_config(dataset, keep_edges)),
                    source_file=src)
    log.info("wrote %s (%d classes, %s, edge heads: %s)", dst, num_classes, dataset, keep_edges)
    return meta


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src", help="authors' .pth file")
    p.add_argument("dst", help="output checkpoint (.pt)")
    p.add_argument("--dataset", default=None, help="class layout (default from the class count: 11 helen, 19 "
                                                   "celebamask_hq); lapa for the LaPa model")
    p.add_argument("--keep-edges", action="store_true", help="keep the edge heads (training model)")
    args = p.parse_args(argv)
    setup_logging()
    convert(args.src, args.dst, args.dataset, args.keep_edges)
    return 0


if __name__ == "__main__":
    run_main(main)
