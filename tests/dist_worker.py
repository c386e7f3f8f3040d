"""Run under mpiexec by tests/test_distributed.py: one scenario per command line.

    python dist_worker.py SCENARIO OUT_DIR [N_SAMPLES] [BATCH] [LR] [MOMENTUM]

Each rank writes OUT_DIR/rank<r>.npz (its final state_dict) and OUT_DIR/rank<r>.json (its
history); the faults scenarios fail on purpose.
"""
import json
import os
import signal
import sys

import numpy as np

import convkit
from convkit import data, distributed, models, nn, optim, training


def lenet_data(n):
    x, y = data.load_mnist(kind="mnist-sample")
    x = (x[:n] - 0.13) / 0.31
    return x.astype(np.float32), y[:n]


def resnet_data(n):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((n, 1, 12, 12)).astype(np.float32)
    y = (x[:, 0, :6].mean(axis=(1, 2)) > 0).astype(np.int64) * 3 + (x[:, 0, :, :6].mean(
        axis=(1, 2)) > 0)
    return x, y


def build(kind, r=0):
    convkit.manual_seed(1)
    if kind == "lenet":
        return models.lenet5()
    if kind == "resnet":
        return models.resnet20(num_classes=10, in_channels=1)
    if kind == "mismatch":
        return models.lenet5(num_classes=10 if r == 0 else 9)
    raise SystemExit(f"unknown model {kind}")


def main():
    scenario, out = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 640
    batch = int(sys.argv[4]) if len(sys.argv) > 4 else 64
    lr = float(sys.argv[5]) if len(sys.argv) > 5 else 0.01
    momentum = float(sys.argv[6]) if len(sys.argv) > 6 else 0.0
    r, P = distributed.init(threads=1)
    distributed.OVERLAP = os.environ.get("CONVKIT_TEST_OVERLAP") == "1"
    kind = {"lenet": "lenet", "resnet": "resnet", "raise": "lenet", "kill": "lenet",
            "mismatch": "mismatch"}[scenario]
    model = build(kind, r)
    x, y = (resnet_data if kind == "resnet" else lenet_data)(n)
    opt = optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=1e-4)

    class Fault:
        def __init__(self):
            self.steps = 0

        def on_epoch_end(self, epoch, logs):
            if r == 1 and scenario == "raise":
                raise RuntimeError("rank 1 broke on purpose")
            if r == 1 and scenario == "kill":
                os.kill(os.getpid(), signal.SIGKILL)

    hist = training.fit(model, nn.CrossEntropyLoss(), opt, (x, y), val=(x[:100], y[:100]),
                        epochs=2 if scenario in ("raise", "kill") else 1, batch_size=batch,
                        progress=False, distributed=True, callbacks=[Fault()])
    np.savez(os.path.join(out, f"rank{r}.npz"), **model.state_dict())
    with open(os.path.join(out, f"rank{r}.json"), "w") as f:
        json.dump({"history": hist, "world": P}, f)


if __name__ == "__main__":
    main()
