"""fit / evaluate: the training loop, with a progress bar on a terminal and silence elsewhere."""
from __future__ import annotations

import inspect
import json
import os
import sys
import time
import zipfile
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import functional as F
from .data import batches
from .nn import _savez_atomic

__all__ = ["fit", "evaluate", "EarlyStopping", "save_checkpoint", "load_checkpoint"]


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

    def state_dict(self) -> Dict[str, Any]:
        return {"best": self.best, "wait": self.wait, "stopped_epoch": self.stopped_epoch}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.best, self.wait = float(state["best"]), int(state["wait"])
        self.stopped_epoch = state["stopped_epoch"]


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


# ---- checkpoints ---------------------------------------------------------------------------------
# A checkpoint is one .npz (zip) file: every array of the model, optimizer and scheduler state as
# its own entry, and "meta.json", the rest of the state (numbers, lists, the random generator's
# state, the epoch, the history) with each array replaced by {"__array__": its entry's name}.

_FORMAT = "convkit-checkpoint-1"


def _encode(obj, arrays):
    if isinstance(obj, np.ndarray) or (hasattr(obj, "detach") and hasattr(obj, "numpy")):
        a = obj if isinstance(obj, np.ndarray) else obj.detach().cpu().numpy()
        if a.ndim == 0 and a.dtype.kind in "biuf":
            return a.item()
        key = f"a{len(arrays)}"
        arrays[key] = np.ascontiguousarray(a)
        return {"__array__": key}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, arrays) for k, v in obj.items()}
        return {"__items__": [[_encode(k, arrays), _encode(v, arrays)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, arrays) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, arrays) for v in obj]
    if obj is None or isinstance(obj, (str, bool, int, float)):
        return obj
    raise TypeError(f"save_checkpoint: cannot store a {type(obj).__name__} ({obj!r:.60})")


def _decode(obj, arrays):
    if isinstance(obj, dict):
        if "__array__" in obj:
            return arrays[obj["__array__"]]
        if "__tuple__" in obj:
            return tuple(_decode(v, arrays) for v in obj["__tuple__"])
        if "__items__" in obj:
            return {_hashable(_decode(k, arrays)): _decode(v, arrays) for k, v in obj["__items__"]}
        return {k: _decode(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v, arrays) for v in obj]
    return obj


def _hashable(k):
    return tuple(k) if isinstance(k, list) else k


def save_checkpoint(path: Union[str, os.PathLike], model, optimizer=None, scheduler=None,
                    epoch: Optional[int] = None, **extra) -> None:
    """Writes everything a resumed run needs to ``path``, atomically (a temporary file, fsync,
    rename): the model's state_dict (parameters and buffers), the optimizer's and scheduler's
    state_dicts, the epoch, convkit's random generator state (shuffling, dropout) and any
    ``extra`` keyword values (numbers, strings, lists, dicts, arrays).

    >>> import tempfile, os
    >>> from convkit import models, optim
    >>> model = models.lenet5(); opt = optim.SGD(model.parameters(), lr=0.1)
    >>> path = os.path.join(tempfile.mkdtemp(), "run.ckpt")
    >>> save_checkpoint(path, model, opt, epoch=3); load_checkpoint(path, model, opt)
    3
    """
    from . import _generator
    meta = {
        "format": _FORMAT, "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "rng": _generator().bit_generator.state,
        "extra": extra,
    }
    arrays: Dict[str, np.ndarray] = {}
    text = json.dumps(_encode(meta, arrays))
    arrays["meta.json"] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    _savez_atomic(os.fspath(path), arrays)


def _read_checkpoint(path) -> Dict[str, Any]:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"load_checkpoint: no file {path!r}")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        meta = json.loads(arrays.pop("meta.json").tobytes().decode("utf-8"))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"load_checkpoint: {path!r} is not a complete convkit checkpoint "
                         f"(truncated or another kind of file: {type(e).__name__}: {e})") from None
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        raise ValueError(f"load_checkpoint: {path!r} is not a convkit checkpoint (format "
                         f"{meta.get('format') if isinstance(meta, dict) else None!r})")
    return _decode(meta, arrays)


