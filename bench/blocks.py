#!/usr/bin/env python
"""The blocks of modern CNNs against PyTorch eager, same process, same thread count,
interleaved rounds, medians (bench/timing.py): batch_norm forward+backward, adaptive/global
average pooling and the new pooling modes (forward+backward), and ResNet-20 (training step
through the layer API at batch 128 on 3x32x32, inference at batch 1 and 128).

``--layers`` instead times each kind of ResNet-20 layer on its own at batch 128 (3x32x32
input), forward+backward or (``--eval``) forward, times the number of such layers in the
network: where the network's ratio comes from.

    python bench/blocks.py [--threads 2] [--repeats 15] [--json out.json]
    python bench/blocks.py --layers [--eval] [--threads 2] [--repeats 9]
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


def layer_cases(train):
    """(name, count in ResNet-20, convkit, PyTorch) for each kind of layer at batch 128 on
    3x32x32: forward+backward (no input gradient for the stem, as in the step) or, with
    ``train`` False, eval-mode forward."""
    rng = np.random.default_rng(0)

    def conv(c, k, h, r=3, stride=1, count=1, stem=False):
        def make(lib):
            return lib.Conv2d(c, k, r, stride=stride, padding=r // 2, bias=False)
        kind = f"{r}x{r} {'stem ' if stem else ''}{c}->{k}{' s2' if stride > 1 else ''} @{h}"
        return kind, count, (c, h), make, not stem

    def bn_relu(c, h, count):
        def make(lib):
            return lib.Sequential(lib.BatchNorm2d(c), lib.ReLU())
        return f"BN + ReLU {c} @{h}", count, (c, h), make, True
    kinds = [conv(3, 16, 32, stem=True), conv(16, 16, 32, count=6), conv(16, 32, 32, stride=2),
             conv(16, 32, 32, r=1, stride=2), conv(32, 32, 16, count=5),
             conv(32, 64, 16, stride=2), conv(32, 64, 16, r=1, stride=2),
             conv(64, 64, 8, count=5), bn_relu(16, 32, 7), bn_relu(32, 16, 7), bn_relu(64, 8, 7)]
    out = []
    for name, count, (c, h), make, input_grad in kinds:
        x = rng.standard_normal((128, c, h, h)).astype(np.float32)
        m, tm = make(nn), make(torch.nn)
        g = rng.standard_normal(m(x).shape).astype(np.float32)
        xt, gt = torch.tensor(x, requires_grad=train and input_grad), torch.tensor(g)
        if not train:
            m.eval()
            tm.eval()

        def ck(m=m, x=x, g=g, input_grad=input_grad):
            m(x)
            if train:
                m.backward(g, input_grad=input_grad)

        def th(tm=tm, xt=xt, gt=gt):
            if not train:
                with torch.no_grad():
                    tm(xt)
                return
            xt.grad = None
            for q in tm.parameters():
                q.grad = None
            tm(xt).backward(gt)
        out.append((name, count, ck, th))
    return out


def print_layers(args):
    what = "eval forward" if args.eval else "forward+backward"
    print(f"ResNet-20's layers at batch 128 (3x32x32), {what}, threads {args.threads}, "
          f"{args.repeats} interleaved rounds, medians; x n: times the n such layers")
    print("| layer | n | convkit ms | PyTorch ms | ratio | convkit x n | PyTorch x n |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    tot_ck = tot_th = 0.0
    for name, count, ck, th in layer_cases(not args.eval):
        r = measure({"convkit": ck, "pytorch": th}, args.repeats)
        a, b = r["convkit"] * 1e3, r["pytorch"] * 1e3
        tot_ck, tot_th = tot_ck + count * a, tot_th + count * b
        print(f"| {name} | {count} | {a:.2f} | {b:.2f} | {b / a:.2f} | {count * a:.1f} | "
              f"{count * b:.1f} |", flush=True)
    print(f"| all | | | | {tot_th / tot_ck:.2f} | {tot_ck:.1f} | {tot_th:.1f} |")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--json", default=None)
    p.add_argument("--layers", action="store_true", help="ResNet-20's layers one by one")
    p.add_argument("--eval", action="store_true", help="with --layers: eval-mode forward")
    args = p.parse_args()
    convkit.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    if args.layers:
        print_layers(args)
        return
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
