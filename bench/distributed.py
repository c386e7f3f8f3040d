#!/usr/bin/env python
"""Data-parallel scaling: LeNet-5 (or ResNet-20) training throughput at a fixed global batch,
R ranks x T threads each, under mpiexec; the share of each step spent communicating.

    python bench/distributed.py                          # 1 rank x 2 threads vs 2 ranks x 1
    python bench/distributed.py --configs 1x16,2x8,4x4,8x2,16x1,1x1,2x1,4x1,8x1,16x1
    python bench/distributed.py --model resnet20 --batch 128 --images 2560

Each configuration runs in its own mpiexec job; rounds alternate the configurations and the
table gives medians over rounds. images/s counts the global batch over the slowest rank's
epoch time (the second epoch: the first warms caches and the MPI connections); "comm" is the
time rank 0 spent in the gradient all-reduce and buffer broadcasts, as a share of the epoch
(with the overlap: posting the buckets and waiting for them after the backward pass).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time


def worker(args):
    import numpy as np
    import convkit
    from convkit import distributed as dist, models, nn, optim, training
    r, P = dist.init(threads=args.threads)
    spent = [0.0]

    def timed(fn):
        def run(*a, **k):
            t0 = time.perf_counter()
            fn(*a, **k)
            spent[0] += time.perf_counter() - t0
        return run

    dist.OVERLAP = args.overlap == "on"
    dist.allreduce_gradients = timed(dist.allreduce_gradients)
    dist.broadcast_buffers = timed(dist.broadcast_buffers)
    dist._OverlappedReduce.finish = timed(dist._OverlappedReduce.finish)
    dist._OverlappedReduce._send = timed(dist._OverlappedReduce._send)
    convkit.manual_seed(0)
    rng = np.random.default_rng(0)
    if args.model == "lenet5":
        model = models.lenet5()
        x = rng.standard_normal((args.images, 1, 28, 28)).astype(np.float32)
    else:
        model = models.resnet20()
        x = rng.standard_normal((args.images, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, args.images)
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    marks = []

    class Mark:
        def on_epoch_end(self, epoch, logs):
            marks.append(spent[0])

    h = training.fit(model, nn.CrossEntropyLoss(), opt, (x, y), epochs=2,
                     batch_size=args.batch, progress=False, distributed=True,
                     callbacks=[Mark()])
    if r == 0:
        sec = h["seconds"][-1]
        print(json.dumps({"ranks": P, "threads": convkit.get_num_threads(),
                          "overlap": args.overlap,
                          "images_per_second": args.images / sec, "seconds": sec,
                          "comm_share": (marks[-1] - marks[-2]) / sec}))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", default="1x2,2x1,2x1-", help="RANKSxTHREADS, comma-"
                   "separated; a trailing '-' turns off the overlap of the all-reduce with "
                   "the backward pass")
    p.add_argument("--model", choices=["lenet5", "resnet20"], default="lenet5")
    p.add_argument("--batch", type=int, default=256, help="global batch")
    p.add_argument("--images", type=int, default=12800, help="images per epoch")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--overlap", default="on", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    mpiexec = shutil.which("mpiexec") or os.path.join(os.path.dirname(sys.executable),
                                                      "mpiexec")
    configs = [tuple(int(v) for v in c.rstrip("-").split("x")) + (not c.endswith("-"),)
               for c in args.configs.split(",")]
    results = {c: [] for c in configs}
    for rnd in range(args.rounds):
        for ranks, threads, overlap in (configs if rnd % 2 == 0 else configs[::-1]):
            cmd = [mpiexec, "-n", str(ranks), sys.executable, os.path.abspath(__file__),
                   "--worker", "--threads", str(threads), "--model", args.model,
                   "--overlap", "on" if overlap else "off",
                   "--batch", str(args.batch), "--images", str(args.images)]
            env = dict(os.environ, OMP_NUM_THREADS=str(threads))
            r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
            if r.returncode != 0:
                sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
            line = [s for s in r.stdout.splitlines() if s.startswith("{")][-1]
            results[(ranks, threads, overlap)].append(json.loads(line))
    base = statistics.median(x["images_per_second"] for x in results[configs[0]])
    print(f"{args.model}, global batch {args.batch}, {args.images} images per epoch, "
          f"median of {args.rounds} rounds")
    print(f"{'ranks x threads':>16} {'overlap':>8} {'images/s':>10} {'vs first':>9} "
          f"{'comm share':>11}")
    table = []
    for c in configs:
        ips = statistics.median(x["images_per_second"] for x in results[c])
        comm = statistics.median(x["comm_share"] for x in results[c])
        table.append({"ranks": c[0], "threads": c[1], "overlap": c[2] and c[0] > 1,
                      "images_per_second": ips, "comm_share": comm, "rounds": results[c]})
        ov = ("yes" if c[2] else "no") if c[0] > 1 else "-"
        print(f"{c[0]:>7} x {c[1]:<6} {ov:>8} {ips:>10,.0f} {ips / base:>8.2f}x "
              f"{100 * comm:>10.1f}%")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "batch": args.batch, "images": args.images,
                       "table": table}, f, indent=1)


if __name__ == "__main__":
    main()
