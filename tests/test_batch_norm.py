"""batch_norm and its gradients against PyTorch in float64, finite differences, every ISA,
thread counts; running statistics and PyTorch's errors."""
import numpy as np
import pytest

import convkit.functional as F

from conftest import assert_close, finite_diff, needs_torch, torch

# planes below 32 values go by positions (several blocks of samples: (2000, 40), (64, 300, 5))
SHAPES = [(4, 3), (2, 5, 7, 9), (128, 16, 8, 8), (3, 2, 1, 1), (2, 3, 5), (1, 4, 3, 3),
          (5, 17, 4, 4), (7, 1, 33, 2), (2000, 40), (64, 300, 5), (40, 70, 3, 3)]


def _run_torch(x, g, w, b, rm, rv, training, momentum=0.1, eps=1e-5):
    xt = torch.tensor(x.astype(np.float64), requires_grad=True)
    wt = None if w is None else torch.tensor(w.astype(np.float64), requires_grad=True)
    bt = None if b is None else torch.tensor(b.astype(np.float64), requires_grad=True)
    rmt = None if rm is None else torch.tensor(rm.astype(np.float64))
    rvt = None if rv is None else torch.tensor(rv.astype(np.float64))
    y = torch.nn.functional.batch_norm(xt, rmt, rvt, wt, bt, training, momentum, eps)
    y.backward(torch.tensor(g.astype(np.float64)))
    grads = [xt.grad.numpy(), None if wt is None else wt.grad.numpy(),
             None if bt is None else bt.grad.numpy()]
    stats = [None if rmt is None else rmt.numpy(), None if rvt is None else rvt.numpy()]
    return y.detach().numpy(), grads, stats


@needs_torch
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_matches_pytorch(isa, rng, shape, training, affine):
    C = shape[1]
    x = (rng.standard_normal(shape) * 3 + 2).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal(C).astype(np.float32) if affine else None
    b = rng.standard_normal(C).astype(np.float32) if affine else None
    rm = rng.standard_normal(C).astype(np.float32)
    rv = rng.uniform(0.5, 2, C).astype(np.float32)
    yt, gt, st = _run_torch(x, g, w, b, rm, rv, training, 0.3, 1e-3)
    rm2, rv2 = rm.copy(), rv.copy()
    y = F.batch_norm(x, rm2, rv2, w, b, training, 0.3, 1e-3)
    assert_close(y, yt, 2e-6, "y")
    assert_close(rm2, st[0], 1e-6, "running_mean")
    assert_close(rv2, st[1], 1e-6, "running_var")
    dx, dw, db = F.batch_norm_backward(g, x, rm, rv, w, b, training, 0.3, 1e-3)
    assert_close(dx, gt[0], 2e-5, "grad_x")
    if affine:
        assert_close(dw, gt[1], 2e-5, "grad_weight")
        assert_close(db, gt[2], 2e-6, "grad_bias")
    else:
        assert dw is None and db is None


@pytest.mark.parametrize("training", [True, False])
def test_gradients_by_finite_differences(rng, training):
    shape = (3, 2, 3, 2)
    x = rng.standard_normal(shape) * 2
    w = rng.standard_normal(2)
    b = rng.standard_normal(2)
    rm, rv = np.array([0.3, -0.2], np.float32), np.array([1.5, 0.7], np.float32)
    g = rng.standard_normal(shape)

    def loss(xx=x, ww=w, bb=b):  # float64 math of the forward
        ax = (0, 2, 3)
        if training:
            m, v = xx.mean(ax, keepdims=True), xx.var(ax, keepdims=True)
        else:
            m, v = rm.reshape(1, 2, 1, 1).astype(np.float64), rv.reshape(1, 2, 1, 1).astype(np.float64)
        y = (xx - m) / np.sqrt(v + 1e-5) * ww.reshape(1, 2, 1, 1) + bb.reshape(1, 2, 1, 1)
        return float((y * g).sum())

    dx, dw, db = F.batch_norm_backward(g, x, rm, rv, w, b, training)
    assert_close(dx, finite_diff(lambda v: loss(xx=v), x), 1e-4, "grad_x")
    assert_close(dw, finite_diff(lambda v: loss(ww=v), w), 1e-4, "grad_weight")
    assert_close(db, finite_diff(lambda v: loss(bb=v), b), 1e-4, "grad_bias")
    y = F.batch_norm(x, rm.copy(), rv.copy(), w, b, training)
    assert_close((y * g).sum(), loss(), 1e-5, "forward")


