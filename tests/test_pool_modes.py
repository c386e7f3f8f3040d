"""The pooling modes of version 0.2 (dilation, ceil_mode, indices, count_include_pad,
divisor_override, unpooling, adaptive pooling, unbatched input) against PyTorch in float64 and
against the float64 C++ reference, on every ISA."""
import numpy as np
import pytest

import convkit
import convkit.functional as F
from convkit import _core, nn

from conftest import assert_close, needs_torch, torch

TF = torch.nn.functional if torch is not None else None

# (N, C, H, W, kernel, stride, padding, dilation, ceil_mode)
MAX_CASES = [
    (2, 3, 9, 9, 3, 2, 1, 1, True),      # ceil_mode: a last window clipped at the bottom/right
    (1, 2, 10, 7, 3, 2, 0, 2, False),    # dilation 2
    (1, 1, 11, 13, (3, 2), (2, 3), (1, 1), (2, 3), True),
    (2, 1, 5, 5, 2, 2, 0, 1, True),      # 2x2 with odd sizes and ceil_mode (no fast path)
    (1, 2, 6, 6, 2, 2, 1, 1, True),      # a window that would start in the padding is dropped
    (1, 1, 1, 1, 1, 1, 0, 1, False),
    (1, 3, 17, 33, 3, 1, 1, 1, False),   # stride 1, tails
    (3, 2, 8, 8, 4, 3, 2, 1, True),      # stride 3
    (1, 2, 3, 160, (2, 67), (1, 3), (1, 20), (1, 2), True),  # over 64 taps per row
]

# (N, C, H, W, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override)
AVG_CASES = [
    (2, 3, 9, 9, 3, 2, 1, True, True, None),
    (2, 3, 9, 9, 3, 2, 1, True, False, None),
    (1, 2, 10, 7, 3, 2, 1, False, False, None),
    (1, 1, 11, 13, (3, 2), (2, 3), (1, 1), True, True, 5),
    (2, 1, 5, 5, 2, 2, 0, True, True, None),
    (1, 2, 6, 6, 2, 2, 1, True, False, 3),
    (3, 2, 8, 8, 4, 3, 2, True, True, None),
    (1, 4, 16, 16, 2, 2, 0, False, True, 7),  # 2x2 with a divisor: no fast path
    (1, 2, 3, 160, (2, 67), (1, 3), (1, 20), True, False, None),  # over 64 taps per row
    (1, 1, 2, 2100, (1, 3), (1, 2), (0, 1), True, False, None),  # over 1024 outputs per row
]


def _t(a, grad=False):
    return torch.tensor(np.asarray(a, np.float64), requires_grad=grad)


def _x(rng, shape, ties=False):
    x = rng.standard_normal(shape).astype(np.float32)
    return np.round(x) if ties else x


@needs_torch
@pytest.mark.parametrize("c", MAX_CASES, ids=str)
def test_max_pool_modes_match_pytorch(isa, pool_path, rng, c):
    N, C, H, W, k, s, p, d, cm = c
    for ties in (False, True):
        x = _x(rng, (N, C, H, W), ties)
        xt = _t(x, True)
        yt, it = TF.max_pool2d(xt, k, s, p, d, ceil_mode=cm, return_indices=True)
        g = rng.standard_normal(tuple(yt.shape)).astype(np.float32)
        yt.backward(_t(g))
        y, idx = F.max_pool2d(x, k, s, p, d, cm, return_indices=True)
        assert y.shape == tuple(yt.shape)
        np.testing.assert_array_equal(y, yt.detach().numpy().astype(np.float32))
        np.testing.assert_array_equal(idx, it.numpy())
        assert idx.dtype == np.int64
        np.testing.assert_array_equal(F.max_pool2d(x, k, s, p, d, cm), y)
        dx = F.max_pool2d_backward(g, x, k, s, p, d, cm)
        assert_close(dx, xt.grad.numpy(), 1e-6, "grad")
        kh, kw = (k, k) if isinstance(k, int) else k
        sh, sw = (s, s) if isinstance(s, int) else s
        ph, pw = (p, p) if isinstance(p, int) else p
        dh, dw = (d, d) if isinstance(d, int) else d
        ref = _core.ref_max_pool2d(x, kh, kw, sh, sw, ph, pw, dh, dw, cm)
        np.testing.assert_array_equal(y, ref)


