"""linear (shared GEMM) and dropout."""
import numpy as np
import pytest

import convkit
import convkit.functional as F
from convkit import _core

from conftest import assert_close, finite_diff, needs_torch, torch


@pytest.mark.parametrize("N,I,O", [(1, 1, 1), (64, 400, 120), (3, 7, 5), (17, 33, 65), (130, 260, 10),
                                   (1, 400, 120), (2, 37, 70), (4, 33, 9), (5, 17, 3),
                                   (1, 33, 65)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear(isa, rng, N, I, O, bias):
    x = rng.standard_normal((N, I)).astype(np.float32)
    w = rng.standard_normal((O, I)).astype(np.float32)
    b = rng.standard_normal(O).astype(np.float32) if bias else None
    y = F.linear(x, w, b)
    want = x.astype(np.float64) @ w.T.astype(np.float64) + (0 if b is None else b)
    assert_close(y, want, 1e-5)
    assert_close(y, _core.ref_linear(x, w, b), 1e-5)
    g = rng.standard_normal((N, O)).astype(np.float32)
    dx, dw, db = F.linear_backward(g, x, w, b)
    g64 = g.astype(np.float64)
    assert_close(dx, g64 @ w, 1e-5)
    assert_close(dw, g64.T @ x, 1e-5)
    if bias:
        assert_close(db, g64.sum(0), 1e-5)
    else:
        assert db is None


def test_linear_fd_and_leading_dims(rng):
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    w = rng.standard_normal((5, 4)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    g = rng.standard_normal((2, 3, 5))
    y = F.linear(x, w, b)
    assert y.shape == (2, 3, 5)
    dx, dw, db = F.linear_backward(g, x, w, b)
    f = lambda xx, ww, bb: float(((xx @ ww.T + bb) * g).sum())
    x64, w64, b64 = (a.astype(np.float64) for a in (x, w, b))
    assert_close(dx, finite_diff(lambda v: f(v, w64, b64), x64), 1e-5)
    assert_close(dw, finite_diff(lambda v: f(x64, v, b64), w64), 1e-5)
    assert_close(db, finite_diff(lambda v: f(x64, w64, v), b64), 1e-5)


@needs_torch
def test_linear_matches_pytorch(rng):
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((64, 400), (120, 400), (120,)))
    ts = [torch.tensor(a.astype(np.float64), requires_grad=True) for a in (x, w, b)]
    yt = torch.nn.functional.linear(*ts)
    g = rng.standard_normal((64, 120))
    yt.backward(torch.tensor(g))
    assert_close(F.linear(x, w, b), yt.detach().numpy(), 1e-5)
    for a, t in zip(F.linear_backward(g, x, w, b), ts):
        assert_close(a, t.grad.numpy(), 1e-5)


@pytest.mark.parametrize("N", [1, 2, 4, 5])
def test_linear_backward_spreads_nan_and_inf_only_where_they_are_used(isa, rng, N):
    # batches of up to 4 rows take their own path (the direct micro-kernel on rows of W and x)
    I, O = 41, 19
    x, w = rng.standard_normal((N, I)), rng.standard_normal((O, I))
    g = rng.standard_normal((N, O))
    w[3, 5], x[N - 1, 7], g[0, 2] = np.nan, np.inf, -np.inf
    dx, dw, _ = F.linear_backward(g.astype(np.float32), x.astype(np.float32),
                                  w.astype(np.float32))
    with np.errstate(invalid="ignore"):
        want_dx, want_dw = g @ w, g.T @ x
    for got, want in ((dx, want_dx), (dw, want_dw)):
        assert np.array_equal(np.isnan(got), np.isnan(want))
        assert np.array_equal(np.isinf(got), np.isinf(want))
        ok = np.isfinite(want)
        assert_close(got[ok], want[ok], 1e-5)


def test_linear_thread_invariance(rng, threads):
    x, w = rng.standard_normal((300, 500)).astype(np.float32), rng.standard_normal((200, 500)).astype(np.float32)
    g = rng.standard_normal((300, 200)).astype(np.float32)
    outs = []
    for n in (1, 2, 3):
        threads(n)
        outs.append((F.linear(x, w),) + F.linear_backward(g, x, w)[:2])
    for o in outs[1:]:
        assert all(np.array_equal(a, c) for a, c in zip(o, outs[0]))
    for N in (1, 3):  # small batches: their own path
        outs = []
        for n in (1, 2, 3):
            threads(n)
            outs.append(F.linear_backward(g[:N], x[:N], w)[:2])
        assert all(np.array_equal(a, c) for o in outs[1:] for a, c in zip(o, outs[0]))


@pytest.mark.parametrize("N,I,O", [(1, 300, 300), (3, 2600, 3300), (4, 33, 2100)])
def test_linear_small_batches_with_large_weights(isa, rng, threads, N, I, O):
    # up to 4 rows the forward reads W in place in register tiles whatever its size (the GEMM
    # would pack all of W to read it once); one row with W past L2 goes by 6-row tiles
    x = rng.standard_normal((N, I)).astype(np.float32)
    w = rng.standard_normal((O, I)).astype(np.float32)
    b = rng.standard_normal(O).astype(np.float32)
    want = x.astype(np.float64) @ w.T.astype(np.float64) + b
    outs = []
    for n in (1, 2, 3):
        threads(n)
        outs.append(F.linear(x, w, b))
        assert_close(outs[-1], want, 1e-5)
    assert all(np.array_equal(o, outs[0]) for o in outs[1:])


def test_linear_empty_batch():
    y = F.linear(np.zeros((0, 4)), np.ones((3, 4)), np.ones(3))
    assert y.shape == (0, 3) and y.dtype == np.float32
    dx, dw, db = F.linear_backward(np.zeros((0, 3)), np.zeros((0, 4)), np.ones((3, 4)), np.ones(3))
    assert dx.shape == (0, 4)
    assert np.array_equal(dw, np.zeros((3, 4))) and np.array_equal(db, np.zeros(3))


def test_linear_bad_input():
    with pytest.raises(ValueError, match=r"linear: weight \(3, 4\) expects inputs with 4 features"):
        F.linear(np.ones((2, 5)), np.ones((3, 4)))
    with pytest.raises(ValueError, match="bias"):
        F.linear(np.ones((2, 4)), np.ones((3, 4)), np.ones(4))


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_dropout(rng, p):
    x = rng.standard_normal((64, 1000)).astype(np.float32)
    y, mask = F.dropout(x, p, seed=7)
    assert set(np.unique(mask)) <= {0.0, 1.0}
    if p < 1:
        assert_close(y, x * mask / (1 - p), 1e-6)
    else:
        assert not y.any()
    assert abs(1 - mask.mean() - p) < 0.01  # 64,000 coins
    g = rng.standard_normal(x.shape).astype(np.float32)
    want = g * mask / (1 - p) if p < 1 else np.zeros_like(g)
    assert_close(F.dropout_backward(g, mask, p), want, 1e-6)


def test_dropout_reproducible_and_thread_invariant(threads):
    x = np.ones((100, 1000), np.float32)
    threads(1)
    a = F.dropout(x, 0.3, seed=5)[1]
    threads(3)
    assert np.array_equal(a, F.dropout(x, 0.3, seed=5)[1])
    assert not np.array_equal(a, F.dropout(x, 0.3, seed=6)[1])
    convkit.manual_seed(3)
    m1 = F.dropout(x, 0.5)[1]
    convkit.manual_seed(3)
    assert np.array_equal(m1, F.dropout(x, 0.5)[1])


def test_dropout_eval_and_errors():
    x = np.arange(6, dtype=np.float64).reshape(2, 3)
    y, mask = F.dropout(x, 0.5, training=False)
    assert np.array_equal(y, x) and y.dtype == np.float32 and mask.all()
    with pytest.raises(ValueError, match=r"dropout: expected dropout probability p in \[0, 1\]"):
        F.dropout(x, 1.5)
    with pytest.raises(ValueError, match="mask"):
        F.dropout_backward(np.ones(3), np.ones(4), 0.5)
