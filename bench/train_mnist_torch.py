#!/usr/bin/env python
"""The PyTorch twin of examples/train_mnist.py, for the end-to-end comparison in bench/RESULTS.md.

The identical recipe: same data (read with convkit.data), standardised with the training set's
mean and standard deviation, same LeNet-5, same initialisation scheme (PyTorch's default), SGD
with momentum 0.9 and lr 0.02 cut to 0.3x every 4 epochs (StepLR, as the example's defaults),
same batch size and batch order rule (a fresh permutation per epoch), same thread count, test
evaluation after every epoch as the example's fit(val=...) does (outside the timed training).
Prints a JSON line with the same keys as the example's --json summary.

    python bench/train_mnist_torch.py --dataset fashion-mnist --epochs 10 --threads 2
"""
import argparse
import json
import time

import numpy as np
import torch

from convkit import data


def lenet5():
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))


def evaluate(model, xt, yt):
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(xt[i:i + 1000]) for i in range(0, len(xt), 1000)])
        loss = torch.nn.functional.cross_entropy(logits, yt).item()
        acc = (logits.argmax(1) == yt).float().mean().item()
    return loss, acc


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--lr-step-size", type=int, default=4)
    p.add_argument("--lr-gamma", type=float, default=0.3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    x, y = data.load_mnist(a.data_dir, "train", a.dataset)
    xt, yt = data.load_mnist(a.data_dir, "test", a.dataset)
    mean, std = float(x.mean()), float(x.std())
    x, xt = (x - mean) / std, (xt - mean) / std  # standardised as the example does
    x, y, xt, yt = (torch.from_numpy(v) for v in (x, y, xt, yt))
    model = lenet5()
    opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=0.9)
    sched = (torch.optim.lr_scheduler.StepLR(opt, a.lr_step_size, a.lr_gamma)
             if a.lr_step_size else None)
    rng = np.random.default_rng(a.seed)
    epoch_seconds = []
    for epoch in range(a.epochs):
        model.train()
        order = torch.from_numpy(rng.permutation(len(x)))
        t0 = time.perf_counter()
        for i in range(0, len(x), a.batch_size):
            idx = order[i:i + a.batch_size]
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        epoch_seconds.append(time.perf_counter() - t0)
        test_loss, acc = evaluate(model, xt, yt)
        if sched is not None:
            sched.step()
    seconds = sum(epoch_seconds)
    print(json.dumps({"framework": "pytorch", "torch": torch.__version__, "dataset": a.dataset,
                      "epochs": a.epochs, "threads": torch.get_num_threads(),
                      "lr": a.lr, "lr_step_size": a.lr_step_size, "lr_gamma": a.lr_gamma,
                      "input_mean": mean, "input_std": std,
                      "test_accuracy": acc, "test_loss": test_loss, "train_seconds": seconds,
                      "images_per_second": len(x) * a.epochs / seconds,
                      "epoch_seconds": epoch_seconds}))


if __name__ == "__main__":
    main()
