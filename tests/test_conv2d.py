"""conv2d forward and backward: against a float64 NumPy reference, the C++ reference, PyTorch
(float64) when installed, finite differences; every ISA; any thread count; bad input."""
import threading

import numpy as np
import pytest

import convkit.functional as F
from convkit import _core

import reference as R
from conftest import ISAS, assert_close, finite_diff, needs_torch, torch

# (N, C, H, W, K, (R, S), stride, padding)
SHAPES = [
    (1, 1, 5, 5, 1, (3, 3), (1, 1), (0, 0)),
    (2, 3, 9, 11, 5, (3, 3), (1, 1), (1, 1)),
    (1, 1, 28, 28, 6, (5, 5), (1, 1), (2, 2)),       # LeNet conv1, N = 1
    (3, 6, 14, 14, 16, (5, 5), (1, 1), (0, 0)),      # LeNet conv2
    (2, 4, 8, 8, 7, (1, 1), (1, 1), (0, 0)),         # pointwise
    (2, 5, 13, 10, 9, (7, 7), (2, 3), (3, 1)),       # 7x7, asymmetric stride and padding
    (1, 17, 12, 9, 33, (3, 3), (2, 2), (1, 1)),      # C, K not multiples of any SIMD width
    (2, 3, 17, 19, 10, (5, 3), (3, 3), (2, 1)),      # stride 3, non-square kernel
    (1, 2, 6, 6, 3, (6, 6), (1, 1), (0, 0)),         # kernel = input
    (1, 1, 3, 4, 2, (5, 5), (1, 1), (2, 2)),         # kernel larger than the unpadded input
    (3, 9, 7, 31, 35, (2, 4), (1, 2), (0, 2)),       # odd widths, tails of every tile
    (2, 64, 10, 10, 20, (3, 3), (1, 1), (1, 1)),
    (1, 3, 40, 37, 8, (3, 3), (1, 1), (1, 1)),       # PQ larger than a column block
    (2, 3, 9, 13, 16, (3, 3), (1, 1), (1, 1)),       # narrow rows: channels-in-lanes path, odd P
    (1, 2, 7, 15, 13, (3, 2), (1, 1), (0, 1)),       # narrow rows, 13 channels, 12 + 3 columns
    (2, 8, 32, 32, 9, (7, 7), (1, 1), (3, 3)),       # tiles by output row, two reduction blocks
    (1, 3, 64, 70, 5, (7, 7), (2, 2), (3, 3)),       # strided, tiles by row: 32 + 3 columns
    (2, 2, 6, 70, 3, (2, 5), (1, 1), (0, 3)),        # few inputs: dx rows over 64 + 6 columns
    (2, 3, 40, 37, 8, (3, 3), (2, 2), (1, 0)),       # strided, rows of 18 outputs: wide-grid dW
    (2, 16, 17, 18, 20, (3, 3), (1, 1), (1, 1)),     # 3x3 Winograd tiles, odd rows of tiles
    (1, 24, 16, 33, 16, (3, 3), (1, 1), (0, 2)),     # Winograd, asymmetric padding, odd width
    (1, 300, 6, 18, 17, (3, 3), (1, 1), (1, 1)),     # Winograd, two reduction blocks over C
    # 5x5 Winograd, 16 images in the lanes (AVX-512; taken when its cost model says it pays):
    (16, 6, 14, 14, 16, (5, 5), (1, 1), (0, 0)),     # LeNet conv2, one group of images
    (28, 6, 12, 15, 16, (5, 5), (1, 1), (0, 1)),     # 12 images in the last group, odd Q
    (32, 9, 11, 9, 12, (5, 5), (1, 1), (1, 2)),      # C in two blocks, K tail, odd P and Q
    (16, 8, 40, 41, 8, (5, 5), (1, 1), (0, 0)),      # three bands of tile rows per group
    # 3x3 stride 2 in 9 GEMMs (AVX-512, 16+ channels):
    (2, 16, 30, 29, 20, (3, 3), (2, 2), (1, 1)),     # odd P and Q: half tiles
    (1, 24, 32, 33, 16, (3, 3), (2, 2), (0, 1)),     # asymmetric padding, bands of 5 tile rows
    (1, 17, 9, 75, 16, (3, 3), (2, 2), (1, 1)),      # 19 tiles a row: two groups of 16
    (1, 300, 12, 19, 17, (3, 3), (2, 2), (1, 1)),    # reductions of 300-1200 in blocks
    # input gradient with the images in the lanes (AVX-512, 5 to 8 input channels):
    (16, 7, 10, 12, 5, (5, 5), (1, 1), (0, 0)),      # channel blocks of 6 + 1
    (24, 8, 8, 9, 3, (3, 4), (1, 1), (0, 1)),        # 6 + 2, last group half full, odd W
]


