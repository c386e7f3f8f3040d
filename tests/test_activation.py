"""Activations and their gradients; accuracy of the vectorised exp/tanh over the float range."""
import numpy as np
import pytest

import convkit.functional as F

from conftest import assert_close, needs_torch, torch

ACTS = {
    "relu": (F.relu, F.relu_backward, {}, lambda x: np.maximum(x, 0)),
    "leaky_relu": (F.leaky_relu, F.leaky_relu_backward, {"negative_slope": 0.2},
                   lambda x: np.where(x > 0, x, 0.2 * x)),
    "sigmoid": (F.sigmoid, F.sigmoid_backward, {}, lambda x: 1 / (1 + np.exp(-x))),
    "tanh": (F.tanh, F.tanh_backward, {}, np.tanh),
    "elu": (F.elu, F.elu_backward, {"alpha": 1.3}, lambda x: np.where(x > 0, x, 1.3 * np.expm1(np.minimum(x, 0)))),
}


def _inputs(rng):
    # many scales, both signs, a tail that does not fill a SIMD register
    x = np.concatenate([rng.standard_normal(1000) * s for s in (1e-6, 1e-3, 0.1, 1, 5, 30)])
    x = np.concatenate([x, [0.0, -0.0, 1e-30, -1e-30, 88.0, -88.0, 100, -100, 1e4, -1e4]])
    return x[: len(x) - 3].astype(np.float32)


@pytest.mark.parametrize("name", ACTS)
def test_forward_backward_float64(isa, rng, name):
    f, fb, kw, ref = ACTS[name]
    x = _inputs(rng)
    x64 = x.astype(np.float64)
    with np.errstate(over="ignore"):
        assert_close(f(x, **kw), ref(x64), 1e-6, name)
    g = rng.standard_normal(x.shape).astype(np.float32)
    xs = x[np.abs(x) > 1e-2][:200].astype(np.float64)  # away from kinks
    gs = g[: len(xs)].astype(np.float64)
    # elementwise derivative by central differences in float64
    eps = 1e-6
    with np.errstate(over="ignore"):
        d = (ref(xs + eps) - ref(xs - eps)) / (2 * eps)
    assert_close(fb(gs, xs, **kw), gs * d, 1e-5, name + " backward vs FD")


@needs_torch
@pytest.mark.parametrize("name", ACTS)
def test_matches_pytorch(rng, name):
    f, fb, kw, _ = ACTS[name]
    x = rng.standard_normal((3, 5, 7, 9)).astype(np.float32) * 4
    xt = torch.tensor(x.astype(np.float64), requires_grad=True)
    tf = {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
          "leaky_relu": lambda t: torch.nn.functional.leaky_relu(t, 0.2),
          "elu": lambda t: torch.nn.functional.elu(t, 1.3)}[name]
    yt = tf(xt)
    g = rng.standard_normal(x.shape).astype(np.float32)
    yt.backward(torch.tensor(g.astype(np.float64)))
    y = f(x, **kw)
    assert y.shape == x.shape and y.dtype == np.float32
    assert_close(y, yt.detach().numpy(), 1e-5, name)
    assert_close(fb(g, x, **kw), xt.grad.numpy(), 1e-5, name + " backward")


def _ulp_error(got, want64):
    want32 = want64.astype(np.float32)
    ulp = np.spacing(np.abs(want32)).astype(np.float64)
    return np.abs(got.astype(np.float64) - want64) / ulp


@pytest.mark.parametrize("name,f,ref", [
    ("tanh", F.tanh, np.tanh),
    ("sigmoid", F.sigmoid, lambda v: 1 / (1 + np.exp(-v))),
    ("elu", F.elu, np.expm1),
])
def test_few_ulp_over_the_float_range(isa, name, f, ref):
    x = np.concatenate([np.linspace(-100, 100, 200001), np.geomspace(1e-38, 100, 20000),
                        -np.geomspace(1e-38, 100, 20000)]).astype(np.float32)
    if name == "elu":
        x = x[x <= 0]
    with np.errstate(over="ignore", under="ignore"):
        want = ref(x.astype(np.float64))
    y = f(x)
    finite = np.abs(want) > 1e-37  # ulp is not meaningful among subnormals
    assert _ulp_error(y[finite], want[finite]).max() <= 4, name


