"""softmax / log_softmax over any axis, the losses, and their gradients."""
import numpy as np
import pytest

import convkit.functional as F
from convkit import nn

import reference as R
from conftest import assert_close, finite_diff, needs_torch, torch


@pytest.mark.parametrize("shape,axis", [((4, 10), -1), ((3, 17), 1), ((2, 5, 3, 4), 1),
                                        ((6, 33, 2), 0), ((7,), 0), ((2, 3, 31), -1)])
@pytest.mark.parametrize("log", [False, True])
def test_softmax_forward_backward(isa, rng, shape, axis, log):
    x = (rng.standard_normal(shape) * 5).astype(np.float32)
    f, fb = (F.log_softmax, F.log_softmax_backward) if log else (F.softmax, F.softmax_backward)
    ref = R.log_softmax if log else R.softmax
    assert_close(f(x, axis=axis), ref(x, axis), 1e-6)
    g = rng.standard_normal(shape)
    fd = finite_diff(lambda v: float((ref(v, axis) * g).sum()), x.astype(np.float64))
    assert_close(fb(g, x, axis=axis), fd, 1e-5)


@pytest.mark.parametrize("L", [1000, 130, 67, 64, 17])
@pytest.mark.parametrize("log", [False, True])
def test_long_rows_with_the_largest_anywhere(isa, rng, L, log):
    # rows long enough for the vector loops (largest entry, its first index, the float64
    # sums), the largest at a vector's first or last lane, past the vectors, tied across
    # vectors, and a row whose first entry is NaN
    x = (rng.standard_normal((9, L)) * 3).astype(np.float32)
    for r, k in enumerate([0, 15, 16, L - 1, L // 2, 33 % L]):
        x[r, k] = 20.0
    x[6, [3 % L, (L - 2) % L]] = 25.0  # a tie: the first one is the largest entry
    x[7, :] = -1e4
    x[7, 16 % L] = 1e4  # shifted by any other entry, exp overflows
    x[8, 0] = np.nan
    f, fb = (F.log_softmax, F.log_softmax_backward) if log else (F.softmax, F.softmax_backward)
    g = rng.standard_normal(x.shape).astype(np.float32)
    y, dx = f(x), fb(g, x)
    assert np.isnan(y[8]).all() and np.isnan(dx[8]).all()
    x64, g64 = x[:8].astype(np.float64), g[:8].astype(np.float64)
    if log:
        want, s = R.log_softmax(x64), R.softmax(x64)
        want_dx = g64 - s * g64.sum(axis=1, keepdims=True)
    else:
        want = R.softmax(x64)
        want_dx = want * (g64 - (want * g64).sum(axis=1, keepdims=True))
    assert_close(y[:8], want, 1e-6)
    assert np.abs(dx[:8] - want_dx).max() <= 1e-6 * (np.abs(g64).max() + 1)
    labels = rng.integers(0, L, 8)
    assert F.cross_entropy(x[:8], labels) == pytest.approx(R.cross_entropy(x64, labels), rel=1e-6)


@pytest.mark.parametrize("L", [1, 5, 21, 67])
@pytest.mark.parametrize("log", [False, True])
def test_columns_of_another_axis(isa, rng, L, log):
    # a softmax over axis 1 of (2, L, 40): 40 independent columns, run a vector of columns at a
    # time and the last few through a padded copy; the largest entry first, last, tied, past a
    # vector, overflowing if any other were taken, and a column whose first entry is NaN
    x = (rng.standard_normal((2, L, 40)) * 3).astype(np.float32)
    x[0, 0, 0] = x[1, L - 1, 5] = x[0, L // 2, 39] = 30.0
    x[1, [0, L - 1], 17] = 31.0
    x[0, :, 33] = -1e4
    x[0, 16 % L, 33] = 1e4
    x[1, 0, 20] = np.nan
    f, fb = (F.log_softmax, F.log_softmax_backward) if log else (F.softmax, F.softmax_backward)
    g = rng.standard_normal(x.shape).astype(np.float32)
    y, dx = f(x, axis=1), fb(g, x, axis=1)
    assert np.isnan(y[1, :, 20]).all() and np.isnan(dx[1, :, 20]).all()
    y[1, :, 20] = dx[1, :, 20] = 0
    x64, g64 = x.astype(np.float64), g.astype(np.float64)
    x64[1, :, 20] = 0
    s = R.softmax(x64, 1)
    want = R.log_softmax(x64, 1) if log else s
    if log:
        want_dx = g64 - s * g64.sum(axis=1, keepdims=True)
    else:
        want_dx = s * (g64 - (s * g64).sum(axis=1, keepdims=True))
    want[1, :, 20] = want_dx[1, :, 20] = 0
    assert_close(y, want, 1e-6)
    assert np.abs(dx - want_dx).max() <= 1e-6 * (np.abs(g64).max() + 1)


@pytest.mark.parametrize("shape,axis", [((9, 1000), 1), ((5, 67), -1), ((4, 17), 1), ((3, 1), 1),
                                        ((2, 21, 40), 1), ((2, 5, 16), 1), ((3, 4, 7), 1),
                                        ((6, 33, 2), 0), ((0, 5), 1)])
@pytest.mark.parametrize("log", [False, True])
def test_layers_backward_from_the_output(isa, threads, rng, shape, axis, log):
    # nn.Softmax / nn.LogSoftmax take the gradient from the output they returned (rows in
    # vectors with a tail, a vector of columns at a time and the last few through a padded
    # copy), against float64; a NaN row or column stays NaN; the bits do not depend on the
    # thread count
    x = (rng.standard_normal(shape) * 4).astype(np.float32)
    if x.size:
        x[(0,) * x.ndim] = np.nan
    g = rng.standard_normal(shape).astype(np.float32)
    m = (nn.LogSoftmax if log else nn.Softmax)(dim=axis)
    m(x)
    dx = m.backward(g)
    bad = np.isnan(x).any(axis=axis, keepdims=True) & np.ones(shape, bool)
    assert np.isnan(dx[bad]).all()
    x64, g64 = np.where(bad, 0, x).astype(np.float64), g.astype(np.float64)
    s = R.softmax(x64, axis)
    if log:
        want = g64 - s * g64.sum(axis=axis, keepdims=True)
    else:
        want = s * (g64 - (s * g64).sum(axis=axis, keepdims=True))
    err = np.abs(np.where(bad, 0, dx) - np.where(bad, 0, want))
    assert err.max(initial=0) <= 1e-6 * (np.abs(g64).max(initial=0) + 1)
    for t in (1, 3):
        threads(t)
        m(x)
        assert m.backward(g).tobytes() == dx.tobytes()


@pytest.mark.parametrize("log", [False, True])
def test_softmax_extreme_inputs(isa, log):
    x = np.array([[1e4, -1e4, 0.0, 1e4 - 1], [-1e4, -1e4 + 3, -1e4, -1e4]], np.float32)
    f = F.log_softmax if log else F.softmax
    ref = R.log_softmax if log else R.softmax
    y = f(x)
    assert np.isfinite(y).all()
    assert_close(y, ref(x), 1e-6)
    assert np.isnan(f(np.array([[0, np.nan, 1]], np.float32))).all()


@needs_torch
@pytest.mark.parametrize("log", [False, True])
def test_softmax_matches_pytorch(rng, log):
    x = (rng.standard_normal((3, 4, 5)) * 100).astype(np.float32)
    xt = torch.tensor(x.astype(np.float64), requires_grad=True)
    yt = (torch.log_softmax if log else torch.softmax)(xt, 1)
    g = rng.standard_normal(x.shape)
    yt.backward(torch.tensor(g))
    f, fb = (F.log_softmax, F.log_softmax_backward) if log else (F.softmax, F.softmax_backward)
    assert_close(f(x, 1), yt.detach().numpy(), 1e-5)
    assert_close(fb(g, x, 1), xt.grad.numpy(), 1e-4)


def test_softmax_bad_axis():
    with pytest.raises(ValueError, match=r"softmax: expected axis in \[-2, 1\]"):
        F.softmax(np.ones((2, 3)), axis=2)


@pytest.mark.parametrize("N,K,scale", [(1, 2, 1), (5, 10, 3), (64, 10, 1e4), (7, 1000, 30)])
def test_cross_entropy(isa, rng, N, K, scale):
    x = (rng.standard_normal((N, K)) * scale).astype(np.float32)
    y = rng.integers(0, K, N)
    loss = F.cross_entropy(x, y)
    assert isinstance(loss, float)
    assert abs(loss - R.cross_entropy(x, y)) <= 1e-5 * max(1.0, abs(R.cross_entropy(x, y)))
    if scale <= 3:
        fd = finite_diff(lambda v: R.cross_entropy(v, y), x.astype(np.float64))
        assert_close(F.cross_entropy_backward(1.0, x, y), fd, 1e-5)
    assert_close(F.cross_entropy_backward(2.5, x, y), 2.5 * F.cross_entropy_backward(1.0, x, y), 1e-6)


def _bce(x, t):
    x = np.asarray(x, np.float64)
    return float(np.mean(np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))))


@pytest.mark.parametrize("scale", [1.0, 1e4])
def test_bce_with_logits(isa, rng, scale):
    x = (rng.standard_normal((6, 7)) * scale).astype(np.float32)
    t = rng.random((6, 7)).astype(np.float32)
    assert abs(F.binary_cross_entropy_with_logits(x, t) - _bce(x, t)) <= 1e-6 * max(1, _bce(x, t))
    if scale == 1.0:
        fd = finite_diff(lambda v: _bce(v, t), x.astype(np.float64))
        assert_close(F.binary_cross_entropy_with_logits_backward(1.0, x, t), fd, 1e-5)


@pytest.mark.parametrize("case", ["wide", "near_zero", "very_negative", "below", "above"])
def test_bce_with_logits_many_values(isa, rng, case):
    # vectors of terms (log1p(exp(-|x|)) in float vectors) and blocks of 4096 summed in order:
    # logits over many scales, near 0, so negative that 1 + exp(x) rounds to 1 (t = 0: the loss
    # is log1p(exp(x)) alone), and on either side of 1 + exp(-|x|) = sqrt(2)
    n = 9001
    if case == "wide":
        x = rng.standard_normal(n) * rng.choice([0.01, 1, 10, 100, 1e4], n)
    elif case == "near_zero":
        x = rng.standard_normal(n) * 1e-6
    elif case == "very_negative":
        x = -rng.uniform(17, 80, n)
    else:  # 1 + exp(-|x|) just below / just above sqrt(2) (the two sides' errors differ)
        side = 1 if case == "below" else -1
        x = np.log(np.sqrt(2) - 1) * (1 + side * rng.uniform(0, 1e-3, n)) * rng.choice([-1, 1], n)
    x = x.astype(np.float32)
    t = np.zeros(n, np.float32) if case == "very_negative" else rng.random(n).astype(np.float32)
    want = _bce(x, t)
    assert abs(F.binary_cross_entropy_with_logits(x, t) - want) <= 1e-6 * want


def test_mse(isa, rng):
    p = rng.standard_normal((5, 3, 2)).astype(np.float32)
    t = rng.standard_normal((5, 3, 2)).astype(np.float32)
    want = float(np.mean((p.astype(np.float64) - t) ** 2))
    assert abs(F.mse_loss(p, t) - want) <= 1e-6 * want
    fd = finite_diff(lambda v: float(np.mean((v - t) ** 2)), p.astype(np.float64))
    assert_close(F.mse_loss_backward(0.5, p, t), 0.5 * fd, 1e-5)


@needs_torch
def test_losses_match_pytorch(rng):
    nnf = torch.nn.functional
    x = (rng.standard_normal((9, 6)) * 4).astype(np.float32)
    y = rng.integers(0, 6, 9)
    t = rng.random((9, 6)).astype(np.float32)
    for ours, theirs, args in [
        (F.cross_entropy, lambda a: nnf.cross_entropy(a, torch.tensor(y)), (x, y)),
        (F.binary_cross_entropy_with_logits,
         lambda a: nnf.binary_cross_entropy_with_logits(a, torch.tensor(t, dtype=torch.float64)), (x, t)),
        (F.mse_loss, lambda a: nnf.mse_loss(a, torch.tensor(t, dtype=torch.float64)), (x, t)),
    ]:
        xt = torch.tensor(x.astype(np.float64), requires_grad=True)
        lt = theirs(xt)
        lt.backward(torch.tensor(0.7))
        assert abs(ours(*args) - lt.item()) <= 1e-5 * abs(lt.item())
        back = {F.cross_entropy: F.cross_entropy_backward,
                F.binary_cross_entropy_with_logits: F.binary_cross_entropy_with_logits_backward,
                F.mse_loss: F.mse_loss_backward}[ours]
        assert_close(back(0.7, *args), xt.grad.numpy(), 1e-5)


def test_loss_bad_input():
    x = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match=r"cross_entropy: labels\[1\] = 4 is out of range"):
        F.cross_entropy(x, [0, 4, 1])
    with pytest.raises(ValueError, match="out of range"):
        F.cross_entropy_backward(1.0, x, [0, -1, 1])
    with pytest.raises(ValueError, match=r"labels of shape \(3,\)"):
        F.cross_entropy(x, [0, 1])
    with pytest.raises(TypeError, match="integer class labels"):
        F.cross_entropy(x, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="mse_loss: expected target of the same shape"):
        F.mse_loss(np.ones(3), np.ones(4))
    with pytest.raises(TypeError, match="grad_out"):
        F.mse_loss_backward("one", np.ones(3), np.ones(3))