@pytest.mark.parametrize("shape", [(64, 16, 16, 16), (3000, 24)], ids=str)
def test_bits_do_not_depend_on_thread_count(rng, threads, shape):
    x = rng.standard_normal(shape).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    C = shape[1]
    w, b = np.ones(C, np.float32), np.zeros(C, np.float32)
    outs = []
    for t in (1, 2, 3):
        threads(t)
        rm, rv = np.zeros(C, np.float32), np.ones(C, np.float32)
        outs.append([F.batch_norm(x, rm, rv, w, b, True), rm, rv,
                     *F.batch_norm_backward(g, x, None, None, w, b, True)])
    for o in outs[1:]:
        for a, c in zip(outs[0], o):
            np.testing.assert_array_equal(a, c)


def test_large_mean_keeps_precision():
    # two passes in float64: a large offset does not swamp a small variance
    x = (1e4 + np.arange(8, dtype=np.float32) * 1e-1).reshape(8, 1)
    y = F.batch_norm(x, None, None, training=True, eps=0.0)
    ref = (x - x.astype(np.float64).mean()) / x.astype(np.float64).std()
    assert_close(y, ref, 1e-5)


def test_one_value_per_channel_raises_like_pytorch():
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        F.batch_norm(np.ones((1, 3)), None, None, training=True)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        F.batch_norm(np.ones((1, 3, 1, 1)), np.zeros(3, np.float32), np.ones(3, np.float32),
                     training=True)
    F.batch_norm(np.ones((1, 3)), np.zeros(3), np.ones(3), training=False)  # fine in eval


def test_running_stats_must_be_updatable():
    with pytest.raises(ValueError, match="running_mean' must be a writable C-contiguous float32"):
        F.batch_norm(np.ones((4, 3)), np.zeros(3), np.ones(3, np.float32), training=True)
    with pytest.raises(ValueError, match="needed in evaluation mode"):
        F.batch_norm(np.ones((4, 3)), None, None, training=False)
    with pytest.raises(ValueError, match="expected running_var of shape"):
        F.batch_norm(np.ones((4, 3)), np.zeros(3), np.ones(2), training=False)
    with pytest.raises(ValueError, match="expected weight of shape"):
        F.batch_norm(np.ones((4, 3)), None, None, np.ones(4), training=True)


def test_nan_stays_in_its_channel():
    x = np.ones((4, 2, 3, 3), np.float32)
    x[1, 0, 1, 1] = np.nan
    y = F.batch_norm(x, None, None, training=True)
    assert np.isnan(y[:, 0]).all() and not np.isnan(y[:, 1]).any()


def test_empty_batch():
    y = F.batch_norm(np.zeros((0, 3, 4, 4)), np.zeros(3, np.float32), np.ones(3, np.float32),
                     training=False)
    assert y.shape == (0, 3, 4, 4)


def test_input_grad_false_skips_grad_x(rng):
    x = rng.standard_normal((4, 3)).astype(np.float32)
    dx, dw, db = F.batch_norm_backward(np.ones((4, 3)), x, None, None, np.ones(3), np.ones(3),
                                       True, input_grad=False)
    assert dx is None and dw.shape == db.shape == (3,)


