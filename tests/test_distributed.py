"""Data-parallel training under MPI: each scenario runs tests/dist_worker.py with mpiexec
(2 or 3 ranks, oversubscription allowed) and compares with one process in this one."""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import convkit
from convkit import distributed as D, nn, optim, training

pytest.importorskip("mpi4py")
HERE = Path(__file__).resolve().parent
WORKER = HERE / "dist_worker.py"
MPIEXEC = shutil.which("mpiexec") or str(Path(sys.executable).parent / "mpiexec")
if not os.path.exists(MPIEXEC):
    pytest.skip("mpiexec not found (pip install \".[distributed]\")", allow_module_level=True)
sys.path.insert(0, str(HERE))
import dist_worker as W  # noqa: E402


def mpirun(n, *args, timeout=240, overlap=False):
    env = dict(os.environ, OMP_NUM_THREADS="1", CONVKIT_TEST_OVERLAP="1" if overlap else "0")
    t0 = time.perf_counter()
    r = subprocess.run([MPIEXEC, "-n", str(n), sys.executable, str(WORKER), *map(str, args)],
                       capture_output=True, text=True, timeout=timeout, env=env)
    return r, time.perf_counter() - t0


def single(kind, n, batch, lr, momentum, ranks_for_bn=1):
    """The one-process run the ranks must reproduce (fit's own loop for ranks_for_bn=1; for
    batch norm, every global batch in ranks_for_bn shards with rank 0's running statistics:
    the rule the distributed run follows)."""
    convkit.set_num_threads(1)
    model = W.build(kind)
    x, y = (W.resnet_data if kind == "resnet" else W.lenet_data)(n)
    opt = optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=1e-4)
    if ranks_for_bn == 1:
        h = training.fit(model, nn.CrossEntropyLoss(), opt, (x, y), val=(x[:100], y[:100]),
                         epochs=1, batch_size=batch, progress=False)
        return model.state_dict(), h
    crit = nn.CrossEntropyLoss()
    order = convkit._generator().permutation(n)
    for i in range(0, n, batch):
        step = order[i: i + batch]
        opt.zero_grad()
        for r in range(ranks_for_bn):
            idx = step[D.shard(len(step), r, ranks_for_bn)]
            if r == 1:
                kept = [b.copy() for b in model.buffers()]
            crit(model(x[idx]), y[idx])
            model.backward(crit.backward() * np.float32(len(idx) / len(step)), input_grad=False)
        for b, k in zip(model.buffers(), kept):
            b[...] = k
        opt.step()
    return model.state_dict(), None


def load_ranks(out, n):
    states = [dict(np.load(out / f"rank{r}.npz")) for r in range(n)]
    logs = [json.loads((out / f"rank{r}.json").read_text()) for r in range(n)]
    return states, logs


def max_rel(a, b):
    return max(float(np.abs(a[k] - v).max() / max(float(np.abs(v).max()), 1e-30))
               for k, v in b.items() if v.dtype == np.float32)


@pytest.mark.parametrize("ranks,n", [(2, 3000), (3, 1000)])
def test_ranks_end_with_the_weights_of_one_process(tmp_path, ranks, n):
    r, _ = mpirun(ranks, "lenet", tmp_path, n, 64, 0.01, 0.9)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    states, logs = load_ranks(tmp_path, ranks)
    for s in states[1:]:  # identical bits on every rank
        assert all(np.array_equal(states[0][k], s[k]) for k in s)
    for log in logs[1:]:
        assert log["history"]["loss"] == logs[0]["history"]["loss"]
    want, hist = single("lenet", n, 64, 0.01, 0.9)
    assert max_rel(states[0], want) <= 1e-5
    assert not np.array_equal(states[0]["0.weight"], W.build("lenet").state_dict()["0.weight"])
    # the global batch 64 does not divide n: every sample is seen once (1000 = 15 x 64 + 40)
    assert logs[0]["history"]["loss"][0] == pytest.approx(hist["loss"][0], rel=1e-5)
    assert logs[0]["history"]["val_accuracy"] == hist["val_accuracy"]