def test_loss_nan_and_empty():
    assert np.isnan(F.mse_loss([np.nan, 1.0], [0.0, 1.0]))
    assert np.isnan(F.cross_entropy(np.zeros((0, 3)), np.zeros(0, np.int64)))
    assert F.cross_entropy_backward(1.0, np.zeros((0, 3)), np.zeros(0, np.int64)).shape == (0, 3)


def test_bitwise_identical_for_any_thread_count(rng, threads):
    x = (rng.standard_normal((300, 37, 5)) * 3).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    logits = (rng.standard_normal((5000, 10)) * 3).astype(np.float32)
    labels = rng.integers(0, 10, 5000)
    t = rng.random(x.shape).astype(np.float32)
    outs = []
    for n in (1, 2, 3):
        threads(n)
        outs.append([F.softmax(x, 1), F.log_softmax_backward(g, x, 1), F.softmax_backward(g, x, -1),
                     np.float64(F.cross_entropy(logits, labels)),
                     F.cross_entropy_backward(1.0, logits, labels),
                     np.float64(F.binary_cross_entropy_with_logits(x, t)),
                     np.float64(F.mse_loss(x, t)), F.mse_loss_backward(1.0, x, t)])
    for o in outs[1:]:
        for a, b in zip(o, outs[0]):
            assert np.array_equal(a, b)