@needs_torch
@pytest.mark.parametrize("c", AVG_CASES, ids=str)
def test_avg_pool_modes_match_pytorch(isa, pool_path, rng, c):
    N, C, H, W, k, s, p, cm, cip, div = c
    x = _x(rng, (N, C, H, W))
    xt = _t(x, True)
    yt = TF.avg_pool2d(xt, k, s, p, cm, cip, div)
    g = rng.standard_normal(tuple(yt.shape)).astype(np.float32)
    yt.backward(_t(g))
    y = F.avg_pool2d(x, k, s, p, cm, cip, div)
    assert_close(y, yt.detach().numpy(), 2e-6, "forward")
    assert_close(F.avg_pool2d_backward(g, x, k, s, p, cm, cip, div), xt.grad.numpy(), 2e-6,
                 "grad")


@needs_torch
@pytest.mark.parametrize("shape,out", [
    ((2, 3, 8, 8), 1), ((2, 3, 7, 9), (3, 4)), ((1, 2, 10, 10), (3, None)),
    ((1, 1, 5, 5), (7, 6)),            # more outputs than inputs: overlapping windows
    ((4, 64, 8, 8), 1), ((1, 3, 33, 17), (5, 5)), ((2, 2, 1, 1), 1)])
def test_adaptive_pooling_matches_pytorch(isa, pool_path, rng, shape, out):
    for ties in (False, True):
        x = _x(rng, shape, ties)
        for kind in ("avg", "max"):
            xt = _t(x, True)
            if kind == "avg":
                yt = TF.adaptive_avg_pool2d(xt, out)
                y = F.adaptive_avg_pool2d(x, out)
            else:
                yt, it = TF.adaptive_max_pool2d(xt, out, return_indices=True)
                y, idx = F.adaptive_max_pool2d(x, out, return_indices=True)
                np.testing.assert_array_equal(idx, it.numpy())
            g = rng.standard_normal(tuple(yt.shape)).astype(np.float32)
            yt.backward(_t(g))
            bwd = F.adaptive_avg_pool2d_backward if kind == "avg" else F.adaptive_max_pool2d_backward
            assert_close(y, yt.detach().numpy(), 1e-6, kind)
            assert_close(bwd(g, x, out), xt.grad.numpy(), 1e-6, kind + " grad")


@needs_torch
@pytest.mark.parametrize("k,s,p,extra", [(2, None, 0, 0), (3, 2, 1, 1), ((2, 3), (2, 2), 0, 1)])
def test_max_unpool_matches_pytorch(rng, k, s, p, extra):
    x = rng.standard_normal((2, 3, 9, 10)).astype(np.float32)
    y, idx = F.max_pool2d(x, k, s, p, return_indices=True)
    yt, it = TF.max_pool2d(_t(x), k, s, p, return_indices=True)
    ss = k if s is None else s
    sh, sw = (ss, ss) if isinstance(ss, int) else ss
    kh, kw = (k, k) if isinstance(k, int) else k
    default = ((y.shape[2] - 1) * sh - 2 * p + kh, (y.shape[3] - 1) * sw - 2 * p + kw)
    size = (default[0] + extra, default[1] + extra) if extra else None
    yt = yt.clone().requires_grad_(True)
    ut = TF.max_unpool2d(yt, it, k, s, p, output_size=size)
    u = F.max_unpool2d(y, idx, k, s, p, output_size=size)
    np.testing.assert_array_equal(u, ut.detach().numpy().astype(np.float32))
    g = rng.standard_normal(u.shape).astype(np.float32)
    ut.backward(_t(g))
    np.testing.assert_array_equal(F.max_unpool2d_backward(g, y, idx, k, s, p, output_size=size),
                                  yt.grad.numpy().astype(np.float32))


