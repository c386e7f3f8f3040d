"""The module imports and computes on CPUs older than this one.

The wheel carries kernels for AVX-512, AVX2 and plain x86-64 and picks one at import. Code of a
wider ISA than the CPU's must never run, not even while the kernel tables are filled: an AVX-512
store there once killed the import on AVX2-only machines. These tests run a small network under
qemu's user-mode emulator with an older CPU model (Haswell: AVX2 and FMA, no AVX-512; Nehalem: no
AVX at all) and compare its bits with this machine's run at the same ISA. CI installs qemu-user
and sets CONVKIT_REQUIRE_QEMU=1, so there a missing emulator fails instead of skipping.

NumPy 2.4.6 itself dies with an illegal instruction on qemu's Nehalem and Westmere models (and on
qemu64), before convkit is imported; where it does, the scalar case runs on SandyBridge-v2
instead: AVX but neither AVX2 nor FMA, so convkit still takes its scalar table there, and an
AVX2, FMA or AVX-512 instruction outside the wider tables still fails the test.
"""
import os
import shutil
import subprocess
import sys

import pytest

from convkit import _core

QEMU = shutil.which("qemu-x86_64")

SCRIPT = r"""
import hashlib, numpy as np, convkit
from convkit import _core, models
import convkit.functional as F
convkit.manual_seed(3)
rng = np.random.default_rng(5)
net = models.resnet20()
x = rng.standard_normal((2, 3, 12, 12)).astype(np.float32)
y = net(x)
g = net.backward(np.ones_like(y))
w = rng.standard_normal((6, 3, 5, 5)).astype(np.float32)
z = F.conv2d(x, w, stride=2, padding=(1, 2), dilation=(1, 2))
p = F.max_pool2d(x, 3, stride=2, ceil_mode=True)
h = hashlib.md5()
for a in (y, g, z, p):
    h.update(np.ascontiguousarray(a).tobytes())
print(_core.isa(), h.hexdigest())
"""


def _numpy_runs_on(cpu):
    r = subprocess.run([QEMU, "-cpu", cpu, sys.executable, "-c", "import numpy"],
                       capture_output=True, text=True, timeout=600)
    return r.returncode == 0


def _run(cmd, env):
    r = subprocess.run(cmd + ["-c", SCRIPT], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, f"{' '.join(cmd)} exited {r.returncode}:\n{r.stderr[-3000:]}"
    return r.stdout.split()


@pytest.mark.skipif(os.environ.get("CONVKIT_SANITIZED") == "1",
                    reason="the sanitized build needs its preloaded runtime, which qemu's guest "
                    "cannot map; the plain run covers this")
@pytest.mark.parametrize("cpu,isa", [("Haswell", "avx2"), ("Nehalem-v2", "scalar")])
def test_imports_and_matches_on_an_older_cpu(cpu, isa):
    if QEMU is None:
        if os.environ.get("CONVKIT_REQUIRE_QEMU"):
            pytest.fail("qemu-x86_64 not found (apt-get install qemu-user)")
        pytest.skip("qemu-x86_64 not found (apt-get install qemu-user)")
    if isa not in ("scalar", "avx2", "avx512")[: ("scalar", "avx2", "avx512").index(
            _core.best_isa()) + 1]:
        pytest.skip(f"this CPU cannot run {isa} natively to compare with")
    if cpu == "Nehalem-v2" and not _numpy_runs_on(cpu):  # (see the module's docstring)
        cpu = "SandyBridge-v2"
    env = dict(os.environ, OMP_NUM_THREADS="2")
    env.pop("CONVKIT_ISA", None)
    emulated = _run([QEMU, "-cpu", cpu, sys.executable], env)
    assert emulated[0] == isa, f"under {cpu} convkit chose {emulated[0]}, expected {isa}"
    native = _run([sys.executable], dict(env, CONVKIT_ISA=isa))
    assert native[0] == isa
    assert emulated[1] == native[1], f"{cpu} ({isa}) gives other bits than this CPU at {isa}"