def test_log_softmax_keeps_float32_accuracy_at_large_offsets(isa, rng):
    """log-sum-exp must not be rounded to float32 before the subtraction: [[1000, 993.7758]]
    once gave -1.953125e-3 for -1.97898e-3 (and 0.0 for -5.1e-5)."""
    rows = [np.array([[1000.0, 993.7758]], np.float32),
            np.array([[-3000.0, -3009.9]], np.float32)]
    rows.append((rng.standard_normal((64, 7)) * 3 + rng.uniform(-2000, 2000, (64, 1)))
                .astype(np.float32))
    for x in rows:
        x64 = x.astype(np.float64)
        m = x64.max(axis=1, keepdims=True)
        want = x64 - m - np.log(np.exp(x64 - m).sum(axis=1, keepdims=True))
        got = F.log_softmax(x)
        # within a few float32 roundings of the float64 value (relative), element by element (the
        # exponentials are good to 2 ulp); PyTorch's float32 is 4e-3 off on the first row
        assert np.all(np.abs(got - want) <= 5e-7 * np.abs(want) + 1e-30), (got, want)


@pytest.mark.parametrize("shape", [(2, 5, 300), (1, 21, 64, 64), (3, 2, 129)])
@pytest.mark.parametrize("log", [False, True])
def test_columns_in_runs_of_chunks(isa, rng, threads, shape, log):
    # a softmax over axis 1 with many columns: items are runs of up to 8 vector-wide chunks, the
    # last chunk partial; each chunk's rows are copied once and the next chunk's prefetched
    x = (rng.standard_normal(shape) * 4).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)
    f, fb = (F.log_softmax, F.log_softmax_backward) if log else (F.softmax, F.softmax_backward)
    x64, g64 = x.astype(np.float64), g.astype(np.float64)
    s = R.softmax(x64, 1)
    want = R.log_softmax(x64, 1) if log else s
    want_dx = g64 - s * g64.sum(axis=1, keepdims=True) if log else \
        s * (g64 - (s * g64).sum(axis=1, keepdims=True))
    outs = []
    for n in (1, 2, 3):
        threads(n)
        y, dx = f(x, axis=1), fb(g, x, axis=1)
        assert np.abs(y - want).max() <= 5e-7 * np.abs(want).max()
        assert np.abs(dx - want_dx).max() <= 1e-6 * (np.abs(g64).max() + 1)
        outs.append((y, dx))
    for y, dx in outs[1:]:
        assert np.array_equal(y, outs[0][0]) and np.array_equal(dx, outs[0][1])


