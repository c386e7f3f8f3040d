#!/usr/bin/env python
"""Train ResNet-20 (or LeNet-5) on CIFAR-10, or on Fashion-MNIST, with convkit.

    python examples/train_cifar10.py                               # CIFAR-10, ResNet-20
    python examples/train_cifar10.py --model lenet5 --epochs 20
    python examples/train_cifar10.py --dataset fashion-mnist --epochs 15 --json

CIFAR-10 is looked for (and downloaded into the cache) as ``data.load_cifar10`` says; when it is
neither on disk nor downloadable the script says how to get it and exits with status 1.

Recipe (bench/train_cifar10_torch.py is its PyTorch twin): images standardised per channel with
the training set's statistics; each epoch a fresh random crop (zero padding --pad, 4 for CIFAR-10
and 2 for Fashion-MNIST) and horizontal flip of every image; SGD with momentum 0.9 and weight
decay 5e-4; the learning rate follows a cosine from --lr to 0 over all steps; batch 128.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time

import numpy as np

import convkit
from convkit import data, models, nn, optim, training


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Train ResNet-20 or LeNet-5 with convkit.")
    p.add_argument("--dataset", choices=["cifar10", "fashion-mnist"], default="cifar10")
    p.add_argument("--data-dir", default=None, help="folder with the data (searched first)")
    p.add_argument("--model", choices=["resnet20", "lenet5"], default="resnet20")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--pad", type=int, default=None, help="crop padding (default 4, 2 for fashion-mnist)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", default=None, help="write the trained weights to this .npz file")
    p.add_argument("--json", action="store_true", help="end with a one-line JSON summary")
    args = p.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1:
        p.error("--epochs and --batch-size must be at least 1")
    if args.pad is None:
        args.pad = 2 if args.dataset == "fashion-mnist" else 4
    return args


def load(args, log):
    log(f"loading {args.dataset} ...")
    try:
        if args.dataset == "cifar10":
            return (data.load_cifar10(args.data_dir, "train", quiet=args.json),
                    data.load_cifar10(args.data_dir, "test", quiet=args.json))
        return (data.load_mnist(args.data_dir, "train", "fashion-mnist", quiet=True),
                data.load_mnist(args.data_dir, "test", "fashion-mnist", quiet=True))
    except FileNotFoundError as e:
        print(f"{e}\n\nTo train without CIFAR-10, try --dataset fashion-mnist "
              f"(apt-get install dataset-fashion-mnist, or it downloads).", file=sys.stderr)
        raise SystemExit(1) from None


def build(args, channels, side):
    if args.model == "resnet20":
        return models.resnet20(in_channels=channels)
    return models.lenet5(in_channels=channels, input_size=side)


def main(argv=None):
    args = parse_args(argv)
    log = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    if args.threads:
        convkit.set_num_threads(args.threads)
    convkit.manual_seed(args.seed)
    (x, y), (xt, yt) = load(args, log)
    x, mean, std = data.standardize(x)
    xt, _, _ = data.standardize(xt, mean, std)
    model = build(args, x.shape[1], x.shape[2])
    decay, no_decay = [], []  # weight decay on conv/linear weights, not on biases or BN
    for name, p in model.named_parameters():
        (decay if p.data.ndim > 1 else no_decay).append(p)
    opt = optim.SGD(decay, lr=args.lr, momentum=0.9, weight_decay=args.weight_decay)
    opt_nd = optim.SGD(no_decay, lr=args.lr, momentum=0.9)
    crit = nn.CrossEntropyLoss()
    log(f"{args.dataset}: {len(x)} train / {len(xt)} test images, {args.model} "
        f"({sum(p.data.size for p in model.parameters()):,} parameters); convkit "
        f"{convkit.__version__}, ISA {convkit._core.isa()}, {convkit.get_num_threads()} threads")
    steps_per_epoch = math.ceil(len(x) / args.batch_size)
    total, step = args.epochs * steps_per_epoch, 0
    history = {"loss": [], "accuracy": [], "val_loss": [], "val_accuracy": [], "seconds": []}
    rng = np.random.default_rng(args.seed)
    for epoch in range(args.epochs):
        t0 = time.perf_counter()
        xa = data.random_crop_flip(x, args.pad, seed=int(rng.integers(2**31)))
        model.train()
        loss_sum, correct = 0.0, 0
        for xb, yb in data.batches(xa, y, args.batch_size, seed=int(rng.integers(2**31))):
            lr = 0.5 * args.lr * (1 + math.cos(math.pi * step / total))
            opt.lr = opt_nd.lr = lr
            logits = model(xb)
            loss = crit(logits, yb)
            opt.zero_grad(), opt_nd.zero_grad()
            model.backward(crit.backward(), input_grad=False)
            opt.step(), opt_nd.step()
            loss_sum += loss * len(yb)
            correct += int((logits.argmax(1) == yb).sum())
            step += 1
        seconds = time.perf_counter() - t0
        ev = training.evaluate(model, xt, yt)
        for k, v in (("loss", loss_sum / len(x)), ("accuracy", correct / len(x)),
                     ("val_loss", ev["loss"]), ("val_accuracy", ev["accuracy"]),
                     ("seconds", seconds)):
            history[k].append(v)
        log(f"epoch {epoch + 1:3d}/{args.epochs}: loss {history['loss'][-1]:.4f} acc "
            f"{history['accuracy'][-1]:.4f} | test loss {ev['loss']:.4f} acc "
            f"{ev['accuracy']:.4f} | {seconds:.1f} s, {len(x) / seconds:,.0f} img/s")
    train_seconds = sum(history["seconds"])
    log(f"test accuracy {history['val_accuracy'][-1]:.4f}, {train_seconds:.1f} s training")
    if args.save:
        model.save(args.save)
    if args.json:
        print(json.dumps({
            "dataset": args.dataset, "model": args.model, "epochs": args.epochs,
            "batch_size": args.batch_size, "lr": args.lr, "threads": convkit.get_num_threads(),
            "test_accuracy": history["val_accuracy"][-1], "test_loss": history["val_loss"][-1],
            "train_seconds": train_seconds,
            "images_per_second": len(x) * args.epochs / train_seconds, "history": history}))


if __name__ == "__main__":
    main()
