"""fit / evaluate: the training loop, with a progress bar on a terminal and silence elsewhere."""
from __future__ import annotations

import sys
import inspect
from typing import Dict, List, Optional, Sequence, Tuple
import time

import numpy as np

from . import functional as F
from .data import batches

__all__ = ["fit", "evaluate", "EarlyStopping"]


class EarlyStopping:
    """Stops fit() when the monitored value (val_loss, or loss without validation data) has not
    improved by more than min_delta for `patience` epochs.

    >>> stop = EarlyStopping(patience=1)
    >>> [stop.on_epoch_end(e, {"loss": v}) for e, v in enumerate([1.0, 0.9, 0.95, 0.97])]
    [False, False, False, True]
    """

    def __init__(self, patience, min_delta=0.0):
        if int(patience) < 0:
            raise ValueError(f"EarlyStopping: expected patience >= 0, but got {patience}")
        self.patience, self.min_delta = int(patience), float(min_delta)
        self.best, self.wait, self.stopped_epoch = np.inf, 0, None

    def on_epoch_end(self, epoch, logs):
        value = logs.get("val_loss", logs["loss"])
        if value < self.best - self.min_delta:
            self.best, self.wait = value, 0
            return False
        self.wait += 1
        if self.wait > self.patience:
            self.stopped_epoch = epoch
            return True
        return False


class _Progress:
    """On a terminal (stderr) and when enabled: tqdm's bar if tqdm is installed, else a plain
    one-line bar; either is replaced by a one-line summary when the epoch ends. Nothing when
    not a terminal or progress=False."""

    def __init__(self, total, desc, enabled):
        self.bar, self.total, self.desc, self.n, self.width = None, total, desc, 0, 0
        self.enabled = bool(enabled) and sys.stderr.isatty()
        self.t0 = time.perf_counter()
        if self.enabled:
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=total, desc=desc, unit="img", unit_scale=True, leave=False,
                                file=sys.stderr)
            except ImportError:
                pass

    def update(self, n, **stats):
        if not self.enabled:
            return
        self.n += n
        if self.bar is not None:  # tqdm shows the rate itself
            self.bar.set_postfix(stats, refresh=False)
            self.bar.update(n)
            return
        frac = self.n / max(self.total, 1)
        rate = self.n / max(time.perf_counter() - self.t0, 1e-9)
        s = " ".join(f"{k} {v}" for k, v in stats.items())
        line = (f"{self.desc} [{'#' * int(30 * frac):<30}] {100 * frac:5.1f}% {s} "
                f"{rate:,.0f} img/s")
        # pad over what the last line left, so no stale digits remain
        print(f"\r{line:<{self.width}}", end="", file=sys.stderr, flush=True)
        self.width = len(line)

    def close(self, summary=""):
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
        else:
            print(f"\r{'':<{self.width}}\r", end="", file=sys.stderr)
        if summary:
            print(summary, file=sys.stderr, flush=True)


def evaluate(model, x: np.ndarray, y: np.ndarray, batch_size: int = 1000) -> Dict[str, float]:
    """Mean cross-entropy and accuracy of model on images x (N, ...) and labels y (N,), in eval
    mode, batch by batch -> {"loss": float, "accuracy": float}.

    >>> from convkit import models
    >>> r = evaluate(models.lenet5(), np.zeros((4, 1, 28, 28), np.float32), np.arange(4))
    >>> sorted(r)
    ['accuracy', 'loss']
    """
    was_training = model.training
    model.eval()
    total_loss, correct, n = 0.0, 0, len(x)
    try:
        for xb, yb in batches(x, y, batch_size, shuffle=False):
            logits = model(xb)
            total_loss += F.cross_entropy(logits, yb) * len(xb)
            correct += int((logits.argmax(axis=1) == yb).sum())
    finally:
        model.train(was_training)
    return {"loss": total_loss / max(n, 1), "accuracy": correct / max(n, 1)}


def _backward_of(model):
    """model.backward without the input gradient nobody reads (input_grad=False), for models
    whose backward takes that argument (every convkit layer does; a user's own may not)."""
    try:
        params = inspect.signature(model.backward).parameters
    except (TypeError, ValueError):
        params = {}
    if "input_grad" in params or any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return lambda g: model.backward(g, input_grad=False)
    return model.backward


def _summary(epoch, epochs, logs):
    """One line per epoch: 'epoch 3/10  loss 0.3121  acc 0.8874 | val loss ... | 1.6 s,
    37,512 img/s'."""
    line = (f"epoch {epoch + 1}/{epochs}  loss {logs['loss']:.4f}  acc {logs['accuracy']:.4f}")
    if "val_loss" in logs:
        line += f" | val loss {logs['val_loss']:.4f}  acc {logs['val_accuracy']:.4f}"
    return line + f" | {logs['seconds']:.1f} s, {logs['images_per_second']:,.0f} img/s"


def fit(model, loss, optimizer, train: Tuple[np.ndarray, np.ndarray],
        val: Optional[Tuple[np.ndarray, np.ndarray]] = None, epochs: int = 1,
        batch_size: int = 64, callbacks: Sequence = (),
        progress: bool = True) -> Dict[str, List[float]]:
    """Trains model on train = (x, y). Returns the history: per-epoch lists of loss, accuracy,
    seconds and images_per_second (and val_loss, val_accuracy when val is given).

    A callback is any object with on_epoch_end(epoch, logs) -> True to stop training. With
    ``progress`` on a terminal, a bar shows each epoch's progress, then one summary line.
    The first layer's input gradient is not computed (``backward(..., input_grad=False)``).

    >>> from convkit import models, nn, optim
    >>> model = models.lenet5()
    >>> x, y = np.zeros((8, 1, 28, 28), np.float32), np.arange(8) % 10
    >>> h = fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.01), (x, y),
    ...         epochs=2, batch_size=4, progress=False)
    >>> sorted(h), len(h["loss"])
    (['accuracy', 'images_per_second', 'loss', 'seconds'], 2)
    """
    x, y = train
    history = {"loss": [], "accuracy": [], "seconds": [], "images_per_second": []}
    if val is not None:
        history.update(val_loss=[], val_accuracy=[])
    backward = _backward_of(model)
    for epoch in range(int(epochs)):
        model.train()
        bar = _Progress(len(x), f"epoch {epoch + 1}/{epochs}", progress)
        t0 = time.perf_counter()
        total, correct, seen = 0.0, 0, 0
        for xb, yb in batches(x, y, batch_size, shuffle=True):
            logits = model(xb)
            value = loss(logits, yb)
            optimizer.zero_grad()
            backward(loss.backward())
            optimizer.step()
            total += value * len(xb)
            correct += int((logits.argmax(axis=1) == yb).sum())
            seen += len(xb)
            bar.update(len(xb), loss=f"{total / seen:.4f}", acc=f"{correct / seen:.4f}")
        seconds = time.perf_counter() - t0
        logs = {"loss": total / max(seen, 1), "accuracy": correct / max(seen, 1),
                "seconds": seconds, "images_per_second": seen / max(seconds, 1e-12)}
        if val is not None:
            v = evaluate(model, *val)
            logs.update(val_loss=v["loss"], val_accuracy=v["accuracy"])
        bar.close(_summary(epoch, epochs, logs))
        for k, v in logs.items():
            history[k].append(v)
        if any(cb.on_epoch_end(epoch, logs) for cb in callbacks):
            break
    return history
