"""fit / evaluate / EarlyStopping, and the example script end to end on the bundled sample."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import convkit
from convkit import data, models, nn, optim, training

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "train_mnist.py"


def test_fit_history_and_quiet_when_not_a_terminal(capsys):
    convkit.manual_seed(0)
    x, y = data.load_mnist(kind="mnist-sample")
    xt, yt = data.load_mnist(kind="mnist-sample", split="test")
    model = models.lenet5()
    hist = training.fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), 0.02, 0.9),
                        (x[:1000], y[:1000]), val=(xt, yt), epochs=3, batch_size=32)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
    assert set(hist) == {"loss", "accuracy", "seconds", "images_per_second", "val_loss", "val_accuracy"}
    assert all(len(v) == 3 for v in hist.values())
    assert hist["loss"][2] < hist["loss"][0]
    ev = training.evaluate(model, xt, yt)
    assert ev["accuracy"] == pytest.approx(hist["val_accuracy"][-1])
    assert model.training


def test_early_stopping():
    es = training.EarlyStopping(patience=1, min_delta=0.1)
    stops = [es.on_epoch_end(i, {"loss": v}) for i, v in enumerate([1.0, 0.5, 0.45, 0.44, 0.3])]
    assert stops == [False, False, False, True, False] and es.stopped_epoch == 3


def _run_example(*args, env=None):
    e = {**os.environ, **(env or {})}
    r = subprocess.run([sys.executable, str(EXAMPLE), *args], capture_output=True, text=True,
                       env=e, timeout=600)
    assert r.returncode == 0, r.stderr
    return r


def test_example_reaches_95_percent_on_bundled_sample(tmp_path):
    r = _run_example("--dataset", "mnist-sample", "--epochs", "15", "--json",
                     "--save", str(tmp_path / "w.npz"))
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    for k in ("test_accuracy", "test_loss", "train_seconds", "images_per_second", "epochs"):
        assert k in summary
    assert summary["epochs"] == 15
    assert summary["test_accuracy"] >= 0.95
    m = models.lenet5().load(tmp_path / "w.npz")
    xt, yt = data.load_mnist(kind="mnist-sample", split="test")
    xt = (xt - summary["input_mean"]) / summary["input_std"]
    assert training.evaluate(m, xt, yt)["accuracy"] == pytest.approx(summary["test_accuracy"])


def test_example_falls_back_to_sample_when_offline(tmp_path):
    env = {"CONVKIT_CACHE": str(tmp_path / "cache"), "CONVKIT_MNIST_MIRROR": "http://127.0.0.1:9/",
           "CONVKIT_DATA": str(tmp_path / "none")}
    r = _run_example("--epochs", "1", "--json", env=env)
    assert "training on the bundled mnist-sample" in r.stderr
    # one line says so (no error block): "loading ...", that line, then the data summary
    head = r.stderr.split("mnist-sample: 3000 train")[0].strip().splitlines()
    assert len(head) == 2, head
    assert json.loads(r.stdout.strip().splitlines()[-1])["dataset"] == "mnist-sample"


def test_example_plot(tmp_path):
    pytest.importorskip("matplotlib")
    _run_example("--dataset", "mnist-sample", "--epochs", "2", "--plot", str(tmp_path / "c.png"))
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
