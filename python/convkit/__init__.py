"""convkit: C++-accelerated CNN primitives with a thin Python layer API.

The heavy lifting happens in ``convkit._core`` (C++, its own thread pool, SIMD picked at import
from what the CPU supports); ``convkit.functional`` is the documented function API, and ``nn``,
``optim``, ``models``, ``data`` and ``training`` build a small training framework on top of it.
"""
from __future__ import annotations

import os as _os

import numpy as _np

# With CONVKIT_RUNTIME=openmp (OpenMP's runtime instead of convkit's pool, for comparison):
# OpenMP worker threads that spin for long between parallel regions (libgomp's default is
# 300,000 spins) made whole training runs twice as slow on a shared 2-vCPU virtual machine, for
# minutes at a time; 10,000 spins kept the quiet-machine speed and held the slow spells to ~1.3x
# (bench/RESULTS.md). libgomp reads GOMP_SPINCOUNT when it is loaded, with _core: set it for that
# moment only, unless the user has set it, so that other libraries' OpenMP runtimes loaded later
# keep their own defaults.
_spin_was_set = "GOMP_SPINCOUNT" in _os.environ
if not _spin_was_set:
    _os.environ["GOMP_SPINCOUNT"] = "10000"
try:
    from . import _core
finally:
    if not _spin_was_set:
        del _os.environ["GOMP_SPINCOUNT"]

__version__ = "0.1.0"

_rng = _np.random.default_rng()


def set_num_threads(n: int) -> None:
    """Set the number of threads the kernels use (results do not depend on it).

    >>> n = get_num_threads(); set_num_threads(1); get_num_threads()
    1
    >>> set_num_threads(n)
    """
    if isinstance(n, bool) or not isinstance(n, (int, _np.integer)):
        raise TypeError(f"set_num_threads: expected an int, but got {type(n).__name__}")
    _core.set_num_threads(int(n))


def get_num_threads() -> int:
    """The number of threads the kernels use (default: $OMP_NUM_THREADS, else the CPUs this
    process may run on).

    >>> get_num_threads() >= 1
    True
    """
    return _core.get_num_threads()


def manual_seed(seed: int) -> None:
    """Seed parameter initialisation, shuffling and dropout, for reproducible runs.

    >>> manual_seed(0); a = nn.Linear(2, 2).weight.data
    >>> manual_seed(0); bool((a == nn.Linear(2, 2).weight.data).all())
    True
    """
    global _rng
    _rng = _np.random.default_rng(int(seed))


def _generator() -> _np.random.Generator:
    """The library-wide random generator (reseeded by manual_seed)."""
    return _rng


def _config() -> dict:
    return {
        "version": __version__,
        "compiler": _core.compiler(),
        "openmp": _core.have_openmp(),
        "runtime": _core.runtime(),
        "cpu_features": _core.cpu_features(),
        "isa": _core.isa(),
        "best_isa": _core.best_isa(),
        "gemm_tile": "x".join(str(v) for v in _core.kernel_tile()),
        "threads": _core.get_num_threads(),
        "numpy": _np.__version__,
    }


def show_config() -> None:
    """Print the version, compiler, OpenMP, CPU SIMD features, kernel ISA in use and threads.

    >>> show_config()  # doctest: +ELLIPSIS
    convkit ...
    """
    c = _config()
    print(f"convkit {c['version']}")
    print(f"  compiler      : {c['compiler']}")
    print(f"  threads run on: {'OpenMP' if c['runtime'] == 'openmp' else c['runtime']}"
          f" (CONVKIT_RUNTIME=openmp|pool chooses; OpenMP "
          f"{'built in' if c['openmp'] else 'not built in'})")
    print(f"  CPU features  : {c['cpu_features'] or 'none detected'}")
    print(f"  kernel ISA    : {c['isa']} (best available: {c['best_isa']}; "
          f"set CONVKIT_ISA=scalar|avx2|avx512 to force a lower one)")
    print(f"  GEMM tile     : {c['gemm_tile']}")
    print(f"  threads       : {c['threads']}")
    print(f"  numpy         : {c['numpy']}")


from . import functional, nn, optim, models, data, training, interop, onnx  # noqa: E402
from . import distributed  # noqa: E402  (imports mpi4py only when init() is called)

__all__ = [
    "__version__", "set_num_threads", "get_num_threads", "manual_seed", "show_config",
    "functional", "nn", "optim", "models", "data", "training", "interop", "onnx",
    "distributed",
]
