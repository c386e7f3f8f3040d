#!/usr/bin/env python
"""Convolution algorithms forced against each other on a list of shapes, to set or check the
plan tables' rules (cpp/ops/conv2d/plan.cpp): per shape the row the plan chooses and the median
time of each algorithm given (forced with `_core.conv2d_force`), interleaved call by call in
one process, same thread count. Shapes the algorithm does not apply to print "-".

    python bench/plan_sweep.py --direction weight_grad --algorithms winograd3_lanes,kvec,winograd3 \\
        --shapes 128x64x8x64k3s1,32x256x7x256k3s1 [--threads 2] [--rounds 7]

A shape is NxCxHxK, then k<kernel> and s<stride> (H = W, padding kernel // 2). --set resnet20
gives ResNet-20's layers at batch 128 on 32x32 and on 28x28 (Fashion-MNIST); --set common the
layers of the networks users bring (VGG, ResNet-18/50 stages and stems at batch 1-128, 1x1, 5x5,
7x7 and 4x4 stride-2 layers). --algorithms all times every row that applies to each shape (but
the exact `rows`), adds the fastest, and marks with <<< a shape whose planned row is more than
15 % slower than it: how to check the plan's rules after a kernel changes.

    python bench/plan_sweep.py --direction forward,input_grad,weight_grad --algorithms all \\
        --set common --rounds 5
"""
from __future__ import annotations

import argparse
import re
import statistics
import sys
import time

import numpy as np

import convkit
import convkit.functional as F
from convkit import _core


