"""Do the AVX2 kernels give the AVX-512 kernels' bits? Each convolution row that is built to
(docs/convolution.md, "The AVX-512 kernel set has every row"), forced, on shapes that exercise
its tails, padding and NaN / Inf / -0 inputs, at both ISAs; prints the cases whose md5 differ
and exits 1 if any does.

Needs a CPU (or a build) that runs both ISAs: an AVX-512 machine, or the emulated build on an
AVX2 one (``bash tools/emulated_avx512.sh`` builds it and runs this).

    python tools/isa_bits.py
"""
import hashlib
import sys

import numpy as np

from convkit import _core

# (N, C, H, W, K, kernel, stride, padding)
SHAPES = [(16, 16, 32, 32, 16, 3, 1, 1), (17, 5, 7, 9, 6, 3, 1, 1), (5, 8, 13, 11, 8, 3, 1, 0),
          (33, 4, 6, 5, 12, 5, 1, 2), (24, 12, 10, 23, 8, 3, 1, 1), (16, 32, 16, 16, 32, 3, 1, 1),
          (3, 7, 9, 9, 5, 3, 1, 1), (40, 16, 14, 14, 16, 5, 1, 2), (32, 64, 8, 8, 64, 3, 1, 1),
          (20, 16, 28, 28, 16, 3, 1, 1), (16, 32, 14, 14, 32, 3, 1, 1), (18, 64, 7, 7, 64, 3, 1, 1),
          (9, 16, 32, 32, 32, 3, 2, 1), (7, 32, 15, 15, 64, 3, 2, 1), (4, 64, 8, 8, 64, 3, 1, 1)]
ROWS = {"forward": ["winograd3_lanes", "winograd5", "kvec", "winograd3", "winograd3_s2", "direct"],
        "input_grad": ["lanes", "transposed_conv"],
        "weight_grad": ["winograd3_lanes", "kvec", "winograd3"]}


def digests(isa):
    """{(shape, special, direction, row): md5 of that direction's result} at `isa`."""
    _core.set_isa(isa)
    rng = np.random.default_rng(5)
    out = {}
    for shape in SHAPES:
        n, c, h, w_, k, r, s, p = shape
        for special in (False, True):
            x = rng.standard_normal((n, c, h, w_)).astype(np.float32)
            w = rng.standard_normal((k, c, r, r)).astype(np.float32)
            if special:
                x[1, 0, 2, 3], x[0, 1, 0, 0], x[-1, -1, -1, -1] = np.inf, np.nan, -0.0
            args = (x.shape, w.shape, s, s, p, p, 1, 1, 1)
            dy = None
            for d, rows in ROWS.items():
                for row in rows:
                    if not _core.conv2d_applies(d, row, *args):
                        continue
                    _core.conv2d_force(d, row)
                    try:
                        if d == "forward":
                            a = _core.conv2d(x, w, None, s, s, p, p)
                        else:
                            if dy is None:
                                y = _core.conv2d(x, w, None, s, s, p, p)
                                dy = np.random.default_rng(1).standard_normal(y.shape)
                                dy = dy.astype(np.float32)
                            dx, dw, _ = _core.conv2d_backward(dy, x, w, None, s, s, p, p)
                            a = dx if d == "input_grad" else dw
                    finally:
                        _core.conv2d_force(d, "")
                    name = row
                    if row == "transposed_conv":
                        # it runs a forward convolution as the forward table plans it, and the
                        # ISAs' tables may plan it differently (KernelTable::wide_fma): the two
                        # ISAs are compared where they run the same inner row
                        q = r - 1 - p  # (stride 1: the transposed layer's padding)
                        t = ((n, k, h + 2 * p - r + 1, w_ + 2 * p - r + 1), (c, k, r, r), 1, 1,
                             q, q, 1, 1, 1)
                        name = f"transposed_conv ({_core.conv2d_plan(*t)['forward']})"
                    out[(shape, special, d, name)] = hashlib.md5(a.tobytes()).hexdigest()[:12]
            if s == 1 and _core.conv2d_applies("forward", "winograd3_lanes", *args):
                # the evaluation-mode batch norm applied as the outputs leave the lanes
                # (winograd3_lanes' items), with the residual sum and the ReLU
                rm, rv = rng.standard_normal(k).astype(np.float32), rng.random(k, np.float32)
                bw, bb = rng.standard_normal(k).astype(np.float32), rng.random(k, np.float32)
                add = np.random.default_rng(2).standard_normal((n, k, h + 2 * p - r + 1,
                                                                 w_ + 2 * p - r + 1))
                _core.conv2d_force("forward", "winograd3_lanes")
                try:
                    a = _core.conv2d_bn(x, w, None, 1, 1, p, p, 1, 1, 1, rm, rv, bw, bb, 1e-5,
                                        True, add.astype(np.float32))
                finally:
                    _core.conv2d_force("forward", "")
                key = (shape, special, "forward", "conv2d_bn")
                out[key] = hashlib.md5(a.tobytes()).hexdigest()[:12]
    return out


def main():
    if _core.best_isa() != "avx512":
        sys.exit("isa_bits: this CPU (or build) does not run AVX-512; on an AVX2 machine run "
                 "bash tools/emulated_avx512.sh")
    before = _core.isa()
    try:
        a, b = digests("avx2"), digests("avx512")
    finally:
        _core.set_isa(before)
    both = sorted(set(a) & set(b), key=str)  # (a row may apply at one ISA only: strided kvec)
    differ = 0
    for key in both:
        if a[key] != b[key]:
            differ += 1
            print(f"differ: {key}: avx2 {a[key]}, avx512 {b[key]}")
    rows = sorted({key[2:] for key in both})
    print(f"{len(both)} cases ({len(rows)} rows) at AVX2 against AVX-512: {differ} differ")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
