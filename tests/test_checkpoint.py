"""Checkpoints: atomic writes, all-or-nothing loads, and a run killed with SIGKILL that resumes
to exactly the weights of a run that was never stopped."""
import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import convkit
from convkit import nn, optim, training

# A small network with every kind of state: conv and linear weights, batch-norm buffers
# (running statistics, an int64 counter), dropout (random masks), SGD momentum, a schedule.
SCRIPT = textwrap.dedent("""
    import json, os, signal, sys
    import numpy as np
    import convkit
    from convkit import nn, optim, training

    path, epochs, kill_after = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    convkit.set_num_threads(1)
    convkit.manual_seed(11)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((96, 1, 8, 8)).astype(np.float32)
    y = (x[:, 0, :4].sum(axis=(1, 2)) > 0).astype(np.int64) + 2 * (x[:, 0, :, :4].sum(axis=(1, 2)) > 0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(0.3), nn.Linear(64, 4))
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    sched = optim.MultiStepLR(opt, [2, 3], 0.5)

    class Killer:
        def on_epoch_end(self, epoch, logs):
            if epoch + 1 == kill_after:
                os.kill(os.getpid(), signal.SIGKILL)

    hist = training.fit(model, nn.CrossEntropyLoss(), opt, (x, y), val=(x[:32], y[:32]),
                        epochs=epochs, batch_size=20, progress=False, scheduler=sched,
                        checkpoint=path, resume=True, callbacks=[Killer()])
    np.savez(path + ".final.npz", **model.state_dict())
    print(json.dumps({"loss": hist["loss"], "lr": opt.lr}))
""")


def _run(tmp_path, name, epochs, kill_after):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    return subprocess.run([sys.executable, str(script), str(tmp_path / name), str(epochs),
                           str(kill_after)], capture_output=True, text=True, timeout=300)


def test_a_run_killed_after_an_epoch_resumes_to_the_uninterrupted_weights(tmp_path):
    whole = _run(tmp_path, "whole.ckpt", 5, 0)
    assert whole.returncode == 0, whole.stderr
    killed = _run(tmp_path, "part.ckpt", 5, 2)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (tmp_path / "part.ckpt").exists()
    assert not (tmp_path / "part.ckpt.final.npz").exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".convkit-")]  # no temp file
    resumed = _run(tmp_path, "part.ckpt", 5, 0)
    assert resumed.returncode == 0, resumed.stderr
    a, b = json.loads(whole.stdout), json.loads(resumed.stdout)
    assert a == b  # the whole history (5 epochs) and the final learning rate
    with np.load(tmp_path / "whole.ckpt.final.npz") as fa, \
            np.load(tmp_path / "part.ckpt.final.npz") as fb:
        assert sorted(fa.files) == sorted(fb.files)
        for k in fa.files:
            assert np.array_equal(fa[k], fb[k]), k
        assert fa["1.num_batches_tracked"] == 25  # 5 epochs x 5 batches, counted across the kill
    # a finished run resumed again does nothing more
    again = _run(tmp_path, "part.ckpt", 5, 0)
    assert json.loads(again.stdout) == a


def _setup(seed=0):
    convkit.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    opt = optim.Adam(model.parameters(), lr=0.01)
    sched = optim.StepLR(opt, 2)
    x = np.random.default_rng(seed).standard_normal((8, 3)).astype(np.float32)
    loss = nn.CrossEntropyLoss()
    loss(model(x), np.arange(8) % 2)
    model.backward(loss.backward())
    opt.step()
    sched.step()
    return model, opt, sched


def _states(*objs):
    out = []
    for o in objs:
        s = o.state_dict()
        out.append(json.dumps(training._encode(s, arrays := {}), sort_keys=True))
        out.extend(a.tobytes() for a in arrays.values())
    return out


