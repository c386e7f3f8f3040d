#!/usr/bin/env python
"""The ops outside the convolution tables against PyTorch eager at common shapes: softmax and
log_softmax over the last axis and over the channels of NCHW, the losses, batch norm of
(N, C) input, max_unpool2d, the activations on 4M values, and the pooling forms with their
backward. Same process, same thread count, interleaved rounds, medians (bench/timing.py);
ratio = PyTorch / convkit. (Until the twelfth session no table held these rows, and several ran
at 0.1-0.3x PyTorch unseen.)

    python bench/ops.py [--threads 2] [--repeats 11] [--json out.json]
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
import convkit  # noqa: E402
import convkit.functional as F  # noqa: E402
from convkit import nn  # noqa: E402
from timing import measure  # noqa: E402

TF = torch.nn.functional


def _fb(torch_fn, *arrays, grad=None):
    """PyTorch forward+backward of torch_fn on copies of arrays that require grad."""
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    g = None if grad is None else torch.tensor(grad)

    def run():
        for t in ts:
            t.grad = None
        out = torch_fn(*ts)
        out.backward(g if out.dim() else None)
    return run


def _layer_fb(layer, x, g):
    """convkit's forward+backward through a layer."""
    def run():
        layer(x)
        layer.backward(g)
    return run


def cases():
    rng = np.random.default_rng(0)
    out = []
    z = rng.standard_normal((512, 1000)).astype(np.float32)
    gz = rng.standard_normal(z.shape).astype(np.float32)
    zt = torch.tensor(z)
    labels = rng.integers(0, 1000, 512)
    lt = torch.tensor(labels)
    out += [
        ("softmax (512, 1000)", lambda: F.softmax(z, 1), lambda: torch.softmax(zt, 1)),
        ("softmax f+b (512, 1000)", lambda: (F.softmax(z, 1), F.softmax_backward(gz, z, 1)),
         _fb(lambda a: torch.softmax(a, 1), z, grad=gz)),
        ("log_softmax (512, 1000)", lambda: F.log_softmax(z, 1),
         lambda: torch.log_softmax(zt, 1)),
        # the layers keep their output for the backward, as PyTorch's autograd does
        ("nn.Softmax f+b (512, 1000)", _layer_fb(nn.Softmax(1), z, gz),
         _fb(lambda a: torch.softmax(a, 1), z, grad=gz)),
        ("nn.LogSoftmax f+b (512, 1000)", _layer_fb(nn.LogSoftmax(1), z, gz),
         _fb(lambda a: torch.log_softmax(a, 1), z, grad=gz)),
        ("cross_entropy f+b (512, 1000)",
         lambda: (F.cross_entropy(z, labels), F.cross_entropy_backward(1.0, z, labels)),
         _fb(lambda a: TF.cross_entropy(a, lt), z)),
    ]
    s = rng.standard_normal((32, 21, 64, 64)).astype(np.float32)
    gs = rng.standard_normal(s.shape).astype(np.float32)
    st = torch.tensor(s)
    out += [
        ("softmax axis 1 (32, 21, 64, 64)", lambda: F.softmax(s, 1), lambda: torch.softmax(st, 1)),
        ("log_softmax axis 1 (32, 21, 64, 64)", lambda: F.log_softmax(s, 1),
         lambda: torch.log_softmax(st, 1)),
        ("softmax axis 1 f+b (32, 21, 64, 64)",
         lambda: (F.softmax(s, 1), F.softmax_backward(gs, s, 1)),
         _fb(lambda a: torch.softmax(a, 1), s, grad=gs)),
        ("nn.Softmax(1) f+b (32, 21, 64, 64)", _layer_fb(nn.Softmax(1), s, gs),
         _fb(lambda a: torch.softmax(a, 1), s, grad=gs)),
    ]
    big = rng.standard_normal((4, 1024, 1024)).astype(np.float32)
    bt = torch.tensor(big)
    tgt = (rng.random(big.shape) > 0.5).astype(np.float32)
    tt = torch.tensor(tgt)
    out += [
        ("bce_with_logits (4M)", lambda: F.binary_cross_entropy_with_logits(big, tgt),
         lambda: TF.binary_cross_entropy_with_logits(bt, tt)),
        ("bce_with_logits f+b (4M)",
         lambda: (F.binary_cross_entropy_with_logits(big, tgt),
                  F.binary_cross_entropy_with_logits_backward(1.0, big, tgt)),
         _fb(lambda a: TF.binary_cross_entropy_with_logits(a, tt), big)),
        ("mse f+b (4M)", lambda: (F.mse_loss(big, tgt), F.mse_loss_backward(1.0, big, tgt)),
         _fb(lambda a: TF.mse_loss(a, tt), big)),
    ]
    for name, f, tf in (("relu", F.relu, torch.relu), ("sigmoid", F.sigmoid, torch.sigmoid),
                        ("tanh", F.tanh, torch.tanh), ("elu", F.elu, TF.elu)):
        fb = getattr(F, name + "_backward")
        out += [(f"{name} (4M)", lambda f=f: f(big), lambda tf=tf: tf(bt)),
                (f"{name} f+b (4M)", lambda f=f, fb=fb: (f(big), fb(big, big)),
                 _fb(tf, big, grad=big))]
    for shape in ((256, 1024), (64, 128, 100)):
        x = rng.standard_normal(shape).astype(np.float32)
        g = rng.standard_normal(shape).astype(np.float32)
        m, tm = nn.BatchNorm1d(shape[1]), torch.nn.BatchNorm1d(shape[1])
        xt, gt = torch.tensor(x, requires_grad=True), torch.tensor(g)

        def ck(m=m, x=x, g=g):
            m(x)
            m.backward(g)

        def th(tm=tm, xt=xt, gt=gt):
            xt.grad = None
            tm(xt).backward(gt)
        out.append((f"BatchNorm1d f+b {shape}", ck, th))
    a = rng.standard_normal((32, 64, 28, 28)).astype(np.float32)
    at = torch.tensor(a)
    y, idx = F.max_pool2d(a, 2, return_indices=True)
    yt, it = TF.max_pool2d(at, 2, return_indices=True)
    y3 = F.max_pool2d(a, 3, 2, 1)
    out += [
        ("max_unpool2d (32, 64, 14, 14)", lambda: F.max_unpool2d(y, idx, 2),
         lambda: TF.max_unpool2d(yt, it, 2)),
        ("max_pool2d 2x2 f+b (32, 64, 28, 28)",
         lambda: (F.max_pool2d(a, 2), F.max_pool2d_backward(y, a, 2)),
         _fb(lambda v: TF.max_pool2d(v, 2), a, grad=y)),
        ("max_pool2d 3/2/1 f+b (32, 64, 28, 28)",
         lambda: (F.max_pool2d(a, 3, 2, 1), F.max_pool2d_backward(y3, a, 3, 2, 1)),
         _fb(lambda v: TF.max_pool2d(v, 3, 2, 1), a, grad=y3)),
    ]
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=11)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    convkit.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    print(f"threads {args.threads}, {args.repeats} interleaved rounds, medians, ISA "
          f"{convkit._core.isa()}")
    print("| op | convkit ms | PyTorch ms | PyTorch / convkit |")
    print("| --- | --- | --- | --- |")
    rows = []
    for name, ck, th in cases():
        r = measure({"convkit": ck, "pytorch": th}, args.repeats)
        c, t = r["convkit"] * 1e3, r["pytorch"] * 1e3
        rows.append({"op": name, "convkit_ms": c, "pytorch_ms": t, "ratio": t / c})
        print(f"| {name} | {c:.3f} | {t:.3f} | {t / c:.2f} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
