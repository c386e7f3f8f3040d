"""The weight gradient of a convolution through a 2x2 max pool, from the pool's gradient alone
(_core.conv2d_weight_grad_maxpool2x2; Sequential's backward runs it for a first Conv2d followed
by MaxPool2d(2) when no input gradient is wanted)."""
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

import convkit
from convkit import _core, functional as F, nn
from conftest import ISAS, needs_torch, torch

# (N, C, H, W, K, R, S, ph, pw): odd conv outputs (a last row or column in no window), pooled
# rows narrower than, equal to and wider than 8 windows, 1x1 to 7x7 and 3x8 kernels,
# asymmetric padding, N = 0 and 1, C = 1
SHAPES = [
    (16, 1, 28, 28, 6, 5, 5, 2, 2),    # LeNet-5's conv1
    (7, 3, 17, 19, 5, 3, 3, 1, 1),     # 17 x 19 outputs
    (5, 2, 15, 16, 4, 7, 7, 3, 2),
    (1, 1, 9, 9, 3, 1, 1, 0, 0),
    (3, 4, 12, 13, 9, 3, 8, 1, 0),
    (2, 3, 16, 16, 2, 3, 3, 1, 1),     # 8 windows a row
    (4, 2, 20, 21, 3, 3, 4, 1, 2),     # 9-10 windows a row
    (1, 5, 6, 6, 2, 5, 5, 0, 0),       # a 2 x 2 output: one window
    (0, 2, 8, 8, 3, 3, 3, 1, 1),
]