def test_max_unpool_rejects_bad_indices_and_sizes():
    y, idx = F.max_pool2d(np.ones((1, 1, 4, 4), np.float32), 2, return_indices=True)
    with pytest.raises(ValueError, match="max_unpool2d: index 99 is outside"):
        F.max_unpool2d(y, np.full_like(idx, 99), 2)
    with pytest.raises(ValueError, match="max_unpool2d: output_size"):
        F.max_unpool2d(y, idx, 2, output_size=(9, 9))
    with pytest.raises(ValueError, match="indices of the input's shape"):
        F.max_unpool2d(y, idx[:, :, :1], 2)
    # the first bad index in order is named, in either direction, and a negative one is bad
    y, idx = F.max_pool2d(np.ones((2, 3, 4, 4), np.float32), 2, return_indices=True)
    bad = idx.copy()
    bad[1, 0, 1, 0], bad[1, 2, 0, 1] = -3, 16
    for fn, call in (("max_unpool2d", lambda: F.max_unpool2d(y, bad, 2)),
                     ("max_unpool2d_backward",
                      lambda: F.max_unpool2d_backward(np.ones((2, 3, 4, 4)), y, bad, 2))):
        with pytest.raises(ValueError, match=f"{fn}: index -3 is outside"):
            call()


@needs_torch
def test_max_unpool_to_an_empty_plane_as_pytorch():
    # a 2-row input pooled 2/3/1 unpools to 0 rows by default: PyTorch returns the empty planes
    # (checking no index) and its backward raises; a negative size raises in both
    x = np.random.default_rng(0).standard_normal((2, 3, 2, 5)).astype(np.float32)
    y, idx = torch.nn.functional.max_pool2d(torch.from_numpy(x), 2, 3, 1, return_indices=True)
    want = torch.nn.functional.max_unpool2d(y, idx, 2, 3, 1)
    got = F.max_unpool2d(y.numpy(), idx.numpy(), 2, 3, 1)
    assert got.shape == tuple(want.shape) == (2, 3, 0, 3) and got.dtype == np.float32
    assert F.max_unpool2d(y.numpy()[0], idx.numpy()[0], 2, 3, 1).shape == (3, 0, 3)
    assert nn.MaxUnpool2d(2, 3, 1)(y.numpy(), idx.numpy()).shape == (2, 3, 0, 3)
    with pytest.raises(ValueError, match="max_unpool2d_backward: the output size"):
        F.max_unpool2d_backward(np.zeros((2, 3, 0, 3)), y.numpy(), idx.numpy(), 2, 3, 1)
    with pytest.raises(ValueError, match="max_unpool2d: the output size"):
        F.max_unpool2d(np.ones((1, 1, 1, 3)), np.zeros((1, 1, 1, 3), np.int64), 1, 1, 1)


def test_max_unpool_later_entry_wins_a_shared_index():
    x = np.arange(1, 9, dtype=np.float32).reshape(1, 2, 2, 2)
    idx = np.array([[[[0, 5], [5, 15]], [[3, 3], [3, 0]]]])
    u = F.max_unpool2d(x, idx, 2)
    assert u[0, 0].ravel()[[0, 5, 15]].tolist() == [1, 3, 4] and u[0, 0].sum() == 8
    assert u[0, 1].ravel()[[0, 3]].tolist() == [8, 7] and u[0, 1].sum() == 15
    g = np.arange(32, dtype=np.float32).reshape(1, 2, 4, 4)
    assert F.max_unpool2d_backward(g, x, idx, 2).ravel().tolist() == [0, 5, 5, 15, 19, 19, 19, 16]


