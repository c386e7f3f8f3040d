#!/usr/bin/env python
"""PyTorch twin of examples/train_cifar10.py: the identical recipe (per-channel standardisation,
crop + flip augmentation from the same convkit.data function and seeds, SGD momentum 0.9 with
weight decay 5e-4 on conv/linear weights, per-step cosine learning rate, batch 128) and the same
ResNet-20 tree; evaluation per epoch outside the timed part.

    python bench/train_cifar10_torch.py --dataset fashion-mnist --epochs 15 --threads 2
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from torch_twins import resnet20  # noqa: E402

from convkit import data  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dataset", choices=["cifar10", "fashion-mnist"], default="fashion-mnist")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--pad", type=int, default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    pad = args.pad if args.pad is not None else (2 if args.dataset == "fashion-mnist" else 4)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.dataset == "cifar10":
        (x, y), (xt, yt) = data.load_cifar10(split="train"), data.load_cifar10(split="test")
    else:
        (x, y) = data.load_mnist(None, "train", "fashion-mnist", quiet=True)
        (xt, yt) = data.load_mnist(None, "test", "fashion-mnist", quiet=True)
    x, mean, std = data.standardize(x)
    xt, _, _ = data.standardize(xt, mean, std)
    model = resnet20(in_channels=x.shape[1])
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": 5e-4},
                           {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, momentum=0.9)
    crit = torch.nn.CrossEntropyLoss()
    steps = math.ceil(len(x) / args.batch_size)
    total, step = args.epochs * steps, 0
    rng = np.random.default_rng(args.seed)
    xt_t, yt_t = torch.from_numpy(xt), torch.from_numpy(yt)
    hist = {"seconds": [], "val_accuracy": []}
    for epoch in range(args.epochs):
        t0 = time.perf_counter()
        xa = data.random_crop_flip(x, pad, seed=int(rng.integers(2**31)))
        model.train()
        for xb, yb in data.batches(xa, y, args.batch_size, seed=int(rng.integers(2**31))):
            for g in opt.param_groups:
                g["lr"] = 0.5 * args.lr * (1 + math.cos(math.pi * step / total))
            loss = crit(model(torch.from_numpy(xb)), torch.from_numpy(yb))
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
        hist["seconds"].append(time.perf_counter() - t0)
        model.eval()
        with torch.no_grad():
            correct = sum(int((model(xt_t[i:i + 1000]).argmax(1) == yt_t[i:i + 1000]).sum())
                          for i in range(0, len(xt), 1000))
        hist["val_accuracy"].append(correct / len(xt))
        print(f"epoch {epoch + 1}: test acc {hist['val_accuracy'][-1]:.4f}, "
              f"{hist['seconds'][-1]:.1f} s", file=sys.stderr)
    print(json.dumps({"framework": "pytorch", "test_accuracy": hist["val_accuracy"][-1],
                      "train_seconds": sum(hist["seconds"]), "history": hist}))


if __name__ == "__main__":
    main()
