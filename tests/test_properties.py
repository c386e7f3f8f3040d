"""Property-based tests (hypothesis) of the functional ops and their gradients against PyTorch:
random shapes (zero-size dimensions of every kind included), strides, paddings, dilations,
groups and values (NaN, Inf, huge and tiny included where they cannot overflow float32 sums).
Each case gives PyTorch's result or, where PyTorch rejects the arguments too, a ValueError:
never a crash. CI runs these derandomized (the "ci" profile in conftest.py)."""
import numpy as np
import pytest

pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as st  # noqa: E402

import convkit.functional as F  # noqa: E402

from conftest import needs_torch, torch  # noqa: E402

pytestmark = needs_torch

SPECIAL = [0.0, np.nan, np.inf, -np.inf, 1e-30, -3.5]
SPECIAL_WIDE = SPECIAL + [1e30, -1e30]


@st.composite
def arrays(draw, shape, special=SPECIAL):
    """float32 data of `shape`: standard normal, a few entries replaced by special values."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    a = rng.standard_normal(shape).astype(np.float32)
    if a.size and special and draw(st.booleans()):
        for _ in range(draw(st.integers(1, 3))):
            a.flat[draw(st.integers(0, a.size - 1))] = draw(st.sampled_from(special))
    return a


def same(got, want, tol, what):
    """Equal NaN and Inf patterns; finite values within tol, relative to the largest."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    assert np.array_equal(np.isnan(got), np.isnan(want)), f"{what}: NaN pattern differs"
    inf = np.isinf(want)
    assert np.array_equal(np.isinf(got), inf), f"{what}: Inf pattern differs"
    assert np.array_equal(got[inf], want[inf]), f"{what}: Inf signs differ"
    fin = np.isfinite(want)
    if fin.any():
        scale = max(float(np.abs(want[fin]).max()), 1e-30)
        err = float(np.abs(got[fin] - want[fin]).max()) / scale
        assert err <= tol, f"{what}: relative error {err:.3g} > {tol:g}"


def t64(a, grad=False):
    return torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


def both(ours, theirs):
    """(our result, PyTorch's) or None when both reject the arguments; ours may only raise
    ValueError, and only where PyTorch also refuses."""
    try:
        want = theirs()
    except (RuntimeError, ValueError, IndexError):
        want = None
    try:
        got = ours()
    except ValueError:
        assert want is None, "convkit refused arguments PyTorch accepts"
        return None
    if want is None:
        return None  # convkit defines a case PyTorch refuses (e.g. empty outputs): no crash
    return got, want


# ---- convolution -------------------------------------------------------------------------------

@st.composite
def conv_case(draw):
    g = draw(st.sampled_from([1, 1, 2, 3]))
    return dict(N=draw(st.integers(0, 3)), C=g * draw(st.integers(0, 3)),
                H=draw(st.integers(0, 11)), W=draw(st.integers(0, 11)),
                K=g * draw(st.integers(0, 3)), R=draw(st.integers(1, 4)), S=draw(st.integers(1, 4)),
                stride=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
                padding=(draw(st.integers(0, 3)), draw(st.integers(0, 3))),
                dilation=(draw(st.integers(1, 3)), draw(st.integers(1, 3))), groups=g)