def resnet20_layers(h):
    """ResNet-20's convolutions at batch 128 on h x h input: (N, C, H, K, kernel, stride)."""
    return [(128, 16, h, 16, 3, 1), (128, 16, h, 32, 3, 2), (128, 16, h, 32, 1, 2),
            (128, 32, h // 2, 32, 3, 1), (128, 32, h // 2, 64, 3, 2),
            (128, 32, h // 2, 64, 1, 2), (128, 64, h // 4, 64, 3, 1)]


COMMON = [(1, 64, 56, 64, 3, 1), (8, 64, 56, 64, 3, 1), (1, 128, 28, 128, 3, 1),
          (8, 128, 28, 128, 3, 1), (32, 128, 28, 128, 3, 1), (1, 256, 14, 256, 3, 1),
          (8, 256, 14, 256, 3, 1), (1, 512, 7, 512, 3, 1), (8, 512, 7, 512, 3, 1),
          (16, 32, 32, 32, 3, 1), (64, 16, 32, 16, 3, 1), (8, 3, 32, 32, 3, 1),
          (32, 64, 32, 64, 3, 1), (2, 64, 112, 64, 3, 1), (8, 64, 56, 128, 3, 2),
          (8, 128, 28, 256, 3, 2), (1, 64, 56, 128, 3, 2), (32, 32, 32, 64, 3, 2),
          (8, 64, 56, 256, 1, 1), (8, 256, 56, 64, 1, 1), (8, 512, 28, 128, 1, 1),
          (1, 1024, 14, 256, 1, 1), (32, 256, 14, 256, 1, 1), (128, 64, 8, 256, 1, 1),
          (8, 256, 56, 512, 1, 2), (8, 3, 224, 64, 7, 2), (1, 3, 224, 64, 7, 2),
          (8, 32, 56, 64, 7, 1), (16, 64, 14, 64, 5, 1), (32, 32, 28, 64, 5, 1),
          # 4x4 stride 2 (DCGAN, U-Net, a conv_transpose2d's weight gradient): the twenty-third
          # session's one regression hid there
          (16, 64, 32, 128, 4, 2), (64, 64, 32, 128, 4, 2)]

SETS = {"resnet20": resnet20_layers(32) + resnet20_layers(28), "common": COMMON}


def parse_shape(text):
    m = re.fullmatch(r"(\d+)x(\d+)x(\d+)x(\d+)k(\d+)s(\d+)", text)
    if not m:
        sys.exit(f"plan_sweep: expected a shape like 128x64x8x64k3s1 (NxCxHxK, kernel, stride), "
                 f"but got {text!r}")
    return tuple(int(v) for v in m.groups())


def call(direction, x, w, g, stride, pad):
    if direction == "forward":
        return lambda: F.conv2d(x, w, None, stride, pad)
    return lambda: F.conv2d_backward(g, x, w, None, stride, pad,
                                     input_grad=direction == "input_grad")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--direction", default="weight_grad",
                    help="forward, input_grad or weight_grad, or several, comma-separated")
    ap.add_argument("--algorithms", required=True,
                    help="comma-separated row names, or all (every row that applies)")
    ap.add_argument("--shapes", default="", help="comma-separated NxCxHxKk<R>s<S>")
    ap.add_argument("--set", choices=sorted(SETS), help="a named list of shapes")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    a = ap.parse_args()
    shapes = [parse_shape(t) for t in a.shapes.split(",") if t] + SETS.get(a.set, [])
    if not shapes:
        sys.exit("plan_sweep: give --shapes or --set")
    directions = a.direction.split(",")
    for d in directions:
        if d not in ("forward", "input_grad", "weight_grad"):
            sys.exit(f"plan_sweep: expected directions forward, input_grad or weight_grad, but "
                     f"got {d!r}")
        known = _core.conv2d_algorithms(d)
        for name in a.algorithms.split(","):
            if name != "all" and name not in known:
                sys.exit(f"plan_sweep: no {d} algorithm {name!r}; the table has {known}")
    convkit.set_num_threads(a.threads)
    for d in directions:
        sweep(d, a.algorithms, shapes, a.rounds, a.threads)


def sweep(direction, algorithms, shapes, rounds, threads):
    rng = np.random.default_rng(0)
    every = algorithms == "all"
    print(f"{direction}, {threads} threads, {rounds} interleaved rounds, medians (ms); "
          f"ISA {_core.isa()}")
    if every:
        print("| shape (N, C, H, K, kernel, stride) | plan | fastest | every row that applies |")
        print("| --- | --- | --- | --- |")
    else:
        algs = algorithms.split(",")
        print("| shape (N, C, H, K, kernel, stride) | plan | " + " | ".join(algs) + " |")
        print("| --- | --- | " + " | ".join("---" for _ in algs) + " |")
    # (the backward's input gradient includes the weight gradient: conv2d_backward gives both)
    for n, c, h, k, r, s in shapes:
        p = r // 2
        x = rng.standard_normal((n, c, h, h)).astype(np.float32)
        w = rng.standard_normal((k, c, r, r)).astype(np.float32)
        g = rng.standard_normal(F.conv2d(x, w, None, s, p).shape).astype(np.float32)
        args = (x.shape, w.shape, s, s, p, p, 1, 1, 1)
        plan = _core.conv2d_plan(*args)[direction]
        algs = ([m for m in _core.conv2d_algorithms(direction) if m != "rows"] if every
                else algorithms.split(","))
        runs = [m for m in algs if _core.conv2d_applies(direction, m, *args)]
        f = call(direction, x, w, g, s, p)
        times = {m: [] for m in runs}
        try:
            for m in runs:  # warm-up
                _core.conv2d_force(direction, m)
                f()
            for _ in range(rounds):
                for m in runs:
                    _core.conv2d_force(direction, m)
                    t = time.perf_counter()
                    f()
                    times[m].append(time.perf_counter() - t)
        finally:
            _core.conv2d_force(direction, "")
        med = {m: statistics.median(v) * 1e3 for m, v in times.items()}
        shape = f"({n}, {c}, {h}, {k}, {r}, {s})"
        if not every:
            cells = [f"{med[m]:.3f}" if m in med else "-" for m in algs]
            print(f"| {shape} | {plan} | " + " | ".join(cells) + " |", flush=True)
            continue
        best = min(med, key=med.get)
        slow = " <<<" if med.get(plan, 0.0) > 1.15 * med[best] else ""
        rows = ", ".join(f"{m} {v:.3f}" for m, v in med.items())
        print(f"| {shape} | {plan} {med.get(plan, float('nan')):.3f} | {best} {med[best]:.3f}"
              f"{slow} | {rows} |", flush=True)


if __name__ == "__main__":
    main()