def _data(rng, shape, bias=True):
    N, C, H, W, K, (r, s), st, pd = shape
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = rng.standard_normal((K, C, r, s)).astype(np.float32)
    b = rng.standard_normal(K).astype(np.float32) if bias else None
    return x, w, b, st, pd


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_forward_matches_float64_reference(isa, rng, shape):
    x, w, b, st, pd = _data(rng, shape)
    y = F.conv2d(x, w, b, st, pd)
    assert y.dtype == np.float32
    assert_close(y, R.conv2d(x, w, b, st, pd), 1e-5, "conv2d vs numpy float64")
    assert_close(y, _core.ref_conv2d(x, w, b, *st, *pd), 1e-5, "conv2d vs C++ reference")


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("bias", [True, False])
def test_backward_matches_cpp_reference(isa, rng, shape, bias):
    x, w, b, st, pd = _data(rng, shape, bias)
    y = F.conv2d(x, w, b, st, pd)
    g = rng.standard_normal(y.shape).astype(np.float32)
    dx, dw, db = F.conv2d_backward(g, x, w, b, st, pd)
    rx, rw, rb = _core.ref_conv2d_backward(g, x, w, b, *st, *pd)
    assert_close(dx, rx, 1e-5, "grad_x")
    assert_close(dw, rw, 1e-5, "grad_weight")
    if bias:
        assert_close(db, rb, 1e-5, "grad_bias")
    else:
        assert db is None


@needs_torch
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_pytorch_float64(rng, shape):
    x, w, b, st, pd = _data(rng, shape)
    xt, wt, bt = (torch.tensor(a.astype(np.float64), requires_grad=True) for a in (x, w, b))
    yt = torch.nn.functional.conv2d(xt, wt, bt, stride=st, padding=pd)
    g = rng.standard_normal(tuple(yt.shape)).astype(np.float32)
    yt.backward(torch.tensor(g.astype(np.float64)))
    y = F.conv2d(x, w, b, st, pd)
    dx, dw, db = F.conv2d_backward(g, x, w, b, st, pd)
    assert_close(y, yt.detach().numpy(), 1e-4, "forward")
    assert_close(dx, xt.grad.numpy(), 1e-4, "grad_x")
    assert_close(dw, wt.grad.numpy(), 1e-4, "grad_weight")
    assert_close(db, bt.grad.numpy(), 1e-4, "grad_bias")


@pytest.mark.parametrize("shape", [
    (1, 2, 5, 6, 3, (3, 3), (1, 1), (1, 1)),
    (2, 1, 7, 5, 2, (2, 3), (2, 3), (1, 2)),
], ids=str)
def test_gradients_by_finite_differences_float64(rng, shape):
    x, w, b, st, pd = _data(rng, shape)
    y = F.conv2d(x, w, b, st, pd)
    g = rng.standard_normal(y.shape)
    dx, dw, db = F.conv2d_backward(g.astype(np.float32), x, w, b, st, pd)
    x64, w64, b64 = (a.astype(np.float64) for a in (x, w, b))
    loss = lambda xx, ww, bb: float((R.conv2d(xx, ww, bb, st, pd) * g).sum())
    assert_close(dx, finite_diff(lambda v: loss(v, w64, b64), x64), 1e-5, "grad_x vs FD")
    assert_close(dw, finite_diff(lambda v: loss(x64, v, b64), w64), 1e-5, "grad_weight vs FD")
    assert_close(db, finite_diff(lambda v: loss(x64, w64, v), b64), 1e-5, "grad_bias vs FD")


@pytest.mark.parametrize("shape", SHAPES[1::3], ids=str)
def test_every_isa_agrees(rng, shape):
    x, w, b, st, pd = _data(rng, shape)
    g = rng.standard_normal(F.conv2d(x, w, b, st, pd).shape).astype(np.float32)
    before = _core.isa()
    outs = {}
    try:
        for name in ISAS:
            _core.set_isa(name)
            outs[name] = (F.conv2d(x, w, b, st, pd),) + F.conv2d_backward(g, x, w, b, st, pd)
    finally:
        _core.set_isa(before)
    for name in ISAS[1:]:
        for a, c in zip(outs[name], outs["scalar"]):
            assert_close(a, c, 1e-5, f"{name} vs scalar")