@settings(max_examples=150, deadline=None)
@given(c=conv_case(), data=st.data())
def test_conv2d_and_gradients(c, data):
    x = data.draw(arrays((c["N"], c["C"], c["H"], c["W"])))  # specials in x only: PyTorch's
    w = data.draw(arrays((c["K"], c["C"] // c["groups"], c["R"], c["S"]), special=[]))  # float64
    b = data.draw(arrays((c["K"],), special=[]))  # path multiplies padding by the weights
    kw = {k: c[k] for k in ("stride", "padding", "dilation", "groups")}
    xt, wt, bt = t64(x, True), t64(w, True), t64(b, True)
    if c["C"] == 0:  # PyTorch returns wrong channel counts here; the definition: y = bias
        try:
            y = F.conv2d(x, w, b, **kw)
        except ValueError:
            return
        assert y.shape[:2] == (c["N"], c["K"]) and np.array_equal(y, np.broadcast_to(
            b[None, :, None, None], y.shape))
        dx, dw, db = F.conv2d_backward(np.ones_like(y), x, w, b, **kw)
        assert dx.shape == x.shape and dw.shape == w.shape
        assert np.array_equal(db, np.full(c["K"], y.shape[0] * y.shape[2] * y.shape[3]))
        return

    def theirs():
        y = torch.nn.functional.conv2d(xt, wt, bt, **kw)
        return y

    r = both(lambda: F.conv2d(x, w, b, **kw), theirs)
    if r is None:
        return
    y, yt = r
    same(y, yt.detach().numpy(), 1e-5, "conv2d")
    g = data.draw(arrays(y.shape, special=[]))
    if yt.numel():
        yt.backward(t64(g))
    dx, dw, db = F.conv2d_backward(g, x, w, b, **kw)
    zeros = np.zeros
    same(dx, xt.grad.numpy() if xt.grad is not None else zeros(x.shape), 1e-5, "grad_x")
    same(dw, wt.grad.numpy() if wt.grad is not None else zeros(w.shape), 1e-5, "grad_w")
    same(db, bt.grad.numpy() if bt.grad is not None else zeros(b.shape), 1e-5, "grad_b")


@settings(max_examples=60, deadline=None)
@given(c=conv_case(), op=st.tuples(st.integers(0, 2), st.integers(0, 2)), data=st.data())
def test_conv_transpose2d_and_gradients(c, op, data):
    op = (min(op[0], max(c["stride"][0], c["dilation"][0]) - 1),
          min(op[1], max(c["stride"][1], c["dilation"][1]) - 1))
    x = data.draw(arrays((c["N"], c["C"], c["H"], c["W"]), special=[]))
    w = data.draw(arrays((c["C"], c["K"] // c["groups"], c["R"], c["S"]), special=[]))
    kw = dict(stride=c["stride"], padding=c["padding"], output_padding=op, groups=c["groups"],
              dilation=c["dilation"])
    xt, wt = t64(x, True), t64(w, True)
    r = both(lambda: F.conv_transpose2d(x, w, None, **kw),
             lambda: torch.nn.functional.conv_transpose2d(xt, wt, None, **kw))
    if r is None:
        return
    y, yt = r
    same(y, yt.detach().numpy(), 1e-5, "conv_transpose2d")
    g = data.draw(arrays(y.shape, special=[]))
    if yt.numel():
        yt.backward(t64(g))
    dx, dw, _ = F.conv_transpose2d_backward(g, x, w, None, **kw)
    same(dx, xt.grad.numpy() if xt.grad is not None else np.zeros(x.shape), 1e-5, "grad_x")
    same(dw, wt.grad.numpy() if wt.grad is not None else np.zeros(w.shape), 1e-5, "grad_w")


# ---- pooling -----------------------------------------------------------------------------------

@settings(max_examples=120, deadline=None)
@given(shape=st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(1, 10),
                       st.integers(1, 10)),
       k=st.tuples(st.integers(1, 4), st.integers(1, 4)),
       s=st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))),
       p=st.tuples(st.integers(0, 2), st.integers(0, 2)), op=st.sampled_from(["max", "avg"]),
       data=st.data())
def test_pooling_and_gradients(shape, k, s, p, op, data):
    x = data.draw(arrays(shape, special=SPECIAL if op == "avg" else [0.0, np.inf, -np.inf]))
    xt = t64(x, True)
    ours_f, ours_b = ((F.max_pool2d, F.max_pool2d_backward) if op == "max"
                      else (F.avg_pool2d, F.avg_pool2d_backward))
    theirs = torch.nn.functional.max_pool2d if op == "max" else torch.nn.functional.avg_pool2d
    r = both(lambda: ours_f(x, k, s, p), lambda: theirs(xt, k, s, p))
    if r is None:
        return
    y, yt = r
    same(y, yt.detach().numpy(), 1e-6, f"{op}_pool2d")
    g = data.draw(arrays(y.shape, special=[]))
    if yt.numel():
        yt.backward(t64(g))
    dx = ours_b(g, x, k, s, p)
    same(dx, xt.grad.numpy() if xt.grad is not None else np.zeros(x.shape), 1e-6, "grad_x")


# ---- elementwise, softmax, linear, losses ------------------------------------------------------

ACTS = {
    "relu": (F.relu, F.relu_backward, {}, lambda t: torch.relu(t)),
    "leaky_relu": (F.leaky_relu, F.leaky_relu_backward, {"negative_slope": 0.2},
                   lambda t: torch.nn.functional.leaky_relu(t, 0.2)),
    "sigmoid": (F.sigmoid, F.sigmoid_backward, {}, torch.sigmoid if torch else None),
    "tanh": (F.tanh, F.tanh_backward, {}, torch.tanh if torch else None),
    "elu": (F.elu, F.elu_backward, {"alpha": 0.7},
            lambda t: torch.nn.functional.elu(t, 0.7)),
}


@settings(max_examples=100, deadline=None)
@given(name=st.sampled_from(sorted(ACTS)),
       shape=st.lists(st.integers(0, 5), min_size=0, max_size=4).map(tuple), data=st.data())
def test_activations_and_gradients(name, shape, data):
    f, fb, kw, tfn = ACTS[name]
    x = data.draw(arrays(shape, special=SPECIAL_WIDE))
    xt = t64(x, True)
    yt = tfn(xt)
    same(f(x, **kw), yt.detach().numpy().astype(np.float32), 5e-6, name)
    g = data.draw(arrays(shape, special=[]))
    yt.backward(t64(g))
    got, want = fb(g, x, **kw), xt.grad.numpy().astype(np.float32)
    if name == "elu":  # PyTorch's ELU gradient at NaN is NaN in its vector loop and dy in its
        keep = ~np.isnan(x)  # scalar tail (arrays of fewer than 16 doubles); convkit's is NaN
        assert np.isnan(got[~keep]).all()
        got, want = got[keep], want[keep]
    same(got, want, 5e-6, name + " grad")


@settings(max_examples=100, deadline=None)
@given(shape=st.lists(st.integers(0, 6), min_size=1, max_size=3).map(tuple),
       log=st.booleans(), data=st.data())
def test_softmax_and_gradients(shape, log, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = data.draw(arrays(shape, special=[np.inf, -np.inf, np.nan, 1e30, -1e30, 0.0]))
    xt = t64(x, True)
    yt = (torch.log_softmax if log else torch.softmax)(xt, axis)
    y = (F.log_softmax if log else F.softmax)(x, axis)
    same(y, yt.detach().numpy().astype(np.float32), 2e-6, "softmax")
    if not np.isfinite(x).all():
        return  # gradients through non-finite rows: NaN either way, not compared
    g = data.draw(arrays(shape, special=[]))
    yt.backward(t64(g))
    dx = (F.log_softmax_backward if log else F.softmax_backward)(g, x, axis)
    same(dx, xt.grad.numpy(), 1e-5, "softmax grad")


@settings(max_examples=80, deadline=None)
@given(n=st.integers(0, 5), i=st.integers(0, 6), o=st.integers(0, 6), bias=st.booleans(),
       data=st.data())
def test_linear_and_gradients(n, i, o, bias, data):
    x = data.draw(arrays((n, i)))
    w = data.draw(arrays((o, i), special=[]))
    b = data.draw(arrays((o,), special=[])) if bias else None
    xt, wt = t64(x, True), t64(w, True)
    bt = t64(b, True) if bias else None
    yt = torch.nn.functional.linear(xt, wt, bt)
    y = F.linear(x, w, b)
    same(y, yt.detach().numpy(), 1e-5, "linear")
    g = data.draw(arrays(y.shape, special=[]))
    if yt.numel():
        yt.backward(t64(g))
    dx, dw, db = F.linear_backward(g, x, w, b)
    same(dx, xt.grad.numpy() if xt.grad is not None else np.zeros(x.shape), 1e-5, "grad_x")
    same(dw, wt.grad.numpy() if wt.grad is not None else np.zeros(w.shape), 1e-5, "grad_w")
    assert (db is None) == (not bias)


@settings(max_examples=80, deadline=None)
@given(n=st.integers(1, 6), k=st.integers(1, 6), data=st.data())
def test_losses_and_gradients(n, k, data):
    logits = data.draw(arrays((n, k), special=[1e30, -1e30, 0.0]))
    labels = np.array(data.draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n)))
    lt = t64(logits, True)
    loss = torch.nn.functional.cross_entropy(lt, torch.tensor(labels))
    same(F.cross_entropy(logits, labels), loss.item(), 1e-5, "cross_entropy")
    loss.backward()
    same(F.cross_entropy_backward(1.0, logits, labels), lt.grad.numpy(), 1e-5, "ce grad")
    p = data.draw(arrays((n, k), special=[]))
    t = data.draw(arrays((n, k), special=[]))
    pt = t64(p, True)
    mse = torch.nn.functional.mse_loss(pt, t64(t))
    same(F.mse_loss(p, t), mse.item(), 1e-5, "mse")
    mse.backward()
    same(F.mse_loss_backward(1.0, p, t), pt.grad.numpy(), 1e-5, "mse grad")
    t01 = (t > 0).astype(np.float32)
    bt = t64(p, True)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(bt, t64(t01))
    same(F.binary_cross_entropy_with_logits(p, t01), bce.item(), 1e-5, "bce")
    bce.backward()
    same(F.binary_cross_entropy_with_logits_backward(1.0, p, t01), bt.grad.numpy(), 1e-5,
         "bce grad")
