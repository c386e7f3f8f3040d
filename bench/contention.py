#!/usr/bin/env python
"""Threads against a busy core: LeNet-5 training step and inference and three convolutions at
1 thread and at the default thread count, on a quiet machine and with one CPU hog (a process
spinning in a loop, which this script starts and stops itself), for convkit's own pool
(CONVKIT_RUNTIME=pool, the default) and OpenMP's (CONVKIT_RUNTIME=openmp) and, in a build with
-Ccmake.define.CONVKIT_TBB=ON, oneTBB's (--runtimes pool,openmp,tbb).

    python bench/contention.py [--rounds 7] [--json out.json]

Each (runtime, hog) cell runs in a fresh process; inside it the cases alternate between 1 and
N threads, and the table gives medians over rounds. The issue's target: with the hog, N
threads no slower than 1.1x the 1-thread time.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def worker(rounds, reps):
    import numpy as np
    import convkit
    from convkit import functional as F, models, nn, optim
    rng = np.random.default_rng(0)
    model = models.lenet5()
    crit = nn.CrossEntropyLoss()
    opt = optim.SGD(model.parameters(), lr=0.0)  # lr 0: the weights stay put
    xb = rng.standard_normal((64, 1, 28, 28)).astype(np.float32)
    yb = np.arange(64) % 10

    def step():
        crit(model(xb), yb)
        opt.zero_grad()
        model.backward(crit.backward(), input_grad=False)
        opt.step()

    def conv(xs, ws, **kw):
        x = rng.standard_normal(xs).astype(np.float32)
        w = rng.standard_normal(ws).astype(np.float32)
        return lambda: F.conv2d(x, w, **kw)

    cases = {
        "LeNet-5 training step, batch 64": step,
        "LeNet-5 inference, batch 64": lambda: model(xb),
        "conv 6->16 5x5, 14x14, batch 64": conv((64, 6, 14, 14), (16, 6, 5, 5)),
        "conv 16->32 3x3 pad 1, 32x32, batch 32": conv((32, 16, 32, 32), (32, 16, 3, 3),
                                                        padding=1),
        "conv 3->64 7x7 stride 2 pad 3, 64x64, batch 16": conv((16, 3, 64, 64), (64, 3, 7, 7),
                                                               stride=2, padding=3),
    }
    default = convkit.get_num_threads()
    out = {name: {1: [], default: []} for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            for t in (1, default):
                convkit.set_num_threads(t)
                fn()
                times = []
                for _ in range(reps):
                    t0 = time.perf_counter()
                    fn()
                    times.append(time.perf_counter() - t0)
                out[name][t].append(statistics.median(times) * 1e3)
    print(json.dumps({"threads": default,
                      "cases": {n: {str(t): statistics.median(v) for t, v in d.items()}
                                for n, d in out.items()}}))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--reps", type=int, default=9)
    p.add_argument("--runtimes", default="pool,openmp")
    p.add_argument("--json", default=None)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args.rounds, args.reps)
    results = []
    for hog in (False, True):
        proc = None
        if hog:  # one core kept busy for as long as the measurements run
            proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            time.sleep(0.5)
        try:
            for runtime in args.runtimes.split(","):
                # pool, openmp, or tbb in a -Ccmake.define.CONVKIT_TBB=ON build
                env = dict(os.environ, CONVKIT_RUNTIME=runtime)
                r = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker",
                                    "--rounds", str(args.rounds), "--reps", str(args.reps)],
                                   capture_output=True, text=True, env=env, timeout=1800)
                if r.returncode != 0:
                    sys.exit(r.stderr[-3000:])
                res = json.loads(r.stdout.strip().splitlines()[-1])
                results.append({"runtime": runtime, "hog": hog, **res})
        finally:
            if proc is not None:
                proc.kill()
                proc.wait()
    n = results[0]["threads"]
    print(f"median ms over {args.rounds} rounds; ratio = time at {n} threads / time at 1")
    print(f"{'case':<48} {'runtime':<7} {'hog':<4} {'1 thread':>9} {f'{n} threads':>10} "
          f"{'ratio':>6}")
    for r in results:
        for name, d in r["cases"].items():
            one, many = d["1"], d[str(n)]
            print(f"{name:<48} {r['runtime']:<7} {'yes' if r['hog'] else 'no':<4} "
                  f"{one:>9.3f} {many:>10.3f} {many / one:>6.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