@needs_torch
def test_unbatched_pooling_matches_batched(rng):
    x = rng.standard_normal((3, 9, 8)).astype(np.float32)
    g = rng.standard_normal((3, 5, 4)).astype(np.float32)
    for fwd, bwd, kw in [(F.max_pool2d, F.max_pool2d_backward, dict(ceil_mode=True)),
                         (F.avg_pool2d, F.avg_pool2d_backward, dict(ceil_mode=True))]:
        y = fwd(x, 2, **kw)
        assert y.shape == (3, 5, 4)
        np.testing.assert_array_equal(y, fwd(x[None], 2, **kw)[0])
        np.testing.assert_array_equal(bwd(g, x, 2, **kw), bwd(g[None], x[None], 2, **kw)[0])
    y, i = F.max_pool2d(x, 2, return_indices=True)
    assert i.shape == y.shape == (3, 4, 4)
    assert F.adaptive_avg_pool2d(x, 1).shape == (3, 1, 1)
    np.testing.assert_array_equal(F.max_unpool2d(y, i, 2), F.max_unpool2d(y[None], i[None], 2)[0])


def test_pooling_thread_count_invariant(rng, threads):
    x = rng.standard_normal((8, 16, 15, 15)).astype(np.float32)
    outs = []
    for t in (1, 2, 3):
        threads(t)
        outs.append([F.max_pool2d(x, 3, 2, 1, 2, True, True)[1],
                     F.avg_pool2d(x, 3, 2, 1, True, False),
                     F.adaptive_avg_pool2d(x, (4, 5)), F.adaptive_max_pool2d(x, 3),
                     F.adaptive_avg_pool2d_backward(np.ones((8, 16, 4, 5)), x, (4, 5))])
    for o in outs[1:]:
        for a, b in zip(outs[0], o):
            np.testing.assert_array_equal(a, b)


def test_nan_reaches_only_its_windows():
    x = np.zeros((1, 1, 6, 6), np.float32)
    x[0, 0, 0, 0] = np.nan
    y = F.max_pool2d(x, 3, 3, ceil_mode=True)
    assert np.isnan(y[0, 0, 0, 0]) and not np.isnan(y.ravel()[1:]).any()
    a = F.adaptive_avg_pool2d(x, 2)
    assert np.isnan(a[0, 0, 0, 0]) and not np.isnan(a.ravel()[1:]).any()
    i = F.adaptive_max_pool2d(x, 2, return_indices=True)[1]
    assert i[0, 0, 0, 0] == 0


