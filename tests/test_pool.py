"""max_pool2d / avg_pool2d and their gradients: NumPy float64, C++ reference, PyTorch, FD."""
import numpy as np
import pytest

import convkit.functional as F
from convkit import _core

import reference as R
from conftest import assert_close, finite_diff, needs_torch, torch

# (N, C, H, W, kernel, stride, padding); stride None = kernel
CASES = [
    (2, 3, 8, 8, (2, 2), None, (0, 0)),
    (1, 1, 7, 9, (3, 3), (2, 2), (1, 1)),     # overlapping windows with padding
    (2, 5, 11, 10, (3, 2), (1, 1), (1, 0)),   # stride 1: heavy overlap, asymmetric
    (1, 2, 13, 17, (5, 5), (3, 2), (2, 2)),   # stride 3
    (3, 1, 6, 6, (1, 1), (1, 1), (0, 0)),
    (1, 4, 31, 33, (2, 2), (2, 2), (1, 1)),   # odd sizes, SIMD tails
    (1, 1, 4, 4, (4, 4), None, (0, 0)),       # one window
    (2, 3, 9, 35, (2, 2), None, (0, 0)),      # 2x2 fast path: odd sizes, a 17-wide SIMD tail
    (1, 2, 2, 64, (2, 2), (2, 2), (0, 0)),    # 2x2 fast path: exactly two SIMD steps
]


def _x(rng, c, dup=False):
    x = rng.standard_normal(c[:4]).astype(np.float32)
    if dup:  # many ties: exercises "first maximum in row-major order"
        x = np.round(x).astype(np.float32)
    return x


def _k(c):
    k, s, p = c[4], c[5], c[6]
    return k, (k if s is None else s), p


@pytest.mark.parametrize("c", CASES, ids=str)
@pytest.mark.parametrize("op", ["max", "avg"])
def test_forward(isa, pool_path, rng, c, op):
    x = _x(rng, c)
    k, s, p = _k(c)
    f = F.max_pool2d if op == "max" else F.avg_pool2d
    y = f(x, c[4], c[5], c[6])
    assert_close(y, R.pool2d(x, k, s, p, op), 1e-6, op)


@pytest.mark.parametrize("c", CASES, ids=str)
@pytest.mark.parametrize("op", ["max", "avg"])
def test_backward_matches_reference(isa, pool_path, rng, c, op):
    x = _x(rng, c, dup=True)
    k, s, p = _k(c)
    fwd = F.max_pool2d if op == "max" else F.avg_pool2d
    bwd = F.max_pool2d_backward if op == "max" else F.avg_pool2d_backward
    refb = _core.ref_max_pool2d_backward if op == "max" else _core.ref_avg_pool2d_backward
    g = rng.standard_normal(fwd(x, c[4], c[5], c[6]).shape).astype(np.float32)
    dx = bwd(g, x, c[4], c[5], c[6])
    assert_close(dx, refb(g, x, *k, *s, *p), 1e-6, op)


@needs_torch
@pytest.mark.parametrize("c", CASES, ids=str)
@pytest.mark.parametrize("op", ["max", "avg"])
def test_matches_pytorch(rng, c, op):
    x = _x(rng, c, dup=(op == "max"))
    xt = torch.tensor(x.astype(np.float64), requires_grad=True)
    tf = torch.nn.functional.max_pool2d if op == "max" else torch.nn.functional.avg_pool2d
    yt = tf(xt, c[4], c[5], c[6])
    g = rng.standard_normal(tuple(yt.shape)).astype(np.float32)
    yt.backward(torch.tensor(g.astype(np.float64)))
    fwd = F.max_pool2d if op == "max" else F.avg_pool2d
    bwd = F.max_pool2d_backward if op == "max" else F.avg_pool2d_backward
    assert_close(fwd(x, c[4], c[5], c[6]), yt.detach().numpy(), 1e-5, "forward")
    assert_close(bwd(g, x, c[4], c[5], c[6]), xt.grad.numpy(), 1e-5, "backward")


def test_max_backward_goes_to_first_maximum():
    x = np.zeros((1, 1, 2, 2), np.float32)  # all four tie
    dx = F.max_pool2d_backward(np.ones((1, 1, 1, 1)), x, 2)
    assert np.array_equal(dx, [[[[1, 0], [0, 0]]]])


