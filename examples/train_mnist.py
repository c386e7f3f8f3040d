#!/usr/bin/env python
"""Train LeNet-5 on MNIST (or Fashion-MNIST, or the bundled 4,000-digit sample) with convkit.

    python examples/train_mnist.py                      # MNIST, downloaded if needed
    python examples/train_mnist.py --dataset fashion-mnist --epochs 10
    python examples/train_mnist.py --dataset mnist-sample --epochs 15 --json

When MNIST is neither on disk nor downloadable (offline), it says so and trains on the bundled
sample instead. With --json the last line printed is a JSON summary.

Data-parallel on several processes (pip install ".[distributed]"):

    mpiexec -n 2 python examples/train_mnist.py --distributed

Each rank takes its share of every global batch (--batch-size is the global batch); rank 0
alone prints, plots and saves.

Recipe: images standardised with the training set's mean and standard deviation, SGD with
momentum 0.9 (or Adam), and the learning rate cut to 0.3x every 4 epochs (--lr-step-size,
--lr-gamma; --lr-step-size 0 keeps it constant).
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import convkit
from convkit import data, models, nn, optim, training


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Train LeNet-5 with convkit.")
    p.add_argument("--dataset", choices=["mnist", "fashion-mnist", "mnist-sample"], default="mnist")
    p.add_argument("--data-dir", default=None, help="folder with the IDX files (searched first)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate (default 0.02 for sgd, 0.001 for adam)")
    p.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    p.add_argument("--lr-step-size", type=int, default=4,
                   help="multiply the learning rate by --lr-gamma every this many epochs (0: never)")
    p.add_argument("--lr-gamma", type=float, default=0.3)
    p.add_argument("--threads", type=int, default=None, help="OpenMP threads (default: all cores)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", default=None, help="write the trained weights to this .npz file")
    p.add_argument("--plot", default=None, help="write loss/accuracy curves to this PNG")
    p.add_argument("--json", action="store_true", help="end with a one-line JSON summary")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel under MPI: start with mpiexec -n N")
    args = p.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1:
        p.error("--epochs and --batch-size must be at least 1")
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be at least 1")
    if args.lr_step_size < 0:
        p.error("--lr-step-size must be 0 (off) or positive")
    return args


def load(args, log):
    log(f"loading {args.dataset} (downloaded into the cache on first use) ...")
    try:
        train = data.load_mnist(args.data_dir, "train", args.dataset, quiet=True)
        test = data.load_mnist(args.data_dir, "test", args.dataset, quiet=True)
        return args.dataset, train, test
    except FileNotFoundError as e:
        if args.dataset != "mnist":
            raise SystemExit(str(e))
        log("MNIST is not on this machine and could not be downloaded: training on the bundled "
            "mnist-sample (3,000 train / 1,000 test digits) instead; --dataset mnist-sample "
            "skips the attempt, --data-dir DIR points at your copy.")
        return ("mnist-sample", data.load_mnist(None, "train", "mnist-sample"),
                data.load_mnist(None, "test", "mnist-sample"))


def plot(history, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install matplotlib") from None
    epochs = range(1, len(history["loss"]) + 1)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(epochs, history["loss"], "o-", label="train")
    a.plot(epochs, history["val_loss"], "o-", label="test")
    a.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    b.plot(epochs, history["accuracy"], "o-", label="train")
    b.plot(epochs, history["val_accuracy"], "o-", label="test")
    b.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv=None):
    args = parse_args(argv)
    rank, world = 0, 1
    if args.distributed:
        from convkit import distributed
        rank, world = distributed.init(threads=args.threads)
    log = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    if rank != 0:
        log = lambda *a: None  # noqa: E731  (rank 0 reports)
    if args.threads:
        convkit.set_num_threads(args.threads)
    convkit.manual_seed(args.seed)
    name, (x, y), (xt, yt) = load(args, log)
    mean, std = float(x.mean()), float(x.std())
    x = (x - mean) / std  # standardised with the training set's statistics
    xt = (xt - mean) / std
    log(f"{name}: {len(x)} train / {len(xt)} test images; convkit {convkit.__version__}, "
        f"ISA {convkit._core.isa()}, {convkit.get_num_threads()} threads"
        + (f" per rank, {world} ranks" if args.distributed else ""))

    model = models.lenet5()
    lr = args.lr if args.lr is not None else (0.02 if args.optimizer == "sgd" else 1e-3)
    opt = (optim.SGD(model.parameters(), lr=lr, momentum=0.9) if args.optimizer == "sgd"
           else optim.Adam(model.parameters(), lr=lr))

    sched = optim.StepLR(opt, args.lr_step_size, args.lr_gamma) if args.lr_step_size else None

    shown = not args.json and sys.stderr.isatty()  # fit prints its own epoch lines then
    shown = shown or rank != 0

    class Report:
        def on_epoch_end(self, epoch, logs):
            if sched is not None:
                sched.step()
            if not shown:
                log(f"epoch {epoch + 1:3d}/{args.epochs}: loss {logs['loss']:.4f} "
                    f"acc {logs['accuracy']:.4f} | test loss {logs['val_loss']:.4f} "
                    f"acc {logs['val_accuracy']:.4f} | {logs['seconds']:.1f} s, "
                    f"{logs['images_per_second']:,.0f} img/s")

    t0 = time.perf_counter()
    hist = training.fit(model, nn.CrossEntropyLoss(), opt, (x, y), val=(xt, yt),
                        epochs=args.epochs, batch_size=args.batch_size, callbacks=[Report()],
                        progress=not args.json, distributed=args.distributed)
    wall = time.perf_counter() - t0
    final = training.evaluate(model, xt, yt, distributed=args.distributed)
    if rank != 0:
        return
    train_seconds = sum(hist["seconds"])
    log(f"test accuracy {final['accuracy']:.4f}, test loss {final['loss']:.4f}, "
        f"{train_seconds:.1f} s training ({wall:.1f} s with evaluation)")
    if args.save:
        model.save(args.save)
        log(f"saved weights to {args.save} (inputs standardised with mean {mean:.4f}, "
            f"std {std:.4f})")
    if args.plot:
        plot(hist, args.plot)
        log(f"saved curves to {args.plot}")
    if args.json:
        print(json.dumps({
            "dataset": name, "epochs": len(hist["loss"]), "batch_size": args.batch_size,
            "optimizer": args.optimizer, "lr": lr, "lr_step_size": args.lr_step_size,
            "lr_gamma": args.lr_gamma, "input_mean": mean, "input_std": std,
            "threads": convkit.get_num_threads(), "world_size": world,
            "test_accuracy": final["accuracy"], "test_loss": final["loss"],
            "train_seconds": train_seconds,
            "images_per_second": len(x) * len(hist["loss"]) / train_seconds,
            "history": hist,
        }))


if __name__ == "__main__":
    main()
