#!/usr/bin/env python
"""The blocks of modern CNNs against PyTorch eager, same process, same thread count,
interleaved rounds, medians (bench/timing.py): batch_norm forward+backward, adaptive/global
average pooling and the new pooling modes (forward+backward), and ResNet-20 (training step
through the layer API at batch 128 on 3x32x32, inference at batch 1 and 128).

    python bench/blocks.py [--threads 2] [--repeats 15] [--json out.json]
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
import convkit  # noqa: E402
import convkit.functional as F  # noqa: E402
from convkit import models, nn, optim  # noqa: E402
from timing import measure  # noqa: E402
from torch_twins import resnet20 as torch_resnet20  # noqa: E402

TF = torch.nn.functional


def bn_case(shape):
    C = shape[1]
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)
    w, b = np.ones(C, np.float32), np.zeros(C, np.float32)
    rm, rv = np.zeros(C, np.float32), np.ones(C, np.float32)
    xt = torch.tensor(x, requires_grad=True)
    gt = torch.tensor(g)
    bn = torch.nn.BatchNorm2d(C)

    def ck():
        F.batch_norm(x, rm, rv, w, b, True)
        F.batch_norm_backward(g, x, rm, rv, w, b, True)

    def th():
        xt.grad = None
        bn(xt).backward(gt)
    return f"batch_norm f+b {shape}", ck, th


def pool_case(name, shape, ck_f, ck_b, th_f):
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    y = ck_f(x)
    g = np.ones_like(y[0] if isinstance(y, tuple) else y)
    xt = torch.tensor(x, requires_grad=True)
    gt = torch.tensor(g)

    def ck():
        ck_f(x)
        ck_b(g, x)

    def th():
        xt.grad = None
        out = th_f(xt)
        (out[0] if isinstance(out, tuple) else out).backward(gt)
    return f"{name} f+b {shape}", ck, th


def resnet_cases():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((128, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, 128)
    m = models.resnet20()
    tm = torch_resnet20()
    crit = nn.CrossEntropyLoss()
    opt = optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
    topt = torch.optim.SGD(tm.parameters(), lr=0.01, momentum=0.9)
    xt, yt = torch.tensor(x), torch.tensor(y)

    def ck_step():
        m.train()
        loss = crit(m(x), y)
        opt.zero_grad()
        m.backward(crit.backward(), input_grad=False)
        opt.step()

    def th_step():
        tm.train()
        loss = TF.cross_entropy(tm(xt), yt)
        topt.zero_grad()
        loss.backward()
        topt.step()
    out = [("resnet20 train step b128", ck_step, th_step)]
    for n in (1, 128):
        xi, xti = x[:n], xt[:n]

        def ck_inf(xi=xi):
            m.eval()
            m(xi)

        def th_inf(xti=xti):
            tm.eval()
            with torch.no_grad():
                tm(xti)
        out.append((f"resnet20 inference b{n}", ck_inf, th_inf))
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    convkit.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    cases = [bn_case((128, 16, 32, 32)), bn_case((128, 64, 8, 8)),
             pool_case("global avg pool", (128, 64, 8, 8), lambda x: F.adaptive_avg_pool2d(x, 1),
                       lambda g, x: F.adaptive_avg_pool2d_backward(g, x, 1),
                       lambda x: TF.adaptive_avg_pool2d(x, 1)),
             pool_case("adaptive avg pool 5x5", (64, 32, 23, 23),
                       lambda x: F.adaptive_avg_pool2d(x, 5),
                       lambda g, x: F.adaptive_avg_pool2d_backward(g, x, 5),
                       lambda x: TF.adaptive_avg_pool2d(x, 5)),
             pool_case("adaptive max pool 4x4", (64, 32, 23, 23),
                       lambda x: F.adaptive_max_pool2d(x, 4),
                       lambda g, x: F.adaptive_max_pool2d_backward(g, x, 4),
                       lambda x: TF.adaptive_max_pool2d(x, 4)),
             pool_case("max pool 3/2 ceil dil", (64, 32, 32, 32),
                       lambda x: F.max_pool2d(x, 3, 2, 1, 2, ceil_mode=True),
                       lambda g, x: F.max_pool2d_backward(g, x, 3, 2, 1, 2, ceil_mode=True),
                       lambda x: TF.max_pool2d(x, 3, 2, 1, 2, ceil_mode=True)),
             pool_case("avg pool 3/2 ceil excl-pad", (64, 32, 32, 32),
                       lambda x: F.avg_pool2d(x, 3, 2, 1, True, False),
                       lambda g, x: F.avg_pool2d_backward(g, x, 3, 2, 1, True, False),
                       lambda x: TF.avg_pool2d(x, 3, 2, 1, True, False)),
             ] + resnet_cases()
    rows = []
    print(f"threads {args.threads}, {args.repeats} interleaved rounds, medians")
    print(f"{'case':<44}{'convkit ms':>12}{'PyTorch ms':>12}{'ratio':>8}")
    for name, ck, th in cases:
        r = measure({"convkit": ck, "pytorch": th}, args.repeats)
        ratio = r["pytorch"] / r["convkit"]
        rows.append(dict(case=name, convkit_ms=r["convkit"] * 1e3, pytorch_ms=r["pytorch"] * 1e3,
                         ratio=ratio))
        print(f"{name:<44}{r['convkit'] * 1e3:12.3f}{r['pytorch'] * 1e3:12.3f}{ratio:8.2f}",
              flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
