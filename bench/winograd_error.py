#!/usr/bin/env python
"""How far Winograd's F(m x m, 3 x 3) strays from the exact convolution in float32, by tile
size and interpolation points, against the direct sum in float32: the figure behind keeping
F(2x2, 3x3) (bench/RESULTS.md, twenty-second session). NumPy only; the transforms are built
from the points (Toom-Cook), checked in float64, then applied in float32 to random layers.

    python bench/winograd_error.py [--channels 16,64] [--size 26] [--seed 0]
"""
import argparse

import numpy as np
from numpy.polynomial import polynomial as poly

F32 = np.float32


def toom_cook(m, r, points):
    """A^T (m x n), G (n x r), B^T (n x n) of F(m, r) on the finite points and infinity."""
    n = m + r - 1
    assert len(points) == n - 1
    at, g, bt = np.zeros((m, n)), np.zeros((n, r)), np.zeros((n, n))
    for j, p in enumerate(points):
        others = [q for q in points if q != p]
        at[:, j] = [p ** i for i in range(m)]
        g[j] = [p ** k / np.prod([p - q for q in others]) for k in range(r)]
        c = poly.polyfromroots(others)
        bt[j, :len(c)] = c
    at[m - 1, n - 1] = g[n - 1, r - 1] = 1
    bt[n - 1] = poly.polyfromroots(points)
    return at, g, bt


def winograd(x, w, at, g, bt):
    """F(m x m, 3 x 3) of x (C, H, W) with w (K, C, 3, 3), every step rounded to float32."""
    m, a = at.shape[0], bt.shape[0]
    at, bt = at.astype(F32), bt.astype(F32)
    u = np.einsum("ij,kcjl,ml->kcim", g, w.astype(np.float64), g).astype(F32)
    P = x.shape[1] - 2
    y = np.zeros((w.shape[0], P, P), F32)
    for ty in range(0, P, m):
        for tx in range(0, P, m):
            d = x[:, ty:ty + a, tx:tx + a]
            v = np.einsum("cil,ml->cim", np.einsum("ij,cjl->cil", bt, d).astype(F32), bt)
            prod = np.einsum("kcim,cim->kim", u, v.astype(F32)).astype(F32)
            t = np.einsum("ij,kjl->kil", at, prod).astype(F32)
            y[:, ty:ty + m, tx:tx + m] = np.einsum("kil,ml->kim", t, at)
    return y


def direct(x, w, dtype):
    P = x.shape[1] - 2
    y = np.zeros((w.shape[0], P, P), dtype)
    for r in range(3):
        for s in range(3):
            y += np.einsum("kc,cpq->kpq", w[:, :, r, s].astype(dtype),
                           x[:, r:r + P, s:s + P].astype(dtype)).astype(dtype)
    return y


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--channels", default="16,64")
    ap.add_argument("--size", type=int, default=26, help="input H = W (output 24: whole tiles)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    sets = [("F(2x2) 0, +-1", [0, 1, -1]), ("F(4x4) 0, +-1, +-2", [0, 1, -1, 2, -2]),
            ("F(4x4) 0, +-1, 1/2, -2", [0, 1, -1, 0.5, -2]),
            ("F(4x4) 0, +-1, +-1/2", [0, 1, -1, 0.5, -0.5])]
    for pts in (p for _, p in sets):  # the transforms are exact in float64
        at, g, bt = toom_cook(len(pts) - 1, 3, pts)
        d, k = rng.standard_normal(len(pts) + 1), rng.standard_normal(3)
        assert np.abs(at @ ((g @ k) * (bt @ d)) - np.correlate(d, k, "valid")).max() < 1e-12
    print("max |error| / max |y| and mean |error| / mean |y| against float64, K = 32")
    print("| C | method | max | mean |")
    print("| --- | --- | --- | --- |")
    for c in (int(v) for v in args.channels.split(",")):
        x = rng.standard_normal((c, args.size, args.size)).astype(F32)
        w = (rng.standard_normal((32, c, 3, 3)) * np.sqrt(2 / (9 * c))).astype(F32)
        ref = direct(x, w, np.float64)
        rows = [("direct float32", direct(x, w, F32))]
        rows += [(name, winograd(x, w, *toom_cook(len(p) - 1, 3, p))) for name, p in sets]
        for name, y in rows:
            e = np.abs(y - ref)
            print(f"| {c} | {name} | {e.max() / np.abs(ref).max():.2e} | "
                  f"{e.mean() / np.abs(ref).mean():.2e} |")


if __name__ == "__main__":
    main()