def test_avg_gradient_by_finite_differences(rng):
    c = CASES[1]
    x = _x(rng, c).astype(np.float64)
    k, s, p = _k(c)
    g = rng.standard_normal(R.pool2d(x, k, s, p, "avg").shape)
    dx = F.avg_pool2d_backward(g, x, c[4], c[5], c[6])
    fd = finite_diff(lambda v: float((R.pool2d(v, k, s, p, "avg") * g).sum()), x)
    assert_close(dx, fd, 1e-5)


def test_max_gradient_by_finite_differences(rng):
    c = CASES[2]
    x = rng.permutation(np.prod(c[:4])).reshape(c[:4]).astype(np.float64)  # distinct values
    k, s, p = _k(c)
    g = rng.standard_normal(R.pool2d(x, k, s, p, "max").shape)
    dx = F.max_pool2d_backward(g, x, c[4], c[5], c[6])
    fd = finite_diff(lambda v: float((R.pool2d(v, k, s, p, "max") * g).sum()), x, eps=1e-3)
    assert_close(dx, fd, 1e-6)


def test_thread_count_invariance(rng, threads):
    x = rng.standard_normal((8, 6, 30, 30)).astype(np.float32)
    g = rng.standard_normal((8, 6, 15, 15)).astype(np.float32)
    outs = []
    for n in (1, 2, 3):
        threads(n)
        outs.append([F.max_pool2d(x, 3, 2, 1), F.avg_pool2d(x, 3, 2, 1),
                     F.max_pool2d_backward(g, x, 3, 2, 1), F.avg_pool2d_backward(g, x, 3, 2, 1)])
    for o in outs[1:]:
        for a, b in zip(o, outs[0]):
            assert np.array_equal(a, b)


def test_2x2_backward_with_nan_and_ties(isa):
    x = np.zeros((1, 1, 4, 40), np.float32)
    x[0, 0, 1, 3] = np.nan           # window (0, 1): NaN in its bottom-right corner wins
    x[0, 0, 2, 4] = x[0, 0, 3, 5] = 7  # window (1, 2): tie, the first in row-major order wins
    g = np.arange(1, 41, dtype=np.float32).reshape(1, 1, 2, 20)
    dx = F.max_pool2d_backward(g, x, 2)
    assert np.array_equal(dx, _core.ref_max_pool2d_backward(g, x, 2, 2, 2, 2, 0, 0))
    assert dx[0, 0, 1, 3] == 2 and dx[0, 0, 2, 4] == 23 and dx[0, 0, 3, 5] == 0
    assert np.isnan(F.max_pool2d(x, 2)[0, 0, 0, 1])


def test_nan_and_inf():
    x = np.array([[[[1, np.nan], [3, 4]]]], np.float32)
    assert np.isnan(F.max_pool2d(x, 2)).all()
    x = np.array([[[[1, np.inf], [3, 4]]]], np.float32)
    assert F.max_pool2d(x, 2)[0, 0, 0, 0] == np.inf
    assert F.avg_pool2d(x, 2)[0, 0, 0, 0] == np.inf


def test_empty_batch():
    assert F.max_pool2d(np.zeros((0, 3, 8, 8)), 2).shape == (0, 3, 4, 4)
    assert F.avg_pool2d_backward(np.zeros((0, 3, 4, 4)), np.zeros((0, 3, 8, 8)), 2).shape == (0, 3, 8, 8)


@pytest.mark.parametrize("fn", [F.max_pool2d, F.avg_pool2d])
@pytest.mark.parametrize("args,exc,frag", [
    (((8, 8), 2), ValueError, "4-D"),
    (((1, 1, 8, 8), 0), ValueError, "kernel_size >= 1"),
    (((1, 1, 8, 8), 2, 0), ValueError, "stride >= 1"),
    (((1, 1, 8, 8), 2, 2, 2), ValueError, "half the kernel"),
    (((1, 1, 3, 3), 5), ValueError, "larger than the padded input"),
    (((1, 1, 8, 8), 2.5), TypeError, "kernel_size"),
])
def test_bad_input(fn, args, exc, frag):
    with pytest.raises(exc, match=frag) as e:
        fn(np.ones(args[0]), *args[1:])
    assert fn.__name__ in str(e.value)


def test_backward_checks_grad_out_shape():
    with pytest.raises(ValueError, match=r"max_pool2d_backward: expected grad_out of shape \(1, 1, 4, 4\)"):
        F.max_pool2d_backward(np.ones((1, 1, 3, 3)), np.ones((1, 1, 8, 8)), 2)