def _case(rng, N, C, H, W, K, R, S, ph, pw, zeros=0.5):
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = rng.standard_normal((K, C, R, S)).astype(np.float32)
    b = rng.standard_normal(K).astype(np.float32)
    y = F.conv2d(x, w, b, padding=(ph, pw))
    g = rng.standard_normal((N, K, y.shape[2] // 2, y.shape[3] // 2)).astype(np.float32)
    g[rng.random(g.shape) < zeros] = 0  # a ReLU's zeros
    return x, w, b, y, g


def _reference(g, y, x, R, S, ph, pw):
    """dW, db in float64 from the dense gradient (the winners as max_pool2d_backward picks them),
    and the sum of |terms| of each dW entry."""
    dense = F.max_pool2d_backward(g, y, 2).astype(np.float64)
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    win = sliding_window_view(xp, (R, S), axis=(2, 3))  # (N, C, P, Q, R, S)
    dw = np.einsum("nkpq,ncpqrs->kcrs", dense, win)
    mag = np.einsum("nkpq,ncpqrs->kcrs", np.abs(dense), np.abs(win))
    return dw, dense.sum(axis=(0, 2, 3)), mag


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_the_dense_float64_sum(isa, rng, shape):
    N, C, H, W, K, R, S, ph, pw = shape
    x, w, b, y, g = _case(rng, *shape)
    dw, db = _core.conv2d_weight_grad_maxpool2x2(g, y, x, w, b, ph, pw)
    want, want_db, mag = _reference(g, y, x, R, S, ph, pw)
    assert dw.shape == w.shape and db.shape == b.shape
    assert np.all(np.abs(dw - want) <= 1e-6 * mag + 1e-30)
    assert np.allclose(db, want_db, rtol=1e-6, atol=1e-6)


def test_ties_nan_winners_and_a_nan_gradient(isa, rng):
    # y with ties (the first maximum wins), a NaN (it wins its window), a NaN in g (only its
    # channel's gradients turn NaN)
    x, w, b, y, g = _case(rng, 3, 2, 10, 12, 4, 3, 3, 1, 1, zeros=0.2)
    y[:, :, 2:6, 2:6] = 1.5
    y[1, 0, 4, 7] = np.nan
    g[2, 3, 1, 1] = np.nan
    dw, db = _core.conv2d_weight_grad_maxpool2x2(g, y, x, w, b, 1, 1)
    want, want_db, mag = _reference(g, y, x, 3, 3, 1, 1)
    assert np.isnan(dw[3]).all() and np.isnan(db[3])
    assert np.all(np.abs(dw[:3] - want[:3]) <= 1e-6 * mag[:3])
    assert np.allclose(db[:3], want_db[:3], rtol=1e-6, atol=1e-6)


def test_declines_what_it_does_not_cover(rng):
    x, w, b, y, g = _case(rng, 2, 1, 12, 12, 2, 3, 9, 1, 4)  # 9 taps a row
    assert _core.conv2d_weight_grad_maxpool2x2(g, y, x, w, b, 1, 4) is None
    x, w, b, y, g = _case(rng, 2, 1, 12, 12, 2, 3, 3, 1, 1)
    x[1, 0, 5, 5] = np.inf  # the dense sum has 0 * inf = NaN: left to it
    assert _core.conv2d_weight_grad_maxpool2x2(g, y, x, w, b, 1, 1) is None
    with pytest.raises(ValueError, match="grad_out"):
        _core.conv2d_weight_grad_maxpool2x2(g[:, :, :-1], y, x, w, b, 1, 1)


def test_same_bits_for_any_thread_count_and_isa(rng, threads):
    x, w, b, y, g = _case(rng, 37, 3, 22, 23, 6, 5, 5, 2, 2)
    got = []
    before = _core.isa()
    try:
        for isa in ISAS[1:]:  # the vector ISAs: the same 8-lane arithmetic
            _core.set_isa(isa)
            for t in (1, 2, 3):
                threads(t)
                got.append(_core.conv2d_weight_grad_maxpool2x2(g, y, x, w, b, 2, 2))
    finally:
        _core.set_isa(before)
    for dw, db in got[1:]:
        assert np.array_equal(dw, got[0][0]) and np.array_equal(db, got[0][1])


def _net():
    return nn.Sequential(nn.Conv2d(2, 4, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(4, 3, 3), nn.Flatten(), nn.Linear(3 * 5 * 5, 5))


def test_sequential_backward_runs_it_for_a_first_conv_and_pool(rng):
    convkit.manual_seed(3)
    m = _net()
    x = rng.standard_normal((6, 2, 14, 14)).astype(np.float32)
    out = m(x)
    g = rng.standard_normal(out.shape).astype(np.float32)
    m.zero_grad()
    assert m.backward(g, input_grad=False) is None
    conv, pool, relu = m[0], m[2], m[1]
    assert m.run_order()[:3] == [conv, pool, relu]  # the ReLU runs after the pool
    # the pool's gradient, as the layers after it give it
    h = relu.backward(m[3].backward(m[4].backward(m[5].backward(g))))
    dw, db = _core.conv2d_weight_grad_maxpool2x2(h, pool._x, x, conv.weight.data,
                                                 conv.bias.data, 2, 2)
    assert np.array_equal(conv.weight.grad, dw) and np.array_equal(conv.bias.grad, db)
    # with the input gradient wanted, the layers' own backward (the dense sum)
    m.zero_grad()
    m(x)
    m.backward(g, input_grad=True)
    assert np.allclose(conv.weight.grad, dw, rtol=1e-5, atol=1e-5)
    assert np.allclose(conv.bias.grad, db, rtol=1e-5, atol=1e-5)


@needs_torch
def test_training_step_matches_pytorch(rng):
    convkit.manual_seed(4)
    m = _net()
    tm = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 5, padding=2), torch.nn.ReLU(),
                             torch.nn.MaxPool2d(2), torch.nn.Conv2d(4, 3, 3),
                             torch.nn.Flatten(), torch.nn.Linear(75, 5))
    with torch.no_grad():
        for (_, p), (_, tp) in zip(m.named_parameters(), tm.named_parameters()):
            tp.copy_(torch.from_numpy(p.data.astype(np.float64)))
    x = rng.standard_normal((9, 2, 14, 14)).astype(np.float32)
    g = rng.standard_normal((9, 5)).astype(np.float32)
    m(x)
    m.zero_grad()
    m.backward(g, input_grad=False)
    tm(torch.from_numpy(x.astype(np.float64))).backward(torch.from_numpy(g.astype(np.float64)))
    for p, tp in ((m[0].weight, tm[0].weight), (m[0].bias, tm[0].bias)):
        want = tp.grad.numpy()
        assert np.abs(p.grad - want).max() <= 1e-5 * np.abs(want).max()