def test_isa_env_var_forces_lower_path(tmp_path):
    import subprocess
    import sys
    for name in ISAS:
        out = subprocess.run([sys.executable, "-c", "import convkit._core as c; print(c.isa())"],
                             env={**__import__("os").environ, "CONVKIT_ISA": name},
                             capture_output=True, text=True, check=True).stdout.strip()
        assert out == name


def test_openmp_spin_count_is_set_while_loading_then_restored():
    # convkit's libgomp reads GOMP_SPINCOUNT=10000 when it loads (unless the user set it), and the
    # variable is not left behind for other libraries' OpenMP runtimes.
    import os
    import subprocess
    import sys
    code = "import os, convkit; print(os.environ.get('GOMP_SPINCOUNT'))"
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    env["OMP_DISPLAY_ENV"] = "VERBOSE"
    for given, read in ((None, "10000"), ("12345", "12345")):
        if given:
            env["GOMP_SPINCOUNT"] = given
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip().splitlines()[-1] == str(given)
        if _core.have_openmp() and "GOMP_" in out.stderr:  # libgomp prints what it read
            assert f"GOMP_SPINCOUNT = '{read}'" in out.stderr


@pytest.mark.parametrize("shape", [
    SHAPES[3], SHAPES[11], (16, 8, 12, 12, 12, (3, 3), (1, 1), (1, 1)),
    (12, 1, 28, 28, 6, (5, 5), (1, 1), (2, 2)),     # few input channels: dx by rows
    (48, 4, 40, 38, 20, (3, 3), (2, 2), (1, 0)),    # strided, wide-grid dW over image chunks
    (20, 8, 33, 33, 40, (3, 3), (1, 1), (1, 1)),    # wide-grid dW over image chunks
    (4, 16, 30, 30, 16, (3, 3), (1, 1), (1, 1)),    # Winograd forward and input gradient
    (28, 6, 12, 15, 16, (5, 5), (1, 1), (0, 1)),    # 5x5 Winograd, images in the lanes
    (3, 16, 33, 30, 20, (3, 3), (2, 2), (1, 1)),    # 3x3 stride 2 in 9 GEMMs
    (1, 3, 32, 57, 16, (5, 5), (1, 1), (2, 2)),     # batch 1: dx's col2im by column blocks
    (1, 8, 34, 44, 1, (3, 3), (1, 1), (0, 0)),
], ids=str)
def test_bitwise_identical_for_any_thread_count(rng, threads, shape):
    x, w, b, st, pd = _data(rng, shape)
    g = rng.standard_normal(F.conv2d(x, w, b, st, pd).shape).astype(np.float32)
    results = []
    for n in (1, 2, 3, 5):
        threads(n)
        results.append((F.conv2d(x, w, b, st, pd),) + F.conv2d_backward(g, x, w, b, st, pd))
    for r in results[1:]:
        for a, c in zip(r, results[0]):
            assert np.array_equal(a, c)


def test_any_dtype_and_layout_is_converted(rng):
    x, w, b, st, pd = _data(rng, SHAPES[1])
    want = F.conv2d(x, w, b, st, pd)
    xf = np.asfortranarray(x)
    x_rev = np.ascontiguousarray(x[:, :, ::-1, ::-1])[:, :, ::-1, ::-1]  # negative strides
    x_step = np.repeat(x, 2, axis=3)[:, :, :, ::2]                        # non-unit strides
    for xv in (xf, x_rev, x_step, x.astype(np.float64)):
        assert np.array_equal(F.conv2d(xv, w, b, st, pd), want)
    xi = rng.integers(-3, 4, x.shape)
    assert_close(F.conv2d(xi, w.astype(np.float16), list(b), st, pd),
                 R.conv2d(xi, w.astype(np.float16), b, st, pd), 1e-5)
    assert F.conv2d(x.tolist(), w, b, st, pd).dtype == np.float32


def test_empty_batch():
    y = F.conv2d(np.zeros((0, 3, 8, 8)), np.ones((4, 3, 3, 3)), np.ones(4), padding=1)
    assert y.shape == (0, 4, 8, 8) and y.dtype == np.float32
    dx, dw, db = F.conv2d_backward(y, np.zeros((0, 3, 8, 8)), np.ones((4, 3, 3, 3)), np.ones(4),
                                   padding=1)
    assert dx.shape == (0, 3, 8, 8)
    assert np.array_equal(dw, np.zeros((4, 3, 3, 3))) and np.array_equal(db, np.zeros(4))