@pytest.mark.parametrize("kind,n,batch", [("lenet", 1000, 64), ("resnet", 40, 16)])
def test_overlapping_the_reduction_with_backward_gives_the_same_bits(tmp_path, kind, n, batch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    r1, _ = mpirun(3, kind, tmp_path / "a", n, batch, 0.01, 0.9, overlap=True)
    r2, _ = mpirun(3, kind, tmp_path / "b", n, batch, 0.01, 0.9, overlap=False)
    assert r1.returncode == 0 and r2.returncode == 0, r1.stderr[-2000:] + r2.stderr[-2000:]
    a, _ = load_ranks(tmp_path / "a", 3)
    b, _ = load_ranks(tmp_path / "b", 3)
    for k in a[0]:
        assert np.array_equal(a[0][k], b[0][k]) and np.array_equal(a[2][k], b[0][k]), k


def test_batch_norm_follows_the_per_rank_rule(tmp_path):
    r, _ = mpirun(2, "resnet", tmp_path, 96, 16, 0.01, 0.0)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    states, _ = load_ranks(tmp_path, 2)
    assert all(np.array_equal(states[0][k], states[1][k]) for k in states[0])
    want, _ = single("resnet", 96, 16, 0.01, 0.0, ranks_for_bn=2)
    assert max_rel(states[0], want) <= 1e-5
    assert states[0]["1.num_batches_tracked"] == 6
    # and it is not the one-process batch norm over all 16 samples
    whole, _ = single("resnet", 96, 16, 0.01, 0.0)
    assert max_rel(states[0], whole) > 1e-3


@pytest.mark.parametrize("scenario", ["raise", "kill"])
def test_a_failing_rank_stops_the_others(tmp_path, scenario):
    r, seconds = mpirun(2, scenario, tmp_path, 640, 64, timeout=120)
    assert r.returncode != 0
    assert seconds < 60
    text = r.stdout + r.stderr
    if scenario == "raise":
        assert "rank 1 of 2 failed with RuntimeError: rank 1 broke on purpose" in text, text
    else:
        # mpiexec names a dead process by pid, and convkit's start-up line maps every pid to its
        # rank. Which pid mpiexec names is a race: rank 1's SIGKILL, or rank 0 that mpiexec
        # itself killed with the same signal while cleaning up; either is mapped.
        import re
        pids = dict(re.findall(r"rank (\d+) = pid (\d+)", text))
        dead = re.search(r"PID (\d+)", text)
        assert sorted(pids) == ["0", "1"], text[-2000:]
        assert dead and dead.group(1) in pids.values(), text[-2000:]
        assert "signal 9" in text or "EXIT CODE: 9" in text, text[-2000:]
    assert not (tmp_path / "rank0.npz").exists()  # rank 0 did not go on alone


def test_a_different_model_on_one_rank_is_caught_at_start(tmp_path):
    r, seconds = mpirun(2, "mismatch", tmp_path, 640, 64, timeout=120)
    assert r.returncode != 0 and seconds < 60
    assert "rank 1 built a different model than rank 0" in r.stdout + r.stderr
    assert "'11.weight:(10, 84):float32' on rank 0 but '11.weight:(9, 84):float32'" in \
        r.stdout + r.stderr


def test_single_process_api():
    assert D.init() == (0, 1)
    assert (D.rank(), D.world_size(), D.is_initialized()) == (0, 1, True)
    m = nn.Linear(3, 2)
    m.weight.grad[...] = 2.0
    D.allreduce_gradients(m, weight=0.5)
    assert np.all(m.weight.grad == 1.0)
    assert [D.shard(5, r, 2) for r in range(2)] == [slice(0, 3), slice(3, 5)]
    assert [D.shard(1, r, 3) for r in range(3)] == [slice(0, 1), slice(1, 1), slice(1, 1)]


def test_the_mnist_example_runs_distributed(tmp_path):
    example = HERE.parent / "examples" / "train_mnist.py"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([MPIEXEC, "-n", "2", sys.executable, str(example), "--distributed",
                        "--dataset", "mnist-sample", "--epochs", "2", "--json"],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [line for line in r.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1  # rank 0 alone reports
    out = json.loads(lines[0])
    assert out["world_size"] == 2 and out["test_accuracy"] > 0.85


RESUME = """
import sys, numpy as np, convkit
from convkit import distributed as D, models, nn, optim, training, data
r, P = D.init(threads=1)
epochs, ck, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
convkit.manual_seed(3)
x, y = data.load_mnist(kind="mnist-sample")
m = models.lenet5()
opt = optim.SGD(m.parameters(), lr=0.02, momentum=0.9)
s = optim.StepLR(opt, 1, 0.5)
h = training.fit(m, nn.CrossEntropyLoss(), opt, (x[:640], y[:640]), epochs=epochs,
                 batch_size=64, progress=False, distributed=True, scheduler=s,
                 checkpoint=None if ck == "-" else ck, resume=ck != "-")
np.savez(out + f"{r}.npz", **m.state_dict())
if r == 0:
    print(h["loss"], opt.lr)
"""


def test_a_distributed_run_resumes_from_its_checkpoint(tmp_path):
    script = tmp_path / "resume.py"
    script.write_text(RESUME)
    env = dict(os.environ, OMP_NUM_THREADS="1")

    def run(epochs, ck, out):
        r = subprocess.run([MPIEXEC, "-n", "2", sys.executable, str(script), str(epochs),
                            str(ck), str(tmp_path / out)], capture_output=True, text=True,
                           timeout=300, env=env)
        assert r.returncode == 0, r.stderr[-2000:]
        return r.stdout.strip().splitlines()[-1]

    whole = run(4, "-", "whole")
    run(2, tmp_path / "c.ckpt", "part")      # stops after 2 of the 4 epochs
    resumed = run(4, tmp_path / "c.ckpt", "resumed")
    assert resumed == whole  # the whole history and the final learning rate
    for r in range(2):
        a = np.load(tmp_path / "whole{}.npz".format(r))
        b = np.load(tmp_path / "resumed{}.npz".format(r))
        for k in a.files:
            assert np.array_equal(a[k], b[k]), k