def test_save_and_load_checkpoint_round_trip(tmp_path):
    model, opt, sched = _setup(0)
    path = tmp_path / "c.ckpt"
    training.save_checkpoint(path, model, opt, sched, epoch=7, note="hello", best=[0.5, 0.25])
    state = convkit._generator().bit_generator.state
    draw = convkit._generator().random()
    m2, o2, s2 = _setup(1)
    assert _states(model, opt, sched) != _states(m2, o2, s2)
    assert training.load_checkpoint(path, m2, o2, s2) == 7
    assert _states(model, opt, sched) == _states(m2, o2, s2)
    assert convkit._generator().bit_generator.state == state  # the generator is restored too
    assert convkit._generator().random() == draw
    full = training.load_checkpoint(path, m2, o2, s2, _full=True)
    assert full["extra"] == {"note": "hello", "best": [0.5, 0.25]}


def test_truncated_or_foreign_checkpoints_raise_and_change_nothing(tmp_path):
    model, opt, sched = _setup(0)
    path = tmp_path / "c.ckpt"
    training.save_checkpoint(path, model, opt, sched, epoch=1)
    m2, o2, s2 = _setup(1)
    before = _states(m2, o2, s2)
    data = path.read_bytes()
    for cut in (len(data) // 2, 100, 0):
        bad = tmp_path / f"cut{cut}.ckpt"
        bad.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="not a complete convkit checkpoint"):
            training.load_checkpoint(bad, m2, o2, s2)
    np.savez(tmp_path / "weights.npz", **model.state_dict())
    with pytest.raises(ValueError, match="not a complete convkit checkpoint|not a convkit"):
        training.load_checkpoint(tmp_path / "weights.npz", m2, o2, s2)
    # another model: the optimizer and scheduler would fit, the model does not
    other = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.Linear(5, 2))
    training.save_checkpoint(tmp_path / "other.ckpt", other, optim.Adam(other.parameters()),
                             epoch=1)
    with pytest.raises(ValueError, match="does not fit"):
        training.load_checkpoint(tmp_path / "other.ckpt", m2, o2)
    # the model fits but the optimizer state is another optimizer's: the model is rolled back
    training.save_checkpoint(tmp_path / "sgd.ckpt", model,
                             optim.SGD(model.parameters(), lr=0.1, momentum=0.9), epoch=1)
    with pytest.raises(ValueError, match="no scheduler state"):
        training.load_checkpoint(tmp_path / "sgd.ckpt", m2, o2, s2)
    sgd_model = _setup(0)[0]
    sgd = optim.SGD(sgd_model.parameters(), lr=0.1, momentum=0.9)
    sgd_model.zero_grad()
    sgd_model[0].weight.grad[...] = 1.0
    sgd.step()
    training.save_checkpoint(tmp_path / "sgd2.ckpt", sgd_model, sgd, epoch=1)
    with pytest.raises(ValueError, match="momentum_buffer"):
        training.load_checkpoint(tmp_path / "sgd2.ckpt", m2, o2)
    assert _states(m2, o2, s2) == before
    with pytest.raises(FileNotFoundError):
        training.load_checkpoint(tmp_path / "missing.ckpt", m2, o2)


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model, opt, sched = _setup(0)
    path = tmp_path / "c.ckpt"
    training.save_checkpoint(path, model, opt, sched, epoch=1)
    good = path.read_bytes()

    def broken(f, **arrays):
        f.write(b"PK\x03\x04 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError, match="disk full"):
        training.save_checkpoint(path, model, opt, sched, epoch=2)
    assert path.read_bytes() == good
    assert os.listdir(tmp_path) == ["c.ckpt"]
    with pytest.raises(TypeError, match="cannot store"):
        training.save_checkpoint(path, model, opt, epoch=3, bad=object())


def test_fit_resume_needs_a_path_and_starts_fresh_without_a_file(tmp_path):
    model, opt, sched = _setup(0)
    x = np.zeros((4, 3), np.float32)
    y = np.arange(4) % 2
    with pytest.raises(ValueError, match="checkpoint"):
        training.fit(model, nn.CrossEntropyLoss(), opt, (x, y), resume=True, progress=False)
    h = training.fit(model, nn.CrossEntropyLoss(), opt, (x, y), epochs=2, progress=False,
                     checkpoint=tmp_path / "new.ckpt", resume=True)
    assert len(h["loss"]) == 2
    assert training.load_checkpoint(tmp_path / "new.ckpt", model, opt) == 2