def load_checkpoint(path: Union[str, os.PathLike], model, optimizer=None, scheduler=None,
                    _full: bool = False):
    """Restores what ``save_checkpoint`` wrote into model, optimizer and scheduler (and
    convkit's random generator), all or nothing: a truncated file, a checkpoint of another
    model or optimizer raises ``ValueError`` and leaves everything as it was. Returns the
    saved epoch.

    >>> import tempfile, os
    >>> from convkit import nn
    >>> path = os.path.join(tempfile.mkdtemp(), "lin.ckpt")
    >>> save_checkpoint(path, nn.Linear(2, 2), epoch=1)
    >>> load_checkpoint(path, nn.Linear(2, 3))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ValueError: load_checkpoint: '...lin.ckpt' does not fit: load_state_dict: ...
    """
    from . import _generator
    ck = _read_checkpoint(path)
    for name, obj in (("optimizer", optimizer), ("scheduler", scheduler)):
        if obj is not None and ck[name] is None:
            raise ValueError(f"load_checkpoint: {os.fspath(path)!r} holds no {name} state; it "
                             f"was saved without one")
    before = [(o, o.state_dict()) for o in (model, optimizer, scheduler) if o is not None]
    rng_before = _generator().bit_generator.state
    try:
        model.load_state_dict(ck["model"])
        if optimizer is not None:
            optimizer.load_state_dict(ck["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(ck["scheduler"])
        _generator().bit_generator.state = ck["rng"]
    except BaseException as e:
        for o, state in before:
            o.load_state_dict(state)
        _generator().bit_generator.state = rng_before
        if isinstance(e, (ValueError, KeyError, TypeError)):
            raise ValueError(f"load_checkpoint: {os.fspath(path)!r} does not fit: {e}") from None
        raise
    return ck if _full else ck["epoch"]


def evaluate(model, x: np.ndarray, y: np.ndarray, batch_size: int = 1000,
             distributed: bool = False) -> Dict[str, float]:
    """Mean cross-entropy and accuracy of model on images x (N, ...) and labels y (N,), in eval
    mode, batch by batch -> {"loss": float, "accuracy": float}. With ``distributed=True``
    (under ``convkit.distributed``) each rank evaluates its share of x and the totals are
    combined, so every rank returns the same numbers.

    >>> from convkit import models
    >>> r = evaluate(models.lenet5(), np.zeros((4, 1, 28, 28), np.float32), np.arange(4))
    >>> sorted(r)
    ['accuracy', 'loss']
    """
    was_training = model.training
    model.eval()
    if distributed:
        from . import distributed as dist
        part = dist.shard(len(x))
        x, y = x[part], y[part]
    total_loss, correct, n = 0.0, 0, len(x)
    try:
        for xb, yb in batches(x, y, batch_size, shuffle=False):
            logits = model(xb)
            total_loss += F.cross_entropy(logits, yb) * len(xb)
            correct += int((logits.argmax(axis=1) == yb).sum())
    finally:
        model.train(was_training)
    if distributed:
        total_loss, correct, n = dist._allgather_sum([total_loss, correct, n])
    return {"loss": total_loss / max(n, 1), "accuracy": float(correct) / max(n, 1)}


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


def _step_scheduler(scheduler, logs):
    if scheduler is None or getattr(scheduler, "_per_batch", False):
        return
    from .optim import ReduceLROnPlateau
    if isinstance(scheduler, ReduceLROnPlateau):
        scheduler.step(logs.get("val_loss", logs["loss"]))
    else:
        scheduler.step()


def fit(model, loss, optimizer, train: Tuple[np.ndarray, np.ndarray],
        val: Optional[Tuple[np.ndarray, np.ndarray]] = None, epochs: int = 1,
        batch_size: int = 64, callbacks: Sequence = (), progress: bool = True,
        scheduler=None, checkpoint: Optional[Union[str, os.PathLike]] = None,
        resume: bool = False, distributed: bool = False) -> Dict[str, List[float]]:
    """Trains model on train = (x, y). Returns the history: per-epoch lists of loss, accuracy,
    seconds and images_per_second (and val_loss, val_accuracy when val is given).

    A callback is any object with on_epoch_end(epoch, logs) -> True to stop training. With
    ``progress`` on a terminal, a bar shows each epoch's progress, then one summary line.
    The first layer's input gradient is not computed (``backward(..., input_grad=False)``).

    ``scheduler`` is stepped after every epoch (``ReduceLROnPlateau`` with val_loss, or loss
    without validation data), ``OneCycleLR`` after every batch. With ``checkpoint=path`` the
    model, optimizer, scheduler, callbacks' state, random generator and history are saved
    there atomically after every epoch; with ``resume=True`` a run whose checkpoint exists
    continues after its last saved epoch (and ends with exactly the weights of a run that was
    never stopped); without the file it starts from the beginning.

    ``distributed=True`` trains data-parallel under MPI (``convkit.distributed``, started with
    ``mpiexec -n N``): ``batch_size`` is the global batch; rank 0 shuffles and every rank
    takes its share of each global batch (split as evenly as possible, so a last batch that
    does not divide loses or repeats nothing); gradients are averaged with each rank weighted
    by its share, identically on every rank; batch-norm running statistics are rank 0's, as
    DistributedDataParallel's default; the logs, validation (sharded) and history are global
    and the same on every rank; only rank 0 shows progress and writes the checkpoint (every
    rank reads it to resume, so it must be on a shared file system).

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
    if resume and checkpoint is None:
        raise ValueError("fit: resume=True needs checkpoint=<path> to resume from")
    start = 0
    if resume and os.path.exists(os.fspath(checkpoint)):
        ck = load_checkpoint(checkpoint, model, optimizer, scheduler, _full=True)
        start = int(ck["epoch"])
        saved = ck["extra"].get("history", {})
        history.update({k: list(v) for k, v in saved.items() if k in history})
        for cb, st in zip(callbacks, ck["extra"].get("callbacks", [])):
            if st is not None and hasattr(cb, "load_state_dict"):
                cb.load_state_dict(st)
        if ck["extra"].get("stopped"):
            return history
    backward = _backward_of(model)
    per_batch = scheduler is not None and getattr(scheduler, "_per_batch", False)
    if distributed:
        from . import distributed as dist
        from . import _generator
        dist.init()
        dist.broadcast_parameters(model)  # the same model and start on every rank
        r, P = dist.rank(), dist.world_size()
        progress = progress and r == 0
        has_buffers = bool(model.buffers())
        overlap = dist._overlap_for(model)  # None: reduce after the backward pass
    for epoch in range(start, int(epochs)):
        model.train()
        bar = _Progress(len(x), f"epoch {epoch + 1}/{epochs}", progress)
        t0 = time.perf_counter()
        total, correct, seen = 0.0, 0, 0
        if distributed:
            order = _generator().permutation(len(x)) if r == 0 else \
                np.empty(len(x), np.int64)
            dist._world().Bcast(order, root=0)
            steps = (order[i: i + batch_size] for i in range(0, len(x), int(batch_size)))
        else:
            steps = batches(x, y, batch_size, shuffle=True)
        for step in steps:
            if distributed:
                idx = step[dist.shard(len(step), r, P)]
                xb, yb = x[idx], y[idx]
                if has_buffers:
                    dist.broadcast_buffers(model)
            else:
                xb, yb = step
            optimizer.zero_grad()
            grad = None
            if len(xb):
                logits = model(xb)
                value = loss(logits, yb)
                grad = loss.backward()
                total += value * len(xb)
                correct += int((logits.argmax(axis=1) == yb).sum())
            if distributed and overlap is not None:
                overlap.backward(grad, weight=len(xb) / len(step))
            elif grad is not None:
                backward(grad)
            if distributed:
                if overlap is None:
                    dist.allreduce_gradients(model, weight=len(xb) / len(step))
                seen_now = len(step)
            else:
                seen_now = len(xb)
            optimizer.step()
            if per_batch:
                scheduler.step()
            seen += len(xb)
            bar.update(seen_now, loss=f"{total / max(seen, 1):.4f}",
                       acc=f"{correct / max(seen, 1):.4f}")
        if distributed:
            total, correct, seen = dist._allgather_sum([total, correct, seen])
            if has_buffers:
                dist.broadcast_buffers(model)
        seconds = time.perf_counter() - t0
        if distributed:  # the slowest rank's time: what the epoch took
            seconds = float(max(dist._world().allgather(seconds)))
        logs = {"loss": total / max(seen, 1), "accuracy": float(correct) / max(seen, 1),
                "seconds": seconds, "images_per_second": seen / max(seconds, 1e-12)}
        if val is not None:
            v = evaluate(model, *val, distributed=distributed)
            logs.update(val_loss=v["loss"], val_accuracy=v["accuracy"])
        bar.close(_summary(epoch, epochs, logs))
        for k, v in logs.items():
            history[k].append(v)
        _step_scheduler(scheduler, logs)
        stop = any([cb.on_epoch_end(epoch, logs) for cb in callbacks])
        if checkpoint is not None and (not distributed or r == 0):
            save_checkpoint(checkpoint, model, optimizer, scheduler, epoch=epoch + 1,
                            history=history, stopped=bool(stop),
                            callbacks=[cb.state_dict() if hasattr(cb, "state_dict") else None
                                       for cb in callbacks])
        if distributed and checkpoint is not None:
            dist.barrier()  # the checkpoint is complete before any rank goes on
        if stop:
            break
    return history
