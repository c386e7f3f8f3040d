"""The thread pool: the same bits for any thread count and either runtime, Python threads calling
in at once, a forked child, thread counts from the environment."""
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import convkit
from convkit import functional as F, models, nn

SCRIPT = """
import sys, numpy as np, convkit
from convkit import functional as F, models, nn
convkit.set_num_threads(int(sys.argv[2]))
rng = np.random.default_rng(0)
x = rng.standard_normal((16, 3, 33, 31)).astype(np.float32)
w = rng.standard_normal((8, 3, 5, 5)).astype(np.float32)
convkit.manual_seed(0)
m = models.lenet5(in_channels=3, input_size=32)
xb = rng.standard_normal((32, 3, 32, 32)).astype(np.float32)
crit = nn.CrossEntropyLoss()
crit(m(xb), np.arange(32) % 10)
m.backward(crit.backward())
out = {"conv": F.conv2d(x, w, padding=2, stride=2), "pool": F.max_pool2d(x, 3, 2, 1)}
# channel-block tiles whose items split rows by the thread count (batch 1 and 3)
for i, (n, c, h, k) in enumerate([(1, 24, 9, 70), (3, 16, 12, 48), (1, 64, 8, 64)]):
    out[f"kvec{i}"] = F.conv2d(rng.standard_normal((n, c, h, h + 2)).astype(np.float32),
                               rng.standard_normal((k, c, 3, 3)).astype(np.float32),
                               rng.standard_normal(k).astype(np.float32), padding=1)
out.update({n: p.grad for n, p in m.named_parameters()})
np.savez(sys.argv[1], **out)
"""


def _run(tmp_path, runtime, threads):
    path = tmp_path / f"{runtime}-{threads}.npz"
    env = dict(os.environ, CONVKIT_RUNTIME=runtime)
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(path), str(threads)], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def test_same_bits_for_any_thread_count_and_either_runtime(tmp_path):
    ref = _run(tmp_path, "pool", 1)
    for runtime, threads in [("pool", 2), ("pool", 3), ("pool", 7), ("openmp", 2)]:
        got = _run(tmp_path, runtime, threads)
        for k in ref:
            assert np.array_equal(ref[k], got[k]), (runtime, threads, k)


def test_python_threads_calling_at_once_get_the_serial_results(threads):
    threads(2)
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((8, 4, 20, 20)).astype(np.float32) for _ in range(6)]
    w = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    want = [F.conv2d(x, w, padding=1) for x in xs]
    got = [None] * len(xs)
    errors = []

    def work(i):
        try:
            for _ in range(20):
                got[i] = F.conv2d(xs[i], w, padding=1)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(len(xs))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors
    for a, b in zip(want, got):
        assert np.array_equal(a, b)


FORK = """
import os, sys, numpy as np, convkit
from convkit import functional as F
convkit.set_num_threads(2)
rng = np.random.default_rng(2)
x = rng.standard_normal((16, 4, 24, 24)).astype(np.float32)
w = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)
want = F.conv2d(x, w, padding=1)  # the pool is running in the parent
pid = os.fork()
if pid == 0:  # the child: the parent's pool threads do not exist here
    os._exit(0 if np.array_equal(F.conv2d(x, w, padding=1), want) else 1)
_, status = os.waitpid(pid, 0)
sys.exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 3)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_computes_with_the_pool():
    env = dict(os.environ, CONVKIT_RUNTIME="pool")
    r = subprocess.run([sys.executable, "-c", FORK], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


def test_thread_count_comes_from_the_environment():
    code = "import convkit; print(convkit.get_num_threads(), convkit._core.runtime())"
    for env_threads, runtime in [("3", None), ("1", "pool"), ("2", "openmp")]:
        env = dict(os.environ, OMP_NUM_THREADS=env_threads)
        env.pop("CONVKIT_RUNTIME", None)
        if runtime:
            env["CONVKIT_RUNTIME"] = runtime
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, timeout=60).stdout.split()
        assert out == [env_threads, runtime or "pool"]  # the pool is the default runtime
    with pytest.raises(TypeError):
        convkit.set_num_threads(2.0)
