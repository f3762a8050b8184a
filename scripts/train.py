#!/usr/bin/env python
"""Train a face-parsing model.

One process (CPU or one GPU):
    python scripts/train.py --config configs/helen_dml_csr_r101.yaml
Several GPUs on one node, or several nodes:
    torchrun --nproc_per_node 4 scripts/train.py --config configs/helen_dml_csr_r101.yaml
    torchrun --nnodes 2 --node_rank R --nproc_per_node 4 --master_addr HOST --master_port 29500 scripts/train.py ...
Continue an interrupted run (exactly where its last checkpoint left it):
    python scripts/train.py --config ... --resume            # the run directory runs/<name>/
    python scripts/train.py --config ... --resume runs/x/checkpoints/epoch_0042.pt
A resume with other data or schedule settings than the checkpoint's is refused unless --allow-changes; one training
at a time holds a run directory (a second one stops with one line).
"""
import argparse
import json
import sys

from _common import add_config_args, load_cfg, run_main, setup_logging


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(p)
    p.add_argument("--resume", nargs="?", const="", default=None, metavar="CKPT_OR_RUN_DIR",
                   help="continue from a checkpoint or run directory (default: this config's run directory)")
    p.add_argument("--max-epochs", default=None, help="stop after this many epochs of this call (a whole number >= 1)")
    p.add_argument("--allow-changes", action="store_true", help="with --resume: go on with data or schedule "
                   "settings other than the checkpoint's (the difference goes to metrics.jsonl, the earlier config "
                   "is kept as config_until_epoch_NNNN.yaml)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    from dml_csr._typed import number
    from dml_csr.distributed import env_int

    if args.max_epochs is not None:  # -1 or nan trained nothing, or was a traceback
        args.max_epochs = number(args.max_epochs, "--max-epochs", 1, None, integer=True)
    cfg = load_cfg(args)  # every config error stops here, before any work

    setup_logging(env_int("RANK", 0))
    from dml_csr.checkpoint import RunPaths
    from dml_csr.distributed import cleanup
    from dml_csr.training.engine import NonFiniteLossError
    from dml_csr.training.faults import DivergedError
    from dml_csr.training.trainer import train
    resume = None if args.resume is None else (args.resume or cfg.run_dir)
    try:
        summary = train(cfg, resume=resume, max_epochs=args.max_epochs, progress=not args.no_progress,
                        allow_changes=args.allow_changes)
    except DivergedError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except NonFiniteLossError as e:
        last = RunPaths(cfg.run_dir).checkpoints()
        kept = f"the last checkpoint, {last[-1]}, is intact" if last else "no checkpoint was written"
        print(f"error: {e}; {kept}", file=sys.stderr)
        return 3
    finally:
        cleanup()  # leave the process group (under torchrun)
    if env_int("RANK", 0) == 0:
        print(json.dumps(summary, indent=2, default=str))
    if summary.get("stopped"):
        return 128 + int(summary.get("signal") or 0)
    return 0


if __name__ == "__main__":
    run_main(main)
