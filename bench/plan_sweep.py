#!/usr/bin/env python
"""Convolution algorithms forced against each other on a list of shapes, to set or check the
plan tables' rules (cpp/ops/conv2d/plan.cpp): per shape the row the plan chooses and the median
time of each algorithm given (forced with `_core.conv2d_force`), interleaved call by call in
one process, same thread count. Shapes the algorithm does not apply to print "-".

    python bench/plan_sweep.py --direction weight_grad --algorithms winograd3_lanes,kvec,winograd3 \\
        --shapes 128x64x8x64k3s1,32x256x7x256k3s1 [--threads 2] [--rounds 7]

A shape is NxCxHxK, then k<kernel> and s<stride> (H = W, padding kernel // 2). --set resnet20
gives ResNet-20's layers at batch 128 on 32x32 and on 28x28 (Fashion-MNIST).
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


SETS = {"resnet20": resnet20_layers(32) + resnet20_layers(28)}


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
    ap.add_argument("--direction", choices=["forward", "input_grad", "weight_grad"],
                    default="weight_grad")
    ap.add_argument("--algorithms", required=True, help="comma-separated row names")
    ap.add_argument("--shapes", default="", help="comma-separated NxCxHxKk<R>s<S>")
    ap.add_argument("--set", choices=sorted(SETS), help="a named list of shapes")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    a = ap.parse_args()
    shapes = [parse_shape(t) for t in a.shapes.split(",") if t] + SETS.get(a.set, [])
    if not shapes:
        sys.exit("plan_sweep: give --shapes or --set")
    algs = a.algorithms.split(",")
    known = _core.conv2d_algorithms(a.direction)
    for name in algs:
        if name not in known:
            sys.exit(f"plan_sweep: no {a.direction} algorithm {name!r}; the table has {known}")
    convkit.set_num_threads(a.threads)
    rng = np.random.default_rng(0)
    print(f"{a.direction}, {a.threads} threads, {a.rounds} interleaved rounds, medians (ms); "
          f"ISA {_core.isa()}")
    print("| shape (N, C, H, K, kernel, stride) | plan | " + " | ".join(algs) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in algs) + " |")
    # (the backward's input gradient includes the weight gradient: conv2d_backward gives both)
    for n, c, h, k, r, s in shapes:
        p = r // 2
        x = rng.standard_normal((n, c, h, h)).astype(np.float32)
        w = rng.standard_normal((k, c, r, r)).astype(np.float32)
        g = rng.standard_normal(F.conv2d(x, w, None, s, p).shape).astype(np.float32)
        args = (x.shape, w.shape, s, s, p, p, 1, 1, 1)
        plan = _core.conv2d_plan(*args)[a.direction]
        runs = [m for m in algs if _core.conv2d_applies(a.direction, m, *args)]
        f = call(a.direction, x, w, g, s, p)
        times = {m: [] for m in runs}
        try:
            for m in runs:  # warm-up
                _core.conv2d_force(a.direction, m)
                f()
            for _ in range(a.rounds):
                for m in runs:
                    _core.conv2d_force(a.direction, m)
                    t = time.perf_counter()
                    f()
                    times[m].append(time.perf_counter() - t)
        finally:
            _core.conv2d_force(a.direction, "")
        cells = [f"{statistics.median(times[m]) * 1e3:.3f}" if m in times else "-" for m in algs]
        print(f"| ({n}, {c}, {h}, {k}, {r}, {s}) | {plan} | " + " | ".join(cells) + " |",
              flush=True)


if __name__ == "__main__":
    main()