@needs_torch
@pytest.mark.parametrize("c", MAX_CASES, ids=str)
def test_max_pool_winners_with_nan_and_inf_match_pytorch(isa, pool_path, rng, c):
    # Which element wins decides where the gradient goes: several NaNs in a window (the last
    # wins), windows of -inf only (the first wins), +inf ties, for plain and adaptive windows.
    N, C, H, W, k, s, p, d, cm = c
    x = np.round(rng.standard_normal((N, C, H, W))).astype(np.float32)
    u = rng.random(x.shape)
    x[u < 0.15] = np.nan
    x[(u >= 0.15) & (u < 0.45)] = -np.inf
    x[(u >= 0.45) & (u < 0.5)] = np.inf
    xt = torch.tensor(x, requires_grad=True)
    yt, it = TF.max_pool2d(xt, k, s, p, d, ceil_mode=cm, return_indices=True)
    g = rng.standard_normal(tuple(yt.shape)).astype(np.float32)
    yt.backward(torch.tensor(g))
    y, idx = F.max_pool2d(x, k, s, p, d, cm, return_indices=True)
    np.testing.assert_array_equal(idx, it.numpy())
    np.testing.assert_array_equal(y, yt.detach().numpy())
    np.testing.assert_array_equal(F.max_pool2d_backward(g, x, k, s, p, d, cm), xt.grad.numpy())
    for out in ((3, 2), (H + 1, max(1, W // 3))):
        xt.grad = None
        yt, it = TF.adaptive_max_pool2d(xt, out, return_indices=True)
        g = rng.standard_normal(tuple(yt.shape)).astype(np.float32)
        yt.backward(torch.tensor(g))
        y, idx = F.adaptive_max_pool2d(x, out, return_indices=True)
        np.testing.assert_array_equal(idx, it.numpy())
        np.testing.assert_array_equal(y, yt.detach().numpy())
        np.testing.assert_array_equal(F.adaptive_max_pool2d_backward(g, x, out), xt.grad.numpy())


@needs_torch
def test_adaptive_max_pool_of_planes_too_big_for_the_lanes(rng):
    # planes over 512 x 512 skip the 16-planes-in-lanes kernel (its buffer would pass 16 MiB per
    # thread) and scan each window: same indices and gradients as PyTorch
    x = np.round(rng.standard_normal((1, 2, 521, 517)) * 3).astype(np.float32)
    x[0, 1, 7, :40] = np.nan
    xt = torch.tensor(x, requires_grad=True)
    yt, it = TF.adaptive_max_pool2d(xt, (5, 3), return_indices=True)
    g = rng.standard_normal(tuple(yt.shape)).astype(np.float32)
    yt.backward(torch.tensor(g))
    y, idx = F.adaptive_max_pool2d(x, (5, 3), return_indices=True)
    np.testing.assert_array_equal(idx, it.numpy())
    np.testing.assert_array_equal(y, yt.detach().numpy())
    np.testing.assert_array_equal(F.adaptive_max_pool2d_backward(g, x, (5, 3)), xt.grad.numpy())


@pytest.mark.parametrize("call,frag", [
    (lambda: F.max_pool2d(np.ones((1, 1, 8, 8)), 3, padding=2), "half the kernel"),
    (lambda: F.max_pool2d(np.ones((1, 1, 8, 8)), 3, dilation=0), "dilation >= 1"),
    (lambda: F.max_pool2d(np.ones((1, 1, 4, 4)), 3, dilation=2), "larger than the padded"),
    (lambda: F.avg_pool2d(np.ones((1, 1, 4, 4)), 2, divisor_override=0), "must not be zero"),
    (lambda: F.adaptive_avg_pool2d(np.ones((1, 1, 4, 4)), -1), "output_size >= 0"),
    (lambda: F.adaptive_max_pool2d(np.ones((1, 1, 4, 4)), (1, 2, 3)), "output_size"),
    (lambda: F.adaptive_avg_pool2d(np.ones((1, 1, 0, 4)), 2), "non-zero height"),
])
def test_bad_pooling_arguments(call, frag):
    with pytest.raises(ValueError, match=frag):
        call()


@needs_torch
@pytest.mark.parametrize("out", [0, (0, 2), (3, 0), (None, 0)])
@pytest.mark.parametrize("shape", [(40, 3, 6, 6), (3, 6, 5)])
def test_adaptive_pooling_to_an_empty_output(pool_path, threads, shape, out):
    # an output size of 0 gives an empty output, as PyTorch's; the gradient is all zeros (where
    # PyTorch's backward refuses an empty grad_out), whatever was in memory before
    x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    for t in (1, 2):
        threads(t)
        for mx in (False, True):
            f = F.adaptive_max_pool2d if mx else F.adaptive_avg_pool2d
            want = (TF.adaptive_max_pool2d if mx else TF.adaptive_avg_pool2d)(torch.tensor(x), out)
            y = f(x, out)
            assert y.shape == tuple(want.shape) and y.size == 0
            np.full(shape, 7, np.float32)  # (leaves non-zero memory for the next array)
            fb = F.adaptive_max_pool2d_backward if mx else F.adaptive_avg_pool2d_backward
            dx = fb(np.ones(y.shape, np.float32), x, out)
            assert dx.shape == shape and not dx.any()
    m = nn.AdaptiveMaxPool2d(out, return_indices=True)
    y, idx = m(x)
    assert idx.shape == y.shape and idx.dtype == np.int64


def test_empty_batch_pooling():
    assert F.max_pool2d(np.zeros((0, 2, 5, 5)), 2, ceil_mode=True, return_indices=True)[1].shape \
        == (0, 2, 3, 3)
    assert F.adaptive_avg_pool2d(np.zeros((0, 2, 5, 5)), 2).shape == (0, 2, 2, 2)
    assert F.adaptive_max_pool2d_backward(np.zeros((0, 2, 2, 2)), np.zeros((0, 2, 5, 5)),
                                          2).shape == (0, 2, 5, 5)


@pytest.mark.parametrize("seed", range(6))
def test_pooling_lanes_and_planes_give_the_same_bits(seed):
    # The two kernels of max_pool2d / avg_pool2d / adaptive_avg_pool2d (16 planes in the vector
    # lanes, or plane by plane) on random windows, plane counts that leave a partial group of
    # 16, NaN and +-inf: outputs, indices and gradients bit for bit.
    rng = np.random.default_rng(seed)
    for _ in range(12):
        N, C = int(rng.integers(1, 4)), int(rng.integers(1, 15))
        H, W = int(rng.integers(1, 20)), int(rng.integers(1, 20))
        kh, kw = int(rng.integers(1, min(H, 5) + 1)), int(rng.integers(1, min(W, 5) + 1))
        sh, sw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        ph, pw = int(rng.integers(0, kh // 2 + 1)), int(rng.integers(0, kw // 2 + 1))
        cm, cip = bool(rng.integers(0, 2)), bool(rng.integers(0, 2))
        div = None if rng.random() < 0.7 else int(rng.integers(1, 10))
        dh = int(rng.integers(1, 3)) if (H - 1) // max(kh - 1, 1) >= 2 else 1
        x = rng.standard_normal((N, C, H, W)).astype(np.float32)
        u = rng.random(x.shape)
        x[u < 0.03] = np.nan
        x[(u >= 0.03) & (u < 0.06)] = np.inf
        x[(u >= 0.06) & (u < 0.09)] = -np.inf
        kmax = ((kh, kw), (sh, sw), (ph, pw), (dh, 1), cm)
        kavg = ((kh, kw), (sh, sw), (ph, pw), cm, cip, div)
        out = (int(rng.integers(1, H + 3)), int(rng.integers(1, W + 3)))
        g = rng.standard_normal(F.max_pool2d(x, *kmax).shape).astype(np.float32)
        ga = rng.standard_normal(F.avg_pool2d(x, *kavg).shape).astype(np.float32)
        gd = rng.standard_normal((N, C) + out).astype(np.float32)
        outs = {}
        for path in ("planes", "lanes"):
            _core.pool2d_force(path)
            try:
                y, i = F.max_pool2d(x, *kmax, return_indices=True)
                a = F.avg_pool2d(x, *kavg)
                outs[path] = (y, i, F.max_pool2d(x, *kmax), F.max_pool2d_backward(g, x, *kmax),
                              a, F.avg_pool2d_backward(ga, x, *kavg),
                              F.adaptive_avg_pool2d(x, out),
                              F.adaptive_avg_pool2d_backward(gd, x, out))
            finally:
                _core.pool2d_force("")
        for p, l in zip(outs["planes"], outs["lanes"]):
            np.testing.assert_array_equal(_bits(p), _bits(l))


def _bits(a):
    """Floats as their bits (so that -0 and +0 differ), every NaN as one (its sign and payload
    depend on which operand the compiler put first, in either kernel)."""
    if a.dtype != np.float32:
        return a
    return np.where(np.isnan(a), np.float32(np.nan), a).view(np.int32)


def test_pool2d_force_rejects_unknown_names():
    with pytest.raises(ValueError, match="pool2d_force"):
        _core.pool2d_force("rows")
