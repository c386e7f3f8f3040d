"""Shared fixtures: every ISA the CPU has, thread counts, float64 references, optional PyTorch."""
import numpy as np
import pytest

import convkit
from convkit import _core

_ORDER = ["scalar", "avx2", "avx512"]
ISAS = _ORDER[: _ORDER.index(_core.best_isa()) + 1]  # every ISA this CPU can run

try:
    import torch
    torch.set_default_dtype(torch.float64)
except ImportError:  # the comparisons against PyTorch skip cleanly
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch not installed (pip install .[test])")


@pytest.fixture(params=ISAS)
def isa(request):
    """Runs the test once per ISA this CPU supports, then restores the original."""
    before = _core.isa()
    _core.set_isa(request.param)
    yield request.param
    _core.set_isa(before)


@pytest.fixture(params=["planes", "lanes"])
def pool_path(request):
    """Runs the test once with pooling plane by plane and once with 16 planes in the vector
    lanes (both kernels, whatever the plane size), then restores the choice by size."""
    _core.pool2d_force(request.param)
    yield request.param
    _core.pool2d_force("")


@pytest.fixture
def threads():
    """Lets a test change the thread count; restores it afterwards."""
    before = convkit.get_num_threads()
    yield convkit.set_num_threads
    convkit.set_num_threads(before)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def rel_err(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    scale = max(np.abs(b).max() if b.size else 0.0, 1e-30)
    return float(np.abs(a - b).max() / scale) if b.size else 0.0


def assert_close(a, b, tol, what=""):
    assert np.shape(a) == np.shape(b), f"{what}: shape {np.shape(a)} != {np.shape(b)}"
    err = rel_err(a, b)
    assert err <= tol, f"{what}: relative error {err:.3g} > {tol:g}"


def finite_diff(f, x, eps=1e-6):
    """Central differences of the scalar f at float64 x."""
    x = np.array(x, dtype=np.float64)
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + eps
        fp = f(x)
        x[i] = old - eps
        fm = f(x)
        x[i] = old
        g[i] = (fp - fm) / (2 * eps)
    return g


try:  # property-based tests: derandomized in CI, so a run is reproducible
    from hypothesis import settings as _hsettings

    _hsettings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
    import os as _os

    if _os.environ.get("CI"):
        _hsettings.load_profile("ci")
except ImportError:
    pass