def test_nan_propagates(rng):
    x, w, b, st, pd = _data(rng, SHAPES[1])
    x[0, 1, 4, 5] = np.nan
    y = F.conv2d(x, w, b, st, pd)
    want = np.isnan(R.conv2d(x, w, b, st, pd))
    assert np.array_equal(np.isnan(y), want) and want.any() and not want.all()


@pytest.mark.parametrize("shape", [SHAPES[12], (2, 3, 40, 37, 8, (3, 3), (2, 2), (1, 0))], ids=str)
def test_inf_in_input_reaches_only_the_gradients_it_should(isa, rng, shape):
    # An Inf in the last column: taps that never read that column keep finite weight gradients
    # (paths that compute over padding columns must not turn 0 * Inf into NaN there).
    x, w, b, st, pd = _data(rng, shape)
    x[0, 1, 7, -1] = np.inf
    g = rng.standard_normal(F.conv2d(x, w, b, st, pd).shape).astype(np.float32)
    dx, dw, db = F.conv2d_backward(g, x, w, b, st, pd)
    rx, rw, rb = _core.ref_conv2d_backward(g, x, w, b, *st, *pd)
    bad = ~np.isfinite(rw)
    assert np.array_equal(~np.isfinite(dw), bad) and bad.any() and not bad.all()
    assert_close(dw[~bad], rw[~bad], 1e-5, "finite grad_weight entries")
    assert_close(dx, rx, 1e-5, "grad_x")


@pytest.mark.parametrize("shape", [(2, 16, 17, 18, 20, (3, 3), (1, 1), (1, 1)),
                                   (28, 6, 12, 15, 16, (5, 5), (1, 1), (0, 1)),
                                   (2, 16, 30, 29, 20, (3, 3), (2, 2), (1, 1))], ids=str)
def test_inf_in_input_spreads_as_in_the_definition(isa, rng, shape):
    # 3x3 layers with enough channels (stride 1 or 2), and 5x5 layers over batches, take
    # Winograd-style transforms, which subtract input values: an Inf must still give Inf (or
    # NaN) exactly where the direct sum does.
    x, w, b, st, pd = _data(rng, shape)
    x[1, 3, 5, 7] = np.inf
    y = F.conv2d(x, w, b, st, pd)
    ref = _core.ref_conv2d(x, w, b, *st, *pd)
    assert np.array_equal(np.isnan(y), np.isnan(ref)) and np.array_equal(np.isinf(y), np.isinf(ref))
    assert np.isinf(ref).any()
    fin = np.isfinite(ref)
    assert_close(y[fin], ref[fin], 1e-5, "finite outputs")


def test_gil_is_released(rng):
    x = rng.standard_normal((16, 64, 56, 56)).astype(np.float32)
    w = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)
    started = threading.Event()

    def work():
        started.set()
        for _ in range(3):
            F.conv2d(x, w, padding=1)

    t = threading.Thread(target=work)
    t.start()
    started.wait()
    count = 0
    while t.is_alive():
        count += 1
    t.join()
    assert count > 1000, "the main thread could not run while conv2d computed"