def test_saturation_and_specials(isa):
    big = np.array([-np.inf, -1e30, -1e4, -200, 200, 1e4, 1e30, np.inf], np.float32)
    assert np.array_equal(F.tanh(big), np.sign(big))
    assert np.array_equal(F.sigmoid(big), (big > 0).astype(np.float32))
    assert np.array_equal(F.elu(big[:4]), -np.ones(4, np.float32))
    nan = np.array([np.nan], np.float32)
    for f in (F.relu, F.leaky_relu, F.sigmoid, F.tanh, F.elu):
        assert np.isnan(f(nan)).all(), f.__name__
    for fb in (F.sigmoid_backward, F.tanh_backward):
        assert not np.isnan(fb(np.ones_like(big), big)).any()


@needs_torch
def test_signed_zeros_and_specials_as_pytorch(isa):
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 20.0, -20.0], np.float32)
    xt = torch.from_numpy(x)
    for f, tf in ((F.sigmoid, torch.sigmoid), (F.tanh, torch.tanh), (F.elu, torch.nn.functional.elu),
                  (F.relu, torch.relu)):
        got, want = f(x), tf(xt).numpy()
        assert np.array_equal(got, want, equal_nan=True), f.__name__
        num = ~np.isnan(want)
        assert np.array_equal(np.signbit(got[num]), np.signbit(want[num])), f.__name__ + " signs"
    # gradients at the specials: ReLU and LeakyReLU pass dy (times the slope) at NaN as
    # PyTorch's do; ELU's is NaN there, as PyTorch's vectorised loop gives it (its scalar tail,
    # below 64 values, gives dy)
    g = np.linspace(0.5, 1.5, x.size).astype(np.float32)
    for fb, tf in ((F.relu_backward, torch.relu), (F.elu_backward, torch.nn.functional.elu),
                   (lambda g, x: F.leaky_relu_backward(g, x, 0.2),
                    lambda t: torch.nn.functional.leaky_relu(t, 0.2))):
        xt = torch.tensor(x, requires_grad=True)
        tf(xt).backward(torch.from_numpy(g))
        got, want = fb(g, x), xt.grad.numpy()
        if fb is F.elu_backward:
            assert np.isnan(got[np.isnan(x)]).all()
            got, want = got[~np.isnan(x)], want[~np.isnan(x)]
        assert np.array_equal(got, want, equal_nan=True), fb


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "elu"])
def test_tails_get_the_same_arithmetic(isa, rng, name):
    f, fb, kw, _ = ACTS[name]
    x = (rng.standard_normal(53) * 4).astype(np.float32)
    g = rng.standard_normal(53).astype(np.float32)
    y, dx = f(x, **kw), fb(g, x, **kw)
    for k in range(1, 53):  # every tail length of every vector width
        assert np.array_equal(f(x[:k], **kw), y[:k]) and np.array_equal(fb(g[:k], x[:k], **kw), dx[:k])


def test_thread_invariance_and_shapes(rng, threads):
    x = rng.standard_normal((3, 200001)).astype(np.float32)
    outs = []
    for n in (1, 2, 3):
        threads(n)
        outs.append([F.tanh(x), F.elu_backward(x, x)])
    for o in outs[1:]:
        assert all(np.array_equal(a, b) for a, b in zip(o, outs[0]))
    assert F.relu(np.float32(-2.0)).shape == ()
    assert F.sigmoid(np.zeros((0, 4))).shape == (0, 4)


def test_bad_input():
    with pytest.raises(ValueError, match=r"tanh_backward: expected grad_out of shape \(3,\)"):
        F.tanh_backward(np.ones(4), np.ones(3))
    with pytest.raises(TypeError, match="relu: argument 'input'"):
        F.relu(np.array(["x"]))
    with pytest.raises(TypeError, match="negative_slope"):
        F.leaky_relu(np.ones(3), "big")


def test_large_results_are_independent_arrays(rng):
    """Big results come from a buffer cache: live results never share memory, and a recycled
    buffer holds the new values."""
    x = rng.standard_normal((512, 1024)).astype(np.float32)  # 2 MiB
    a = F.relu(x)
    b = F.relu(-x)
    assert not np.shares_memory(a, b)
    want_a = np.maximum(x, 0)
    del b
    c = F.tanh(x)  # may reuse b's buffer
    assert not np.shares_memory(a, c)
    assert np.array_equal(a, want_a)
    assert_close(c, np.tanh(x.astype(np.float64)), 1e-6)
    c[0, 0] = 123.0  # writable, owned by nobody else
    assert a[0, 0] == want_a[0, 0]
