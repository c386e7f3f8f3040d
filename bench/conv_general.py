#!/usr/bin/env python
"""convkit's general convolutions (depthwise, grouped, dilated, transposed) against PyTorch's CPU
backend: same process, same thread count, interleaved samples, medians over rounds. Prints, per
shape, the median times, the ratio PyTorch / convkit (above 1: convkit is faster) for the
forward and for forward + backward (input and weight gradients), and convkit's GFLOP/s (direct
method multiply-adds).

    python bench/conv_general.py --threads 2 --repeats 15 --rounds 3 [--markdown out.md]

With --set layers, the layers of the networks users bring instead (ResNet-18/50 and VGG late
stages at batch 1 and 8, their downsampling layers, MobileNet's 5x5 depthwise, grouped layers
of many channels a group, dense 5x5 layers, a 1x1 layer on 8x8 planes at batch 128, ResNet-20's
16 -> 32 downsampling layer), without targets.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import convkit  # noqa: E402
import convkit.functional as F  # noqa: E402
from timing import sample  # noqa: E402

try:
    import torch  # noqa: E402
except ImportError:
    sys.exit("bench/conv_general.py needs PyTorch: pip install '.[bench]'")

# name, (N, C, H, W), K, kernel, stride, padding, dilation, groups, transposed, fwd target,
# fwd+bwd target (issue 11)
SHAPES = [
    ("depthwise", (8, 144, 28, 28), 144, 3, 1, 1, 1, 144, False, 3.0, 3.0),
    ("depthwise strided", (8, 96, 56, 56), 96, 3, 2, 1, 1, 96, False, 2.0, 3.0),
    ("grouped", (8, 128, 28, 28), 128, 3, 1, 1, 1, 32, False, 2.0, 2.0),
    ("dilated", (4, 64, 56, 56), 64, 3, 1, 2, 2, 1, False, 1.0, 1.0),
    ("transposed", (16, 128, 16, 16), 64, 4, 2, 1, 1, 1, True, 1.5, 1.5),
]
LAYERS = [
    ("3x3 deep", (1, 512, 7, 7), 512, 3, 1, 1, 1, 1, False, None, None),
    ("3x3 deep", (8, 512, 7, 7), 512, 3, 1, 1, 1, 1, False, None, None),
    ("3x3 deep", (1, 256, 14, 14), 256, 3, 1, 1, 1, 1, False, None, None),
    ("3x3 deep", (16, 256, 8, 8), 256, 3, 1, 1, 1, 1, False, None, None),
    ("3x3 s2", (1, 256, 14, 14), 512, 3, 2, 1, 1, 1, False, None, None),
    ("3x3 s2", (8, 128, 28, 28), 256, 3, 2, 1, 1, 1, False, None, None),
    ("1x1", (1, 2048, 7, 7), 512, 1, 1, 0, 1, 1, False, None, None),
    ("1x1", (8, 512, 7, 7), 2048, 1, 1, 0, 1, 1, False, None, None),
    ("1x1 s2", (8, 1024, 14, 14), 2048, 1, 2, 0, 1, 1, False, None, None),
    ("7x7 s2 stem", (8, 3, 224, 224), 64, 7, 2, 3, 1, 1, False, None, None),
    ("5x5 depthwise", (8, 576, 14, 14), 576, 5, 1, 2, 1, 576, False, None, None),
    ("grouped", (8, 256, 14, 14), 256, 3, 1, 1, 1, 8, False, None, None),
    ("grouped 5x5", (8, 48, 27, 27), 128, 5, 1, 2, 1, 2, False, None, None),
    ("5x5", (16, 64, 14, 14), 64, 5, 1, 2, 1, 1, False, None, None),
    ("5x5", (32, 128, 28, 28), 128, 5, 1, 2, 1, 1, False, None, None),
    ("1x1", (128, 64, 8, 8), 256, 1, 1, 0, 1, 1, False, None, None),
    ("3x3 s2", (128, 16, 32, 32), 32, 3, 2, 1, 1, 1, False, None, None),
    ("3x3 s2", (1, 128, 56, 56), 256, 3, 2, 1, 1, 1, False, None, None),
    ("5x5 s2", (32, 32, 56, 56), 64, 5, 2, 2, 1, 1, False, None, None),
]


def impls(shape, rng):
    name, (N, C, H, W), K, k, s, p, d, g, transposed, _, _ = shape
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    if transposed:
        w = rng.standard_normal((C, K // g, k, k)).astype(np.float32)
        tf, cf, cb = (torch.nn.functional.conv_transpose2d, F.conv_transpose2d,
                      F.conv_transpose2d_backward)
        kw = dict(stride=s, padding=p, groups=g, dilation=d)
    else:
        w = rng.standard_normal((K, C // g, k, k)).astype(np.float32)
        tf, cf, cb = torch.nn.functional.conv2d, F.conv2d, F.conv2d_backward
        kw = dict(stride=s, padding=p, dilation=d, groups=g)
    b = rng.standard_normal(K).astype(np.float32)
    y = cf(x, w, b, **kw)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    xt, wt, bt, gt = (torch.from_numpy(a) for a in (x, w, b, gy))
    xg, wg, bg = (t.clone().requires_grad_() for t in (xt, wt, bt))

    def t_fwd():
        with torch.no_grad():
            tf(xt, wt, bt, **kw)

    def t_fb():
        xg.grad = wg.grad = bg.grad = None
        tf(xg, wg, bg, **kw).backward(gt)

    def c_fb():
        cf(x, w, b, **kw)
        cb(gy, x, w, b, **kw)

    # multiply-adds of the direct method (transposed: each input element times its kernel)
    macs = x.size * (K // g) * k * k if transposed else y.size * (C // g) * k * k
    return macs, {"torch fwd": t_fwd, "convkit fwd": lambda: cf(x, w, b, **kw),
                  "torch fwd+bwd": t_fb, "convkit fwd+bwd": c_fb}


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--markdown", default=None)
    ap.add_argument("--set", choices=("targets", "layers"), default="targets",
                    help="the issue's target shapes (default) or common network layers")
    a = ap.parse_args()
    convkit.set_num_threads(a.threads)
    torch.set_num_threads(a.threads)
    rng = np.random.default_rng(0)
    cases = [(sh,) + impls(sh, rng) for sh in (SHAPES if a.set == "targets" else LAYERS)]
    samples = {i: {k: [] for k in fns} for i, (_, _, fns) in enumerate(cases)}
    for _ in range(a.rounds):  # rounds over the whole table: slow spells hit every row
        for i, (_, _, fns) in enumerate(cases):
            for k, v in sample(fns, max(3, a.repeats // a.rounds)).items():
                samples[i][k] += v
    lines = [f"threads={a.threads}, torch {torch.__version__}, convkit {convkit.__version__}",
             "",
             "| shape | torch fwd ms | convkit fwd ms | ratio fwd (target) | torch f+b ms | "
             "convkit f+b ms | ratio f+b (target) | convkit fwd GFLOP/s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    def target(t):
        return "" if t is None else f" (>= {t})"

    for i, (sh, macs, _) in enumerate(cases):
        m = {k: statistics.median(v) for k, v in samples[i].items()}
        rf, rb = m["torch fwd"] / m["convkit fwd"], m["torch fwd+bwd"] / m["convkit fwd+bwd"]
        lines.append(
            f"| {sh[0]} {sh[1]}->{sh[2]} k{sh[3]} s{sh[4]} p{sh[5]} d{sh[6]} g{sh[7]} | "
            f"{m['torch fwd'] * 1e3:.3f} | {m['convkit fwd'] * 1e3:.3f} | {rf:.2f}{target(sh[9])} "
            f"| {m['torch fwd+bwd'] * 1e3:.3f} | {m['convkit fwd+bwd'] * 1e3:.3f} | "
            f"{rb:.2f}{target(sh[10])} | {2 * macs / m['convkit fwd'] / 1e9:.1f} |")
    print("\n".join(lines))
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
