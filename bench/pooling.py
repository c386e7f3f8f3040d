#!/usr/bin/env python
"""Max and average pooling against PyTorch's CPU backend on the pooling layers of common
networks, from small planes to large: same process, same thread count, interleaved samples,
medians (bench/timing.py). Each case runs convkit's choice of kernel and, for comparison, the
plane-by-plane kernel forced (`_core.pool2d_force("planes")`, what every size ran before the
16-planes-in-the-lanes kernel); ratios are PyTorch / convkit (above 1: convkit is faster).

    python bench/pooling.py [--threads 2] [--repeats 9] [--markdown out.md]
"""
import argparse
import os
import statistics
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import convkit  # noqa: E402
import convkit.functional as F  # noqa: E402
from convkit import _core  # noqa: E402
from timing import sample  # noqa: E402

try:
    import torch  # noqa: E402
except ImportError:
    sys.exit("bench/pooling.py needs PyTorch: pip install '.[bench]'")

TF = torch.nn.functional

# name, (N, C, H, W), op, kernel, stride, padding, count_include_pad
CASES = [
    ("ResNet stem max 3/2/1", (16, 64, 112, 112), "max", 3, 2, 1, True),
    ("max 3/2/1", (32, 64, 56, 56), "max", 3, 2, 1, True),
    ("Inception branch max 3/1/1", (32, 192, 28, 28), "max", 3, 1, 1, True),
    ("Inception branch max 3/1/1", (32, 256, 14, 14), "max", 3, 1, 1, True),
    ("Inception reduction max 3/2/0", (32, 480, 14, 14), "max", 3, 2, 0, True),
    ("max 3/2/1", (64, 64, 8, 8), "max", 3, 2, 1, True),
    ("max 3/2/1", (8, 64, 7, 7), "max", 3, 2, 1, True),
    ("LeNet max 2/2/0", (64, 16, 10, 10), "max", 2, 2, 0, True),
    ("VGG max 2/2/0", (16, 512, 14, 14), "max", 2, 2, 0, True),
    ("Inception branch avg 3/1/1 excl-pad", (32, 192, 28, 28), "avg", 3, 1, 1, False),
    ("Inception branch avg 3/1/1 excl-pad", (32, 256, 14, 14), "avg", 3, 1, 1, False),
    ("GoogLeNet aux avg 5/3/0", (32, 512, 14, 14), "avg", 5, 3, 0, True),
    ("DenseNet transition avg 2/2/0", (32, 128, 28, 28), "avg", 2, 2, 0, True),
    ("avg 3/2/1", (64, 64, 8, 8), "avg", 3, 2, 1, True),
    ("avg 3/2/1", (8, 64, 7, 7), "avg", 3, 2, 1, True),
]


def forced(path, fn):
    def run():
        _core.pool2d_force(path)
        try:
            fn()
        finally:
            _core.pool2d_force("")
    return run


def impls(case, rng):
    _, shape, op, k, s, p, cip = case
    x = rng.standard_normal(shape).astype(np.float32)
    if op == "max":
        cf = lambda: F.max_pool2d(x, k, s, p)  # noqa: E731
        y = cf()
        g = np.ones_like(y)
        cb = lambda: F.max_pool2d_backward(g, x, k, s, p)  # noqa: E731
        tf = lambda a: TF.max_pool2d(a, k, s, p)  # noqa: E731
    else:
        cf = lambda: F.avg_pool2d(x, k, s, p, count_include_pad=cip)  # noqa: E731
        y = cf()
        g = np.ones_like(y)
        cb = lambda: F.avg_pool2d_backward(g, x, k, s, p, count_include_pad=cip)  # noqa: E731
        tf = lambda a: TF.avg_pool2d(a, k, s, p, count_include_pad=cip)  # noqa: E731
    xt, gt = torch.from_numpy(x), torch.from_numpy(g)
    xg = xt.clone().requires_grad_()

    def t_fwd():
        with torch.no_grad():
            tf(xt)

    def t_fb():
        xg.grad = None
        tf(xg).backward(gt)

    def c_fb():
        cf()
        cb()
    return {"torch fwd": t_fwd, "convkit fwd": cf, "planes fwd": forced("planes", cf),
            "torch f+b": t_fb, "convkit f+b": c_fb, "planes f+b": forced("planes", c_fb)}


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--markdown", default=None)
    a = ap.parse_args()
    convkit.set_num_threads(a.threads)
    torch.set_num_threads(a.threads)
    rng = np.random.default_rng(0)
    lines = [f"threads={a.threads}, torch {torch.__version__}, convkit {convkit.__version__}, "
             "ratios PyTorch / convkit (planes: the plane-by-plane kernel forced)", "",
             "| layer | torch fwd ms | convkit fwd ms | ratio fwd (planes) | torch f+b ms | "
             "convkit f+b ms | ratio f+b (planes) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    print("\n".join(lines), flush=True)
    for case in CASES:
        m = {k: statistics.median(v) for k, v in sample(impls(case, rng), a.repeats).items()}
        line = (f"| {case[0]} {case[1]} | {m['torch fwd'] * 1e3:.3f} | "
                f"{m['convkit fwd'] * 1e3:.3f} | {m['torch fwd'] / m['convkit fwd']:.2f} "
                f"({m['torch fwd'] / m['planes fwd']:.2f}) | {m['torch f+b'] * 1e3:.3f} | "
                f"{m['convkit f+b'] * 1e3:.3f} | {m['torch f+b'] / m['convkit f+b']:.2f} "
                f"({m['torch f+b'] / m['planes f+b']:.2f}) |")
        lines.append(line)
        print(line, flush=True)
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