# -- PyTorch's loss options: weight, ignore_index, reduction, label_smoothing, pos_weight ------

def _vs_torch(loss, tloss, grad, tgrad, what):
    lv = tloss.detach().numpy()
    assert np.array_equal(np.isnan(np.asarray(loss, dtype=np.float64)), np.isnan(lv)), what
    ok = ~np.isnan(lv)
    assert np.allclose(np.asarray(loss)[ok], lv[ok], rtol=1e-5, atol=1e-6), what
    assert np.allclose(grad, tgrad, rtol=1e-5, atol=1e-6), what


@needs_torch
@pytest.mark.parametrize("N,K", [(0, 3), (1, 1), (6, 4), (9, 10)])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("ignore", ["none", "default", "some", "all"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1, 1.0])
def test_cross_entropy_options_match_pytorch(rng, N, K, weighted, ignore, reduction, smoothing):
    from convkit import nn
    x = (rng.standard_normal((N, K)) * 3).astype(np.float32)
    y = rng.integers(0, K, N)
    ii = -100
    if ignore == "default":  # PyTorch's default ignore_index in the labels
        y[: N // 2] = -100
    elif ignore == "some":
        ii = int(y[0]) if N else 0
    elif ignore == "all":
        ii, y[:] = 0, 0
    w = (rng.random(K) + 0.1).astype(np.float32) if weighted else None
    xt = torch.tensor(x, requires_grad=True)
    lt = torch.nn.functional.cross_entropy(
        xt, torch.tensor(y), weight=None if w is None else torch.tensor(w), ignore_index=ii,
        reduction=reduction, label_smoothing=smoothing)
    crit = nn.CrossEntropyLoss(weight=w, ignore_index=ii, reduction=reduction,
                               label_smoothing=smoothing)
    loss = crit(x, y)
    assert isinstance(loss, np.ndarray if reduction == "none" else float)
    g = rng.standard_normal(N).astype(np.float32) if reduction == "none" else 0.7
    if N:
        lt.backward(torch.tensor(g))
    tgrad = xt.grad.numpy() if xt.grad is not None else np.zeros_like(x)
    _vs_torch(loss, lt, crit.backward(g), tgrad, "cross_entropy")
    F_kw = dict(weight=w, ignore_index=ii, reduction=reduction, label_smoothing=smoothing)
    np.testing.assert_array_equal(F.cross_entropy(x, y, **F_kw), loss)


@needs_torch
@pytest.mark.parametrize("shape", [(7,), (3, 5), (0, 2)])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("pos", [False, True])
def test_bce_and_mse_options_match_pytorch(rng, shape, weighted, reduction, pos):
    from convkit import nn
    TF = torch.nn.functional
    x = (rng.standard_normal(shape) * 4).astype(np.float32)
    t = rng.random(shape).astype(np.float32)
    w = (rng.random(shape[-1:]) + 0.1).astype(np.float32) if weighted else None
    p = (rng.random(shape[-1:]) * 3).astype(np.float32) if pos else None
    g = rng.standard_normal(shape).astype(np.float32) if reduction == "none" else 0.7
    for crit, tf, kw, tkw in [
            (nn.BCEWithLogitsLoss(weight=w, reduction=reduction, pos_weight=p),
             TF.binary_cross_entropy_with_logits, {},
             dict(weight=None if w is None else torch.tensor(w),
                  pos_weight=None if p is None else torch.tensor(p))),
            (nn.MSELoss(reduction=reduction), TF.mse_loss, {}, {})]:
        xt = torch.tensor(x, requires_grad=True)
        lt = tf(xt, torch.tensor(t), reduction=reduction, **tkw)
        loss = crit(x, t)
        if x.size:
            lt.backward(torch.tensor(g))
        tgrad = xt.grad.numpy() if xt.grad is not None else np.zeros_like(x)
        _vs_torch(loss, lt, crit.backward(g), tgrad, type(crit).__name__)


def test_loss_options_are_checked():
    from convkit import nn
    with pytest.raises(ValueError, match="reduction"):
        nn.CrossEntropyLoss(reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing"):
        nn.CrossEntropyLoss(label_smoothing=1.5)
    with pytest.raises(ValueError, match="reduction"):
        F.mse_loss(np.zeros(2), np.zeros(2), reduction="mea")
    with pytest.raises(ValueError, match=r"labels\[1\] = 5 is out of range"):
        F.cross_entropy(np.zeros((2, 3)), [0, 5], label_smoothing=0.1)
    with pytest.raises(ValueError, match="out of range"):  # -100 is only skipped as ignore_index
        F.cross_entropy(np.zeros((2, 3)), [0, -100], ignore_index=2)
    with pytest.raises(ValueError, match="weight"):
        F.cross_entropy(np.zeros((2, 3)), [0, 1], weight=np.ones(2))


@needs_torch
@pytest.mark.parametrize("form", ["unbatched", "positions", "probabilities",
                                  "position_probabilities"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_forms_match_pytorch(rng, form, reduction):
    """PyTorch's other cross-entropy forms: unbatched logits (K,), logits (N, K, d1, d2) with
    labels (N, d1, d2), and class probabilities as targets (2-D and per position), with class
    weights and label smoothing: the loss and its gradient, function and layer."""
    K = 5
    shape = {"unbatched": (K,), "positions": (3, K, 4, 2), "probabilities": (6, K),
             "position_probabilities": (2, K, 3)}[form]
    x = (rng.standard_normal(shape) * 4).astype(np.float32)
    if "probabilities" in form:
        y = rng.random(shape).astype(np.float32)
        y /= y.sum(axis=1, keepdims=True)
    else:
        y = rng.integers(0, K, shape[:1] + shape[2:] if len(shape) > 1 else ())
        if form == "unbatched":
            y = np.int64(3)  # (not the ignored class: one ignored sample's mean is NaN)
        else:
            y[0, 1, 1] = 2  # (ignored below)
    w = rng.random(K).astype(np.float32) + 0.5
    kw = dict(reduction=reduction, label_smoothing=0.1)
    if "probabilities" not in form:
        kw["ignore_index"] = 2
    for weight in (None, w):
        xt = torch.tensor(x.astype(np.float64), requires_grad=True)
        wt = None if weight is None else torch.tensor(weight.astype(np.float64))
        yt = torch.tensor(y.astype(np.float64) if y.dtype.kind == "f" else y)
        lt = torch.nn.functional.cross_entropy(xt, yt, weight=wt, **kw)
        g = rng.standard_normal(lt.shape) if reduction == "none" else 1.7
        lt.backward(torch.tensor(g, dtype=torch.float64))
        loss = F.cross_entropy(x, y, weight=weight, **kw)
        assert np.shape(loss) == tuple(lt.shape)
        assert_close(np.asarray(loss, np.float64), lt.detach().numpy(), 1e-5)
        gx = F.cross_entropy_backward(g, x, y, weight=weight, **kw)
        assert gx.shape == x.shape and gx.dtype == np.float32
        assert_close(gx, xt.grad.numpy(), 1e-5)
        crit = nn.CrossEntropyLoss(weight=weight, **kw)
        assert_close(np.asarray(crit(x, y), np.float64), lt.detach().numpy(), 1e-5)
        assert_close(crit.backward(g), xt.grad.numpy(), 1e-5)


def test_cross_entropy_probability_targets_gradient_by_finite_differences(rng):
    """The probability-target gradient against central differences in float64."""
    x = rng.standard_normal((3, 4))
    t = rng.random((3, 4))
    t /= t.sum(1, keepdims=True)
    w = rng.random(4) + 0.5

    def loss(v):
        v = v - v.max(1, keepdims=True)
        logp = v - np.log(np.exp(v).sum(1, keepdims=True))
        tt = 0.8 * t + 0.2 / 4
        return float(-(w * tt * logp).sum(1).mean())
    fd = finite_diff(loss, x)
    got = F.cross_entropy_backward(1.0, x.astype(np.float32), t.astype(np.float32),
                                   weight=w.astype(np.float32), label_smoothing=0.2)
    assert_close(got, fd, 1e-4)


def test_cross_entropy_forms_reject_mismatches():
    with pytest.raises(ValueError, match="ignore_index is not supported"):
        F.cross_entropy(np.zeros((2, 3)), np.full((2, 3), 1 / 3), ignore_index=0)
    with pytest.raises(ValueError, match=r"expected labels of shape \(2, 4\)"):
        F.cross_entropy(np.zeros((2, 3, 4)), np.zeros((2, 3), np.int64))
    with pytest.raises(ValueError, match=r"grad_out of shape \(2, 4\)"):
        F.cross_entropy_backward(np.ones(8), np.zeros((2, 3, 4)), np.zeros((2, 4), np.int64),
                                 reduction="none")
