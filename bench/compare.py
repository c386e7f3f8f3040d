#!/usr/bin/env python
"""Head-to-head: convkit against PyTorch's CPU backend and a NumPy im2col + matmul baseline.

Same process, same thread count, interleaved repeats, medians. Per row: the median times, the
ratio PyTorch / convkit (above 1 means convkit is faster), convkit's GFLOP/s and its share of the
machine's FP32 matmul peak, measured in the same run. GFLOP/s count the direct method's
multiply-adds (2*N*K*C*R*S*P*Q per convolution), so layers that convkit runs with fewer
multiplies (Winograd-style transforms: 3x3 with 16+ channels at stride 1 or 2, 5x5 stride 1 over
batches of 16+ images) show an effective rate that can exceed the peak.

    python bench/compare.py                          # all rows, threads = all cores
    python bench/compare.py --threads 1,2            # the table at 1 and 2 threads + speed-ups
    python bench/compare.py --only conv --repeats 31 --json out.json --markdown out.md --plot r.png
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", default=str(os.cpu_count() or 1),
                   help="comma-separated thread counts; more than one adds a scaling table")
    p.add_argument("--repeats", type=int, default=21, help="timed repeats per implementation")
    p.add_argument("--rounds", type=int, default=3,
                   help="passes over the table; each takes repeats/rounds of the samples")
    p.add_argument("--only", default="", help="run only rows whose name contains this text")
    p.add_argument("--json", default=None, help="write the results as JSON here")
    p.add_argument("--markdown", default=None, help="write the Markdown tables here")
    p.add_argument("--plot", default=None, help="bar chart PNG of the PyTorch/convkit ratios")
    p.add_argument("--no-numpy", action="store_true", help="skip the NumPy baseline")
    return p.parse_args()


ARGS = parse_args()
THREADS = [int(t) for t in ARGS.threads.split(",")]
# NumPy's BLAS reads its thread count at import time.
for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, str(max(THREADS)))
# OpenBLAS's idle threads otherwise busy-wait for ~2^28 cycles after every call, stealing the
# cores from whichever library is timed next; 2^4 lets them sleep at once.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import numpy as np  # noqa: E402
from numpy.lib.stride_tricks import sliding_window_view  # noqa: E402

import convkit  # noqa: E402
import convkit.functional as F  # noqa: E402
from convkit import models, nn, optim  # noqa: E402
from train_mnist_torch import lenet5 as torch_lenet5  # noqa: E402  (bench/ is on sys.path)

try:
    import torch  # noqa: E402
except ImportError:
    sys.exit("bench/compare.py needs PyTorch: pip install '.[bench]'")

CONV_SHAPES = [  # name, (N, C, H, W), K, kernel, stride, padding
    ("LeNet conv1", (64, 1, 28, 28), 6, 5, 1, 2),
    ("LeNet conv2", (64, 6, 14, 14), 16, 5, 1, 0),
    ("VGG 3x3", (8, 64, 56, 56), 64, 3, 1, 1),
    ("strided", (8, 64, 56, 56), 128, 3, 2, 1),
    ("RGB stem", (16, 3, 64, 64), 32, 3, 1, 1),
    ("pointwise", (8, 128, 28, 28), 128, 1, 1, 0),
    ("large kernel", (8, 16, 32, 32), 16, 7, 1, 3),
]


# ---- timing: bench/timing.py -------------------------------------------------------------

from timing import cpu_model, measure, sample  # noqa: E402


def matmul_peak(repeats):
    """FP32 matmul GFLOP/s on 2048^2 (the machine's practical ceiling): the best median of three
    rounds of PyTorch's BLAS (torch.mm) and convkit's GEMM (linear), since a ceiling is what the
    machine can reach."""
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    an, bn = a.numpy(), b.numpy()
    best = min(min(measure({"torch.mm": lambda: torch.mm(a, b),
                            "convkit": lambda: F.linear(an, bn)}, max(5, repeats // 3)).values())
               for _ in range(3))
    return 2 * n ** 3 / best / 1e9


# ---- NumPy baseline: im2col + matmul ----------------------------------------------------------

def np_conv_fwd(x, w, b, s, p):
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    K, C, R, S = w.shape
    win = sliding_window_view(xp, (R, S), axis=(2, 3))[:, :, ::s, ::s]  # N C P Q R S
    N, _, P, Q = win.shape[:4]
    col = win.transpose(0, 2, 3, 1, 4, 5).reshape(N * P * Q, C * R * S)
    y = col @ w.reshape(K, -1).T + b
    return y.reshape(N, P, Q, K).transpose(0, 3, 1, 2), col


def np_conv_fwd_bwd(x, w, b, s, p, g):
    y, col = np_conv_fwd(x, w, b, s, p)
    K, C, R, S = w.shape
    N, _, P, Q = g.shape
    g2 = g.transpose(0, 2, 3, 1).reshape(-1, K)
    dw = (g2.T @ col).reshape(w.shape)
    db = g2.sum(0)
    dcol = (g2 @ w.reshape(K, -1)).reshape(N, P, Q, C, R, S)
    dxp = np.zeros((N, C, x.shape[2] + 2 * p, x.shape[3] + 2 * p), np.float32)
    for r in range(R):
        for t in range(S):
            dxp[:, :, r:r + s * P:s, t:t + s * Q:s] += dcol[:, :, :, :, r, t].transpose(0, 3, 1, 2)
    return y, dxp[:, :, p:p + x.shape[2], p:p + x.shape[3]], dw, db


# ---- rows -------------------------------------------------------------------------------------

def conv_impls(x, w, b, s, p, g):
    """The fwd and fwd+bwd callables of one shape (a function of its own, so that each closure
    keeps its own arrays)."""
    xt, wt, bt, gt = (torch.from_numpy(a) for a in (x, w, b, g))
    xg, wg, bg = (t.clone().requires_grad_() for t in (xt, wt, bt))

    def t_fwd():
        with torch.no_grad():
            torch.nn.functional.conv2d(xt, wt, bt, s, p)

    def t_fb():
        xg.grad = wg.grad = bg.grad = None
        torch.nn.functional.conv2d(xg, wg, bg, s, p).backward(gt)

    def c_fb():
        F.conv2d(x, w, b, s, p)
        F.conv2d_backward(g, x, w, b, s, p)

    fwd = {"convkit": lambda: F.conv2d(x, w, b, s, p), "pytorch": t_fwd}
    fb = {"convkit": c_fb, "pytorch": t_fb}
    if not ARGS.no_numpy:
        fwd["numpy"] = lambda: np_conv_fwd(x, w, b, s, p)
        fb["numpy"] = lambda: np_conv_fwd_bwd(x, w, b, s, p, g)
    return fwd, fb


def conv_rows(rng):
    rows = []
    for name, (N, C, H, W), K, k, s, p in CONV_SHAPES:
        x = rng.standard_normal((N, C, H, W)).astype(np.float32)
        w = rng.standard_normal((K, C, k, k)).astype(np.float32) * 0.1
        b = rng.standard_normal(K).astype(np.float32)
        y = F.conv2d(x, w, b, s, p)
        g = rng.standard_normal(y.shape).astype(np.float32)
        flops = 2.0 * N * K * C * k * k * y.shape[2] * y.shape[3]
        tag = f"{name} ({N},{C},{H},{W})->{K}, {k}x{k}, s{s}, p{p}"
        fwd, fb = conv_impls(x, w, b, s, p, g)
        rows.append(("conv2d fwd", tag, flops, fwd))
        rows.append(("conv2d fwd+bwd", tag, 3 * flops, fb))
    return rows


def small_op_rows(rng):
    rows = []
    x = rng.standard_normal((64, 6, 28, 28)).astype(np.float32)
    g = rng.standard_normal((64, 6, 14, 14)).astype(np.float32)
    ga = rng.standard_normal(x.shape).astype(np.float32)
    xt, gt, gat = (torch.from_numpy(a) for a in (x, g, ga))
    xg = xt.clone().requires_grad_()
    tf = torch.nn.functional

    def np_pool(op):
        win = sliding_window_view(x, (2, 2), axis=(2, 3))[:, :, ::2, ::2]
        return win.max(axis=(-1, -2)) if op == "max" else win.mean(axis=(-1, -2))

    for op, cf, cb, tfun in (("max", F.max_pool2d, F.max_pool2d_backward, tf.max_pool2d),
                             ("avg", F.avg_pool2d, F.avg_pool2d_backward, tf.avg_pool2d)):
        def t_fwd(tfun=tfun):
            with torch.no_grad():
                tfun(xt, 2)

        def t_fb(tfun=tfun):
            xg.grad = None
            tfun(xg, 2).backward(gt)

        impl = {"convkit": lambda cf=cf: cf(x, 2), "pytorch": t_fwd}
        if not ARGS.no_numpy:
            impl["numpy"] = lambda op=op: np_pool(op)
        rows.append((f"{op}_pool2d fwd", "(64,6,28,28), 2x2", None, impl))
        rows.append((f"{op}_pool2d fwd+bwd", "(64,6,28,28), 2x2", None,
                     {"convkit": lambda cf=cf, cb=cb: (cf(x, 2), cb(g, x, 2)), "pytorch": t_fb}))

    for name, cf, cb, tfun, npf in (
            ("relu", F.relu, F.relu_backward, torch.relu, lambda: np.maximum(x, 0)),
            ("tanh", F.tanh, F.tanh_backward, torch.tanh, lambda: np.tanh(x)),
            ("sigmoid", F.sigmoid, F.sigmoid_backward, torch.sigmoid, lambda: 1 / (1 + np.exp(-x))),
            ("leaky_relu", F.leaky_relu, F.leaky_relu_backward, tf.leaky_relu,
             lambda: np.where(x > 0, x, 0.01 * x)),
            ("elu", F.elu, F.elu_backward, tf.elu, lambda: np.where(x > 0, x, np.expm1(x)))):
        def t_fwd(tfun=tfun):
            with torch.no_grad():
                tfun(xt)

        def t_fb(tfun=tfun):
            xg.grad = None
            tfun(xg).backward(gat)

        impl = {"convkit": lambda cf=cf: cf(x), "pytorch": t_fwd}
        if not ARGS.no_numpy:
            impl["numpy"] = npf
        rows.append((f"{name} fwd", "(64,6,28,28)", None, impl))
        rows.append((f"{name} fwd+bwd", "(64,6,28,28)", None,
                     {"convkit": lambda cf=cf, cb=cb: (cf(x), cb(ga, x)), "pytorch": t_fb}))

    for N, I, O in ((64, 400, 120), (256, 1024, 1024)):
        a = rng.standard_normal((N, I)).astype(np.float32)
        w = rng.standard_normal((O, I)).astype(np.float32)
        b = rng.standard_normal(O).astype(np.float32)
        gy = rng.standard_normal((N, O)).astype(np.float32)
        at, wt, bt, gyt = (torch.from_numpy(v) for v in (a, w, b, gy))
        ag, wg, bg = (t.clone().requires_grad_() for t in (at, wt, bt))

        def t_fwd(at=at, wt=wt, bt=bt):
            with torch.no_grad():
                tf.linear(at, wt, bt)

        def t_fb(ag=ag, wg=wg, bg=bg, gyt=gyt):
            ag.grad = wg.grad = bg.grad = None
            tf.linear(ag, wg, bg).backward(gyt)

        impl = {"convkit": lambda a=a, w=w, b=b: F.linear(a, w, b), "pytorch": t_fwd}
        if not ARGS.no_numpy:
            impl["numpy"] = lambda a=a, w=w, b=b: a @ w.T + b
        flops = 2.0 * N * I * O
        rows.append(("linear fwd", f"({N},{I})->{O}", flops, impl))
        rows.append(("linear fwd+bwd", f"({N},{I})->{O}", 3 * flops,
                     {"convkit": lambda a=a, w=w, b=b, gy=gy: (F.linear(a, w, b), F.linear_backward(gy, a, w, b)),
                      "pytorch": t_fb}))
    return rows


LENET_FLOPS_FWD = 2 * (6 * 25 * 28 * 28 + 16 * 150 * 100 + 400 * 120 + 120 * 84 + 84 * 10)


def lenet_rows(rng):
    rows = []
    for batch in (1, 64, 256):
        x = rng.random((batch, 1, 28, 28)).astype(np.float32)
        y = rng.integers(0, 10, batch)
        model = models.lenet5()
        opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        crit = nn.CrossEntropyLoss()
        tm = torch_lenet5()  # the same twin as bench/train_mnist_torch.py
        topt = torch.optim.SGD(tm.parameters(), lr=0.01, momentum=0.9)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)

        def c_step(model=model, opt=opt, crit=crit, x=x, y=y):
            crit(model(x), y)
            opt.zero_grad()
            model.backward(crit.backward(), input_grad=False)  # as PyTorch: no grad for x
            opt.step()

        def t_step(tm=tm, topt=topt, xt=xt, yt=yt):
            loss = torch.nn.functional.cross_entropy(tm(xt), yt)
            topt.zero_grad()
            loss.backward()
            topt.step()

        def t_inf(tm=tm, xt=xt):
            with torch.no_grad():
                tm(xt)

        fl = LENET_FLOPS_FWD * batch
        rows.append(("LeNet-5 train step", f"batch {batch}", 3 * fl, {"convkit": c_step, "pytorch": t_step}))
        rows.append(("LeNet-5 inference", f"batch {batch}", fl,
                     {"convkit": lambda model=model, x=x: model(x), "pytorch": t_inf}))
    return rows


def machine():
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "torch": torch.__version__, "convkit": convkit.__version__,
            "isa": convkit._core.isa()}


def run_table(threads, rng_seed=0):
    convkit.set_num_threads(threads)
    torch.set_num_threads(threads)
    rng = np.random.default_rng(rng_seed)
    peak = matmul_peak(ARGS.repeats)
    rows = conv_rows(rng) + small_op_rows(rng) + lenet_rows(rng)
    rows = [r for r in rows if not ARGS.only or ARGS.only.lower() in (r[0] + " " + r[1]).lower()]
    # Several passes over all rows, each taking a share of the repeats: a noisy spell on the
    # machine then touches every row a little instead of ruining a few.
    per_round = max(1, ARGS.repeats // ARGS.rounds)
    samples = [{k: [] for k in impls} for _, _, _, impls in rows]
    for rnd in range(ARGS.rounds):
        for i, (op, shape, _, impls) in enumerate(rows):
            for k, v in sample(impls, per_round).items():
                samples[i][k] += v
        print(f"  (pass {rnd + 1}/{ARGS.rounds} done)", file=sys.stderr, flush=True)
    out = []
    for (op, shape, flops, impls), smp in zip(rows, samples):
        t = {k: statistics.median(v) for k, v in smp.items()}
        r = {"op": op, "shape": shape, "threads": threads,
             "convkit_ms": t["convkit"] * 1e3, "pytorch_ms": t["pytorch"] * 1e3,
             "numpy_ms": t["numpy"] * 1e3 if "numpy" in t else None,
             "ratio": t["pytorch"] / t["convkit"]}
        if flops:
            r["gflops"] = flops / t["convkit"] / 1e9
            r["pytorch_gflops"] = flops / t["pytorch"] / 1e9
            r["peak_pct"] = 100 * r["gflops"] / peak
        if op.startswith("LeNet"):
            batch = int(shape.split()[-1])
            r["images_per_s"] = batch / t["convkit"]
            r["pytorch_images_per_s"] = batch / t["pytorch"]
        out.append(r)
        print(format_row(r), flush=True)
    return peak, out


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


HEADER = ("| op | shape | convkit ms | PyTorch ms | NumPy ms | PyTorch/convkit | convkit GFLOP/s "
          "| PyTorch GFLOP/s | % of peak |\n|---|---|---:|---:|---:|---:|---:|---:|---:|")


def format_row(r):
    return (f"| {r['op']} | {r['shape']} | {r['convkit_ms']:.3f} | {r['pytorch_ms']:.3f} | "
            f"{fmt(r['numpy_ms'], '.3f')} | **{r['ratio']:.2f}** | {fmt(r.get('gflops'), '.1f')} | "
            f"{fmt(r.get('pytorch_gflops'), '.1f')} | {fmt(r.get('peak_pct'), '.0f')} |")


def main():
    info = machine()
    print(f"# {info['cpu']}, {info['cores']} cores; convkit {info['convkit']} ({info['isa']}), "
          f"torch {info['torch']}, numpy {info['numpy']}; {ARGS.repeats} repeats, medians")
    tables, md = {}, []
    for th in THREADS:
        print(f"\n## {th} thread(s)\n\n{HEADER}", flush=True)
        peak, rows = run_table(th)
        print(f"\nFP32 matmul peak (best of torch.mm and convkit GEMM, 2048^2, {th} threads): "
              f"{peak:.0f} GFLOP/s")
        tables[th] = {"peak_gflops": peak, "rows": rows}
        md.append(f"### {th} thread(s); FP32 matmul peak {peak:.0f} GFLOP/s\n\n{HEADER}\n"
                  + "\n".join(format_row(r) for r in rows) + "\n")
    if len(THREADS) > 1:
        base = THREADS[0]
        lines = [f"### Thread scaling (time at {base} thread / time at n threads)\n",
                 "| op | shape | " + " | ".join(f"convkit x{t}" for t in THREADS[1:]) + " | "
                 + " | ".join(f"PyTorch x{t}" for t in THREADS[1:]) + " |",
                 "|---|---|" + "---:|" * (2 * (len(THREADS) - 1))]
        for i, r0 in enumerate(tables[base]["rows"]):
            c = [r0["convkit_ms"] / tables[t]["rows"][i]["convkit_ms"] for t in THREADS[1:]]
            p = [r0["pytorch_ms"] / tables[t]["rows"][i]["pytorch_ms"] for t in THREADS[1:]]
            lines.append(f"| {r0['op']} | {r0['shape']} | " + " | ".join(f"{v:.2f}" for v in c)
                         + " | " + " | ".join(f"{v:.2f}" for v in p) + " |")
        md.append("\n".join(lines) + "\n")
        print("\n" + md[-1])
    if ARGS.json:
        with open(ARGS.json, "w") as f:
            json.dump({"machine": info, "repeats": ARGS.repeats, "tables": tables}, f, indent=1)
    if ARGS.markdown:
        with open(ARGS.markdown, "w") as f:
            f.write(f"Machine: {info['cpu']}, {info['cores']} cores; convkit {info['convkit']} "
                    f"({info['isa']}), torch {info['torch']}, numpy {info['numpy']}; "
                    f"{ARGS.repeats} interleaved repeats, medians.\n\n" + "\n".join(md))
    if ARGS.plot:
        plot(tables, ARGS.plot)


def plot(tables, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    th = max(tables)
    rows = tables[th]["rows"]
    labels = [f"{r['op']} {r['shape'].split(' (')[0]}" for r in rows]
    ratios = [r["ratio"] for r in rows]
    fig, ax = plt.subplots(figsize=(9, 0.28 * len(rows) + 1.5))
    colors = ["tab:green" if v >= 1 else "tab:red" for v in ratios]
    ax.barh(range(len(rows)), ratios, color=colors)
    ax.axvline(1.0, color="k", lw=1)
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("PyTorch time / convkit time (> 1: convkit faster)")
    ax.set_title(f"convkit vs PyTorch CPU, {th} threads")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