BAD = [
    # (kwargs, exception, fragments of the message)
    (dict(x=np.ones((8, 8)), w=np.ones((4, 3, 3, 3))), ValueError, ["conv2d", "4-D", "(8, 8)", "unbatched"]),
    (dict(x=np.ones((2, 3, 8, 8)), w=np.ones((4, 3, 3))), ValueError, ["conv2d", "weight", "3-D"]),
    (dict(x=np.ones((2, 3, 8, 8)), w=np.ones((4, 2, 3, 3))), ValueError,
     ["conv2d", "(4, 2, 3, 3)", "2 input channels", "(2, 3, 8, 8)", "has 3"]),
    (dict(x=np.ones((2, 3, 8, 8)), w=np.ones((4, 3, 3, 3)), b=np.ones(5)), ValueError, ["bias", "(4,)", "(5,)"]),
    (dict(x=np.ones((2, 3, 8, 8)), w=np.ones((4, 3, 3, 3)), b=np.ones((4, 1))), ValueError, ["bias", "(4, 1)"]),
    (dict(x=np.ones((2, 3, 8, 8)), w=np.ones((4, 3, 3, 3)), stride=0), ValueError, ["stride", ">= 1", "0"]),
    (dict(x=np.ones((2, 3, 8, 8)), w=np.ones((4, 3, 3, 3)), stride=(1, -2)), ValueError, ["stride", "-2"]),
    (dict(x=np.ones((2, 3, 8, 8)), w=np.ones((4, 3, 3, 3)), padding=-1), ValueError, ["padding", ">= 0", "-1"]),
    (dict(x=np.ones((2, 3, 4, 4)), w=np.ones((4, 3, 7, 7)), padding=1), ValueError, ["kernel", "larger", "padded input"]),
    (dict(x=np.ones((2, 3, 8, 8)), w=np.ones((4, 3, 3, 3)), padding=(1, 2, 3)), ValueError, ["padding", "pair"]),
    (dict(x=np.ones((2, 3, 8, 8)), w=np.ones((4, 3, 3, 3)), stride=1.5), TypeError, ["stride", "int"]),
    (dict(x=np.ones((1, 1, 2, 2)), w=np.ones((1, 1, 1, 1)), padding=2**29), ValueError, ["overflows"]),
    (dict(x=np.full((2, 3, 8, 8), "a"), w=np.ones((4, 3, 3, 3))), TypeError, ["conv2d", "input", "numeric", "<U1"]),
    (dict(x=np.ones((2, 3, 8, 8)), w=np.ones((4, 3, 3, 3), dtype=complex)), TypeError, ["weight", "complex"]),
    (dict(x=None, w=np.ones((4, 3, 3, 3))), TypeError, ["input", "None"]),
]


@pytest.mark.parametrize("kw,exc,frags", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_input_raises_a_clear_error(kw, exc, frags):
    args = dict(stride=kw.get("stride", 1), padding=kw.get("padding", 0))
    with pytest.raises(exc) as e:
        F.conv2d(kw["x"], kw["w"], kw.get("b"), **args)
    for f in frags:
        assert f in str(e.value), f"{f!r} not in {str(e.value)!r}"


def test_string_padding(rng):
    x = rng.standard_normal((2, 3, 9, 8)).astype(np.float32)
    w = rng.standard_normal((4, 3, 5, 3)).astype(np.float32)
    assert np.array_equal(F.conv2d(x, w, padding="same"), F.conv2d(x, w, padding=(2, 1)))
    assert F.conv2d(x, w, padding="same").shape == (2, 4, 9, 8)
    assert np.array_equal(F.conv2d(x, w, padding="valid"), F.conv2d(x, w))
    g = np.ones((2, 4, 9, 8), np.float32)
    for a, b in zip(F.conv2d_backward(g, x, w, padding="same"), F.conv2d_backward(g, x, w, padding=(2, 1))):
        assert (a is None and b is None) or np.array_equal(a, b)
    # an even kernel pads one more at the bottom/right, as PyTorch
    w2 = rng.standard_normal((4, 3, 2, 2)).astype(np.float32)
    xp = np.pad(x, ((0, 0), (0, 0), (0, 1), (0, 1)))
    assert np.array_equal(F.conv2d(x, w2, padding="same"), F.conv2d(xp, w2))
    with pytest.raises(ValueError, match="'valid' or 'same'"):
        F.conv2d(x, w, padding="full")


def test_backward_checks_grad_out_shape():
    x, w = np.ones((2, 3, 8, 8)), np.ones((4, 3, 3, 3))
    with pytest.raises(ValueError, match=r"conv2d_backward: expected grad_out of shape \(2, 4, 6, 6\)"):
        F.conv2d_backward(np.ones((2, 4, 8, 8)), x, w)
    with pytest.raises(ValueError, match="conv2d_backward"):
        F.conv2d_backward(np.ones((2, 4, 6, 6)), x, np.ones((4, 2, 3, 3)))


@pytest.mark.skipif(__import__("os").environ.get("CONVKIT_SANITIZED") == "1",
                    reason="AddressSanitizer reserves more address space than the limit allows")
def test_result_too_large_for_memory_raises_memory_error():
    """An output that cannot be allocated is a MemoryError naming the op and size, not a crash."""
    import subprocess
    import sys
    code = (
        "import resource, numpy as np\n"
        "resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))\n"
        "import convkit.functional as F\n"
        "try:\n"
        "    F.conv2d(np.ones((1, 1, 1, 1)), np.ones((1, 1, 1, 1)), padding=2**20)\n"
        "except MemoryError as e:\n"
        "    print('MemoryError:', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "MemoryError: conv2d: cannot allocate" in out.stdout
    assert "(1, 1, 2097153, 2097153)" in out.stdout
