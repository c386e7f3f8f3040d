#!/usr/bin/env python
"""The convolution shapes of conv_general.py and the batch-norm cases of blocks.py timed warm:
for each case the two implementations alternate over rounds; in each round, 3 untimed calls and
then the median of back-to-back calls. The other scripts pause 20 ms before each sample (so that
the other library's OpenMP threads stop spinning), which on a VM lets the second vCPU go idle
and runs the next milliseconds slow for both libraries (bench/RESULTS.md, seventh session); this
script measures the state a training loop runs in.

    python bench/warm.py --threads 2 --rounds 7 --calls 15
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import convkit  # noqa: E402

try:
    import torch  # noqa: E402
except ImportError:
    sys.exit("bench/warm.py needs PyTorch: pip install '.[bench]'")

import blocks  # noqa: E402
import conv_general  # noqa: E402


def back_to_back(f, calls):
    ts = []
    for _ in range(calls):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def warm(torch_fn, convkit_fn, rounds, calls):
    """Median ms of each over rounds, the two alternated."""
    got = {"t": [], "c": []}
    for _ in range(rounds):
        for k, f in (("t", torch_fn), ("c", convkit_fn)):
            for _ in range(3):
                f()
            got[k].append(back_to_back(f, calls))
    return statistics.median(got["t"]) * 1e3, statistics.median(got["c"]) * 1e3


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=15)
    a = ap.parse_args()
    convkit.set_num_threads(a.threads)
    torch.set_num_threads(a.threads)
    rng = np.random.default_rng(0)
    print(f"threads={a.threads}, torch {torch.__version__}, convkit {convkit.__version__}\n")
    print("| case | PyTorch ms | convkit ms | PyTorch/convkit |")
    print("| --- | --- | --- | --- |")
    rows = []
    for sh in conv_general.SHAPES:
        _, fns = conv_general.impls(sh, rng)
        for part in ("fwd", "fwd+bwd"):
            rows.append((f"{sh[0]} {sh[1]} {part}", fns["torch " + part], fns["convkit " + part]))
    for shape in ((128, 16, 32, 32), (128, 64, 8, 8)):
        name, ck, th = blocks.bn_case(shape)
        rows.append((name, th, ck))
    for name, t, c in rows:
        mt, mc = warm(t, c, a.rounds, a.calls)
        print(f"| {name} | {mt:.3f} | {mc:.3f} | {mt / mc:.2f} |", flush=True)


if __name__ == "__main__":
    main()
