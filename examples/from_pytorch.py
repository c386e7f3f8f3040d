#!/usr/bin/env python
"""Bring a PyTorch model to convkit, run it faster, fine-tune it, and take it out as ONNX.

    python examples/from_pytorch.py                          # bundled MNIST sample, offline
    python examples/from_pytorch.py --dataset fashion-mnist --epochs 2 --json

1. A small PyTorch CNN (conv, batch norm, a residual block, pooling, linear) is trained for one
   epoch in PyTorch and its weights saved with torch.save: the model and checkpoint a user
   brings.
2. ``interop.from_torch`` builds the same network in convkit and ``Module.load`` reads the
   torch.save file; outputs are compared on the test set.
3. Inference and a training step are timed against PyTorch (same threads, interleaved rounds,
   medians).
4. The model is fine-tuned in convkit (SGD with momentum, cosine schedule, a checkpoint per
   epoch that ``--resume`` continues from).
5. ``convkit.onnx.export`` writes an ONNX file, which ONNX Runtime runs on the test set.

Needs PyTorch, onnx and onnxruntime (pip install torch onnx onnxruntime).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

import convkit
from convkit import data, interop, nn, optim, training


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="PyTorch model -> convkit -> fine-tune -> ONNX.")
    p.add_argument("--dataset", choices=["mnist-sample", "mnist", "fashion-mnist"],
                   default="mnist-sample")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--epochs", type=int, default=1, help="fine-tuning epochs in convkit")
    p.add_argument("--threads", type=int, default=None, help="threads for both frameworks")
    p.add_argument("--out", default=None, help="folder for the weights, checkpoint and ONNX "
                                               "file (default: a temporary one)")
    p.add_argument("--resume", action="store_true", help="continue the fine-tuning checkpoint")
    p.add_argument("--json", action="store_true", help="end with a one-line JSON summary")
    args = p.parse_args(argv)
    if args.epochs < 1:
        p.error("--epochs must be at least 1")
    return args


def torch_model(torch):
    T = torch.nn

    class Residual(T.Module):  # convkit's Residual nesting: body(x) + (shortcut or identity)
        def __init__(self, body, shortcut=None):
            super().__init__()
            self.body, self.shortcut = body, shortcut

        def forward(self, x):
            return self.body(x) + (x if self.shortcut is None else self.shortcut(x))

    return T.Sequential(
        T.Conv2d(1, 16, 3, padding=1, bias=False), T.BatchNorm2d(16), T.ReLU(),
        T.MaxPool2d(2),
        T.Sequential(Residual(T.Sequential(T.Conv2d(16, 16, 3, padding=1, bias=False),
                                           T.BatchNorm2d(16), T.ReLU(),
                                           T.Conv2d(16, 16, 3, padding=1, bias=False),
                                           T.BatchNorm2d(16))), T.ReLU()),
        T.Conv2d(16, 32, 3, stride=2, padding=1), T.ReLU(),
        T.AdaptiveAvgPool2d(4), T.Flatten(), T.Dropout(0.1), T.Linear(512, 10))


def median_ms(fn, rounds=7, reps=5):
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        times.append((time.perf_counter() - t0) / reps * 1e3)
    return statistics.median(times)


def main(argv=None):
    args = parse_args(argv)
    try:
        import torch
        import onnxruntime as ort
        from convkit import onnx as ck_onnx
    except ImportError as e:
        raise SystemExit(f"this example needs PyTorch, onnx and onnxruntime ({e}); "
                         f"pip install torch onnx onnxruntime")
    log = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    if args.threads:
        convkit.set_num_threads(args.threads)
    threads = convkit.get_num_threads()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    convkit.manual_seed(0)
    out = args.out or tempfile.mkdtemp(prefix="convkit-from-pytorch-")
    os.makedirs(out, exist_ok=True)

    (xtr, ytr), (xte, yte) = (data.load_mnist(args.data_dir, s, args.dataset, quiet=True)
                              for s in ("train", "test"))
    xtr, mean, std = data.standardize(xtr)
    xte, _, _ = data.standardize(xte, mean, std)

    # 1. the PyTorch model and its weights, as a user brings them
    tm = torch_model(torch)
    topt = torch.optim.SGD(tm.parameters(), lr=0.02, momentum=0.9)
    tm.train()
    t0 = time.perf_counter()
    for xb, yb in data.batches(xtr, ytr, 64, seed=0):
        topt.zero_grad()
        loss = torch.nn.functional.cross_entropy(tm(torch.from_numpy(xb)), torch.from_numpy(yb))
        loss.backward()
        topt.step()
    weights = os.path.join(out, "pytorch_weights.pt")
    torch.save(tm.state_dict(), weights)
    log(f"PyTorch: trained 1 epoch on {len(xtr):,} {args.dataset} images in "
        f"{time.perf_counter() - t0:.1f} s, weights saved to {weights}")

    # 2. the same network in convkit, weights read from the torch.save file
    model = interop.from_torch(torch_model(torch)).load(weights)
    model.eval()
    tm.eval()
    with torch.no_grad():
        t_logits = tm(torch.from_numpy(xte)).numpy()
    c_logits = model(xte)
    diff = float(np.abs(c_logits - t_logits).max())
    acc_t = float((t_logits.argmax(1) == yte).mean())
    acc_c = float((c_logits.argmax(1) == yte).mean())
    log(f"convkit: {len(model.parameters())} parameter arrays loaded; test accuracy "
        f"{acc_c:.4f} (PyTorch {acc_t:.4f}), largest logit difference {diff:.2e}")

    # 3. speed, same threads, interleaved
    xb = xte[:256]
    yb = yte[:64]
    xt = torch.from_numpy(xb)
    loss_c = nn.CrossEntropyLoss()
    copt = optim.SGD(model.parameters(), lr=0.0)  # lr 0: timing must not change the weights

    def c_step():
        model.train()
        loss_c(model(xb[:64]), yb)
        copt.zero_grad()
        model.backward(loss_c.backward(), input_grad=False)
        copt.step()

    t_opt = torch.optim.SGD(tm.parameters(), lr=0.0)

    def t_step():
        tm.train()
        t_opt.zero_grad()
        torch.nn.functional.cross_entropy(tm(xt[:64]), torch.from_numpy(yb)).backward()
        t_opt.step()

    def t_infer():
        with torch.no_grad():
            tm(xt)

    state = {k: v.copy() for k, v in model.state_dict().items()}
    tstate = {k: v.clone() for k, v in tm.state_dict().items()}
    model.eval()
    tm.eval()
    speed = {}
    for name, cf, tf in (("inference_b256", lambda: model(xb), t_infer),
                         ("train_step_b64", c_step, t_step)):
        cs, ts = [], []
        for _ in range(3):
            cs.append(median_ms(cf))
            ts.append(median_ms(tf))
        c, t = statistics.median(cs), statistics.median(ts)
        speed[name] = {"convkit_ms": round(c, 3), "pytorch_ms": round(t, 3),
                       "speedup": round(t / c, 2)}
        log(f"{name}: convkit {c:.2f} ms, PyTorch {t:.2f} ms -> {t / c:.2f}x ({threads} threads)")
    model.load_state_dict(state)  # the timing steps moved batch-norm statistics: undo
    tm.load_state_dict(tstate)

    # 4. fine-tune in convkit
    opt = optim.SGD(model.parameters(), lr=0.02, momentum=0.9, weight_decay=1e-4)
    sched = optim.CosineAnnealingLR(opt, T_max=args.epochs)
    ckpt = os.path.join(out, "finetune.ckpt")
    hist = training.fit(model, nn.CrossEntropyLoss(), opt, (xtr, ytr), val=(xte, yte),
                        epochs=args.epochs, batch_size=64, scheduler=sched, checkpoint=ckpt,
                        resume=args.resume, progress=not args.json)
    acc_ft = hist["val_accuracy"][-1]
    log(f"fine-tuned {args.epochs} epoch(s) in convkit: test accuracy {acc_c:.4f} -> "
        f"{acc_ft:.4f}; checkpoint {ckpt}")

    # 5. out as ONNX, checked under ONNX Runtime
    path = os.path.join(out, "model.onnx")
    ck_onnx.export(model, path, (1, 1, 28, 28))
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    model.eval()
    o_logits = sess.run(None, {"input": xte})[0]
    c_logits = model(xte)
    odiff = float(np.abs(o_logits - c_logits).max())
    acc_o = float((o_logits.argmax(1) == yte).mean())
    log(f"ONNX: {path} ({os.path.getsize(path):,} bytes); ONNX Runtime test accuracy "
        f"{acc_o:.4f}, largest logit difference to convkit {odiff:.2e}")

    if args.json:
        print(json.dumps({
            "dataset": args.dataset, "threads": threads,
            "pytorch_accuracy": acc_t, "convkit_accuracy": acc_c, "import_max_diff": diff,
            "speed": speed, "finetune_epochs": args.epochs, "finetuned_accuracy": acc_ft,
            "onnx_accuracy": acc_o, "onnx_max_diff": odiff, "onnx_path": path}))
    ok = diff < 1e-3 and odiff < 1e-3
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