@pytest.mark.parametrize("n, c, h, w, k, r, st", [
    (20, 5, 9, 11, 7, 3, 1),    # a full group of 16 images and 4 more; 11 columns
    (16, 16, 8, 8, 16, 3, 1),   # whole blocks of 8 positions only
    (33, 3, 6, 13, 9, 5, 1),    # F(2x2, 5x5); 78 positions a plane
    (17, 8, 4, 6, 8, 3, 1),     # 24 positions a plane: the norm's own pass after the convolution
    (1, 32, 16, 16, 32, 3, 1),  # batch 1: direct's items are runs of rows
    (3, 16, 13, 15, 40, 3, 2),  # strided; kvec's tiles of several channel blocks, a part block
    (2, 24, 11, 9, 70, 1, 2),   # 1x1 strided, 5 channel blocks
    (1, 64, 8, 8, 64, 3, 1),    # kvec's rows of 8 at batch 1
])
def test_conv2d_bn_has_the_bits_of_conv2d_then_batch_norm(isa, rng, threads, n, c, h, w, k, r,
                                                           st):
    # _core.conv2d_bn runs an evaluation-mode batch norm (and the residual sum and ReLU after
    # it) on the convolution's output, in the lanes Winograd's item (the norm's own pass after
    # the other rows): the output must be bitwise conv2d then batch_norm, for the planned row
    # and the forced lanes / direct / kvec rows, strided too, with and without add, relu and the
    # affine terms, 1 or 2 threads; NaN and -0 in the output
    from convkit import _core
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = (rng.standard_normal((k, c, r, r)) / r).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    rm = rng.standard_normal(k).astype(np.float32)
    rv = (rng.random(k) + 0.05).astype(np.float32)
    bw = rng.standard_normal(k).astype(np.float32)  # negative scales too
    bb = rng.standard_normal(k).astype(np.float32)
    p = r // 2
    add = rng.standard_normal(_core.conv2d(x, wt, None, st, st, p, p).shape).astype(np.float32)
    add.flat[::5] = -0.0
    add.flat[3] = np.nan
    cases = 0
    for row in ["", "winograd3_lanes", "direct", "kvec"]:
        if row and not _core.conv2d_applies("forward", row, x.shape, wt.shape, st, st, p, p):
            continue
        _core.conv2d_force("forward", row)
        try:
            for nthreads in (1, 2):
                threads(nthreads)
                for bias, affine, a, relu in [(None, True, None, True), (b, True, add, True),
                                              (None, False, add, False), (b, False, None, False)]:
                    y = _core.conv2d(x, wt, bias, st, st, p, p)
                    want = _core.batch_norm(y, rm, rv, bw if affine else None,
                                            bb if affine else None, False, 0.1, 1e-5, relu, a)
                    got = _core.conv2d_bn(x, wt, bias, st, st, p, p, 1, 1, 1, rm, rv,
                                          bw if affine else None, bb if affine else None, 1e-5,
                                          relu, a)
                    assert np.array_equal(got.view(np.int32), want.view(np.int32)), \
                        (row, nthreads, bias is not None, affine, a is not None, relu)
                    cases += 1
        finally:
            _core.conv2d_force("forward", "")
    assert cases >= 16
    if st != 1:
        return
    # an infinite input: the lanes row declines, the next row and the norm's pass run
    x[-1, 0, 2, 3] = np.inf
    y = _core.conv2d(x, wt, b, 1, 1, p, p)
    want = _core.batch_norm(y, rm, rv, bw, bb, False, 0.1, 1e-5, True, add)
    got = _core.conv2d_bn(x, wt, b, 1, 1, p, p, 1, 1, 1, rm, rv, bw, bb, 1e-5, True, add)
    assert np.array_equal(got.view(np.int32), want.view(np.int32))
    with pytest.raises(ValueError, match="batch_norm.*running_var"):
        _core.conv2d_bn(x, wt, b, 1, 1, p, p, 1, 1, 1, rm, rv[:-1], bw, bb, 1e-5, True, add)
    with pytest.raises(ValueError, match="add"):
        _core.conv2d_bn(x, wt, b, 1, 1, p, p, 1, 1, 1, rm, rv, bw, bb, 1e-5, True, add[:, :1])
    with pytest.raises(ValueError, match="^conv2d: weight"):
        _core.conv2d_bn(x[:, 1:], wt, b, 1, 1, p, p, 1, 1, 1, rm, rv, bw, bb, 1e-5, True, add)
