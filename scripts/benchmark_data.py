#!/usr/bin/env python
"""Data pipeline speed, per worker: the full training sample vs the floor, measured in the same run.

    python scripts/benchmark_data.py [--root PREPARED --dataset NAME] [--size 473] [--samples 40] [--rounds 3]

Full = FaceParsingDataset.__getitem__ with the training transform (random scale/rotation/flip in one warp, label
validation, left/right swap, binary and category edge maps, tensors). Floor = decoding the image and the label and
one warpAffine each to the input size. Without --root, synthetic 512x512 faces are written to a temporary folder.
One process, single-threaded OpenCV: the figure is samples/s per DataLoader worker. Goal: full/floor <= 1.25.

The worker hands over uint8 images; their normalisation runs batched on the training device
(dml_csr.data.transforms.batch_input). Its cost per sample on --device is printed on a line of its own, with the
collation of a batch, so nothing is hidden.
"""
import argparse
import statistics
import tempfile
import time

import cv2
import torch

from _common import check_pixels, device_name, integer, run_main
from dml_csr.data.dataset import FaceParsingDataset, read_split_list
from dml_csr.data.loader import collate_samples
from dml_csr.data.labels import get_spec
from dml_csr.data.transforms import TrainTransform, batch_input, box_to_center_scale, get_affine_transform


def floor_pass(items, size):
    for _, ip, lp in items:
        img = cv2.imread(ip, cv2.IMREAD_COLOR)
        lab = cv2.imread(lp, cv2.IMREAD_UNCHANGED)
        c, s = box_to_center_scale(img.shape[0], img.shape[1], (size, size))
        m = get_affine_transform(c, s, 0.0, (size, size))
        cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
        cv2.warpAffine(lab, m, (size, size), flags=cv2.INTER_NEAREST, borderValue=255)


def full_pass(ds):
    for i in range(len(ds)):
        ds[i]


def batch_costs(ds, batch_size: int, device: str, rounds: int) -> tuple[float, float]:
    """ms per sample of collating a batch (in the worker) and of batch_input on ``device`` (copy + normalisation)."""
    samples = [ds[i % len(ds)] for i in range(batch_size)]
    batch = collate_samples(samples)
    batch_input(batch, device)  # warm-up (allocator, CUDA context)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    tc, tn = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        batch = collate_samples(samples)
        t1 = time.perf_counter()
        if device.startswith("cuda"):  # the loader pins its batches on CUDA (pin_memory is not the worker's cost)
            batch["image"] = batch["image"].pin_memory()
            t1 = time.perf_counter()
        batch_input(batch, device)
        sync()
        t2 = time.perf_counter()
        tc.append(t1 - t0)
        tn.append(t2 - t1)
    return min(tc) * 1e3 / batch_size, min(tn) * 1e3 / batch_size


def timed_pair(floor, full, n, rounds):
    """Alternate floor and full passes so both see the same machine load (the CPU may be shared)."""
    tf, tu = [], []
    for _ in range(rounds):
        for fn, acc in ((floor, tf), (full, tu)):
            t0 = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t0)
    ratios = [u / f for f, u in zip(tf, tu)]
    return n / min(tf), n / min(tu), statistics.median(ratios)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", help="a prepared root (default: synthetic faces in a temporary folder)")
    p.add_argument("--dataset", default="synthetic19")
    p.add_argument("--split", default="train")
    p.add_argument("--size", type=integer(16, 4096), default=473)
    p.add_argument("--samples", type=integer(1, 100000), default=40)
    p.add_argument("--rounds", type=integer(1, 10000), default=5)
    p.add_argument("--batch-size", type=integer(1, 1024), default=8,
                   help="for the collate / on-device normalisation line")
    p.add_argument("--device", type=device_name, default="cpu", help="where batch_input normalises (cpu, cuda)")
    a = p.parse_args(argv)
    check_pixels(p, a.batch_size, a.size, "--batch-size %d at --size %d")
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    tmp = None
    root = a.root
    if root is None:
        from dml_csr.data.synthetic import write_dataset
        tmp = tempfile.TemporaryDirectory()
        root = tmp.name
        write_dataset(root, {a.split: a.samples}, size=(512, 512), order=a.dataset)
    spec = get_spec(a.dataset)
    t = TrainTransform((a.size, a.size), spec, rotation=30, rotation_prob=1.0, flip=True, edge_width=1)
    ds = FaceParsingDataset(root, a.split, spec, t, max_samples=a.samples)
    items = read_split_list(root, a.split)[: len(ds)]
    full_pass(ds)  # warm caches and the OS file cache
    floor_sps, full_sps, ratio_med = timed_pair(lambda: floor_pass(items, a.size), lambda: full_pass(ds), len(ds),
                                                a.rounds)
    collate_ms, norm_ms = batch_costs(ds, a.batch_size, a.device, a.rounds)
    h, w = cv2.imread(items[0][1]).shape[:2]
    print(f"data pipeline, one worker, {len(ds)} samples of {w}x{h} -> {a.size}x{a.size}, best of {a.rounds} "
          f"alternating rounds")
    print(f"  floor (decode image+label, one warpAffine each): {floor_sps:7.1f} samples/s")
    print(f"  full training sample (+flip, edges, tensors):    {full_sps:7.1f} samples/s")
    print(f"  cost ratio full/floor: {floor_sps / full_sps:.3f} best-vs-best, {ratio_med:.3f} median of rounds; "
          f"goal <= 1.25")
    print(f"  outside the per-sample figure, per sample in batches of {a.batch_size}: collate {collate_ms:.3f} ms "
          f"(worker), transfer + normalisation {norm_ms:.3f} ms on {a.device} (torch threads: "
          f"{torch.get_num_threads()})")
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    run_main(main)
