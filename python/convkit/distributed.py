"""Data-parallel training across processes with MPI (``mpi4py``): start with
``mpiexec -n 4 python train.py``. Install with ``pip install "convkit[distributed]"`` (mpi4py and
the MPICH wheel, which brings ``mpiexec``); a system MPI works too.

- ``init()`` joins the MPI job; an uncaught exception on any rank then prints the rank and the
  error and aborts the whole job (``MPI_Abort``), so the other ranks stop instead of hanging.
- ``broadcast_parameters(model, root=0)`` checks that every rank built the same model (names,
  shapes, dtypes) and copies the root's parameters and buffers to every rank.
- ``allreduce_gradients(model)`` replaces each gradient by the average over ranks, summed in
  rank order so that every rank holds the same bits.
- ``training.fit(..., distributed=True)`` gives each rank its share of every global batch.

Batch norm keeps per-rank batch statistics during training, as PyTorch's
DistributedDataParallel does by default; the running statistics are rank 0's, copied to every
rank before each step and at the end (DDP's ``broadcast_buffers``).
"""
from __future__ import annotations

import os
import sys
import time
from typing import List, Optional, Sequence

import numpy as np

from . import _core

__all__ = ["init", "is_initialized", "rank", "world_size", "barrier", "broadcast_parameters",
           "broadcast_buffers", "allreduce_gradients", "shard"]

_comm = None


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError:
        raise ImportError("convkit.distributed needs mpi4py and an MPI library: "
                          "pip install \"convkit[distributed]\" (mpi4py and the mpich wheel, "
                          "which brings mpiexec)") from None
    return MPI


def init(threads: Optional[int] = None):
    """Joins the MPI job (``MPI.COMM_WORLD``) and returns ``(rank, world_size)``. Sets the
    kernels' thread count to the cores per rank on this machine unless ``threads`` or
    ``$OMP_NUM_THREADS`` says otherwise, and installs a hook that aborts the job when a rank
    dies of an uncaught exception (naming the rank). Rank 0 prints one line mapping ranks to
    process ids, so that mpiexec's report of a killed process ("PID n") names a rank too.
    Calling it again returns the same.

    >>> init()  # a single process is a job of one
    (0, 1)
    """
    global _comm
    MPI = _mpi()
    if _comm is None:
        _comm = MPI.COMM_WORLD
        local = _comm.Split_type(MPI.COMM_TYPE_SHARED)
        per_node = local.Get_size()
        local.Free()
        from . import set_num_threads
        if threads is not None:
            set_num_threads(int(threads))
        elif "OMP_NUM_THREADS" not in os.environ and per_node > 1:
            set_num_threads(max(1, (os.cpu_count() or 1) // per_node))
        if _comm.Get_size() > 1:
            _install_abort_hook()
            # one line that maps mpiexec's "BAD TERMINATION ... PID n" back to a rank
            import socket
            where = _comm.allgather((socket.gethostname(), os.getpid()))
            if _comm.Get_rank() == 0:
                sys.stderr.write("convkit.distributed: %d ranks: %s\n" % (
                    len(where), ", ".join(f"rank {r} = pid {pid} on {host}"
                                          for r, (host, pid) in enumerate(where))))
                sys.stderr.flush()
    return _comm.Get_rank(), _comm.Get_size()


def _install_abort_hook():
    previous = sys.excepthook

    def hook(kind, value, tb):
        r = _comm.Get_rank()
        try:
            sys.stderr.write(f"convkit.distributed: rank {r} of {_comm.Get_size()} failed with "
                             f"{kind.__name__}: {value}; aborting every rank\n")
            sys.stderr.flush()
            previous(kind, value, tb)
            sys.stderr.flush()
            # mpiexec forwards the ranks' output asynchronously and drops what it has not read
            # when the job aborts: the message was lost now and then (1 run in ~10) without this
            time.sleep(0.5)
        finally:
            _comm.Abort(1)

    sys.excepthook = hook


def is_initialized() -> bool:
    """Whether ``init()`` has run in this process.

    >>> isinstance(is_initialized(), bool)
    True
    """
    return _comm is not None


def _world():
    if _comm is None:
        raise RuntimeError("convkit.distributed: call distributed.init() first (and start the "
                           "script with mpiexec -n N)")
    return _comm


def rank() -> int:
    """This process's rank, 0 to world_size() - 1.

    >>> init(); rank()
    (0, 1)
    0
    """
    return _world().Get_rank()


def world_size() -> int:
    """The number of processes in the job.

    >>> init(); world_size()
    (0, 1)
    1
    """
    return _world().Get_size()


def barrier() -> None:
    """Waits until every rank has reached it.

    >>> init(); barrier()
    (0, 1)
    """
    _world().Barrier()


def _signature(model) -> List[str]:
    return [f"{n}:{tuple(np.shape(v))}:{np.asarray(v).dtype}" for n, v in
            list((n, p.data) for n, p in model.named_parameters()) + list(model.named_buffers())]


def broadcast_parameters(model, root: int = 0) -> None:
    """Copies the root rank's parameters and buffers into every rank's model, after checking
    that every rank built the same model: a rank whose parameter names, shapes or dtypes differ
    raises ``ValueError`` on every rank, naming it and the first difference.

    >>> from convkit import nn
    >>> init(); broadcast_parameters(nn.Linear(2, 2))
    (0, 1)
    """
    comm = _world()
    sigs = comm.allgather(_signature(model))
    for r, s in enumerate(sigs):
        if s != sigs[root]:
            diff = next((f"{a!r} on rank {root} but {b!r} on rank {r}" for a, b in
                         zip(sigs[root], s) if a != b),
                        f"{len(sigs[root])} entries on rank {root} but {len(s)} on rank {r}")
            raise ValueError(f"broadcast_parameters: rank {r} built a different model than rank "
                             f"{root}: {diff}")
    for p in model.parameters():
        comm.Bcast(p.data, root=root)
    broadcast_buffers(model, root)


def broadcast_buffers(model, root: int = 0) -> None:
    """Copies the root rank's buffers (batch-norm running statistics) into every rank's model.

    >>> from convkit import nn
    >>> init(); broadcast_buffers(nn.BatchNorm2d(2))
    (0, 1)
    """
    comm = _world()
    for b in model.buffers():
        comm.Bcast(b, root=root)


class _Flat:
    """One float32 buffer holding every gradient of a model (views keep the layout)."""

    def __init__(self, params, P):
        self.params = params
        sizes = [p.grad.size for p in params]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        n = int(self.offsets[-1])
        self.chunk = -(-n // P)  # each rank reduces one chunk
        self.buf = np.zeros(self.chunk * P, np.float32)
        self.recv = np.empty((P, self.chunk), np.float32)
        self.n = n


_flat_cache = {}


def allreduce_gradients(model, weight: Optional[float] = None) -> None:
    """Replaces every parameter's ``.grad`` by the average over ranks (or, with ``weight``, by
    the sum over ranks of ``weight * grad``, each rank giving its own weight). The sum runs in
    rank order on every rank (each rank reduces one slice of a flat buffer, received with an
    all-to-all, then all slices are gathered), so every rank ends with the same bits, whatever
    the MPI library's reduction order.

    >>> from convkit import nn
    >>> m = nn.Linear(2, 1); m.weight.grad[...] = 3.0
    >>> init(); allreduce_gradients(m); m.weight.grad
    (0, 1)
    array([[3., 3.]], dtype=float32)
    """
    comm = _world()
    P = comm.Get_size()
    params = model.parameters()
    if P == 1:  # a job of one: only the weight to apply
        if weight is not None and weight != 1.0:
            for p in params:
                p.grad *= np.float32(weight)
        return
    key = (id(model), P, tuple(p.grad.size for p in params))
    flat = _flat_cache.get(key)
    if flat is None or any(a is not b for a, b in zip(flat.params, params)):
        flat = _flat_cache[key] = _Flat(params, P)
    buf, off = flat.buf, flat.offsets
    for i, p in enumerate(params):
        buf[off[i]:off[i + 1]] = p.grad.ravel()
    if weight is None:
        w = np.float32(1.0 / P)
    else:
        w = np.float32(weight)
    buf[:flat.n] *= w
    comm.Alltoall(buf.reshape(P, flat.chunk), flat.recv)
    mine = flat.recv[0].copy()
    for r in range(1, P):  # rank order: the same bits on every rank
        mine += flat.recv[r]
    comm.Allgather(mine, buf.reshape(P, flat.chunk))
    for i, p in enumerate(params):
        p.grad[...] = buf[off[i]:off[i + 1]].reshape(p.grad.shape)


class _OverlappedReduce:
    """The all-reduce of allreduce_gradients, started bucket by bucket during the backward pass
    of a Sequential: once a layer's gradients are final, the buckets they complete are sent
    (non-blocking all-to-all) while the earlier layers' backward runs; finish() sums each
    rank's slice in rank order, gathers, and writes the gradients back. Each element is summed
    in the same order as allreduce_gradients, so the bits are the same."""

    def __init__(self, model, bucket_bytes):
        self.comm = _world()
        P = self.P = self.comm.Get_size()
        self.model, self.layers = model, list(model)
        # buckets in backward order: the last layer's parameters first
        order = [p for layer in reversed(self.layers) for p in reversed(layer.parameters())]
        self.buckets, cur, size = [], [], 0
        for p in order:
            cur.append(p)
            size += p.grad.nbytes
            if size >= bucket_bytes:
                self.buckets.append(cur)
                cur, size = [], 0
        if cur:
            self.buckets.append(cur)
        self.flats = [_Flat(b, P) for b in self.buckets]
        self.bucket_of = {id(p): i for i, b in enumerate(self.buckets) for p in b}
        self.pending = [len(b) for b in self.buckets]

    def backward(self, grad, weight):
        """Runs the layers' backward (the first without its input gradient), sending buckets
        as they complete, then finishes the reduction. grad None: this rank had no samples
        (its gradients are zero); it still takes part."""
        self.weight = np.float32(weight)
        self.pending = [len(b) for b in self.buckets]
        self.requests = [None] * len(self.buckets)
        layers = self.model.run_order()  # the order the last forward ran the layers in
        for i in range(len(layers) - 1, -1, -1):
            layer = layers[i]
            if grad is not None and i == 1:
                # the first two layers as Sequential.backward runs them (a Conv2d and the
                # MaxPool2d after it, in one call): the same bits; the first is then done too
                grad = _core.run_backward(layers[:2], grad, False)
            elif grad is not None:
                grad = layer.backward(grad, input_grad=i > 0)
            for p in layer.parameters():
                k = self.bucket_of[id(p)]
                self.pending[k] -= 1
                if self.pending[k] == 0:
                    self._send(k)
            for r in self.requests:  # let MPI move what has been posted
                if r is not None:
                    r.Test()
        self.finish()

    def _send(self, k):
        flat = self.flats[k]
        for i, p in enumerate(flat.params):
            flat.buf[flat.offsets[i]:flat.offsets[i + 1]] = p.grad.ravel()
        flat.buf[:flat.n] *= self.weight
        self.requests[k] = self.comm.Ialltoall(flat.buf.reshape(self.P, flat.chunk), flat.recv)

    def finish(self):
        from mpi4py import MPI
        gathers = []
        for k, flat in enumerate(self.flats):
            if self.requests[k] is None:  # a layer never reached (not expected)
                self._send(k)
            self.requests[k].Wait()
            mine = flat.recv[0].copy()
            for r in range(1, self.P):  # rank order: the same bits on every rank
                mine += flat.recv[r]
            gathers.append(self.comm.Iallgather(mine, flat.buf.reshape(self.P, flat.chunk)))
        MPI.Request.Waitall(gathers)
        for flat in self.flats:
            for i, p in enumerate(flat.params):
                p.grad[...] = flat.buf[flat.offsets[i]:flat.offsets[i + 1]].reshape(
                    p.grad.shape)


#: With OVERLAP on, fit(distributed=True) overlaps the gradient all-reduce with the backward
#: pass of a Sequential model (buckets of about BUCKET_BYTES, sent as soon as their layers are
#: done; the same bits either way). Off by default: on one machine, where MPI copies through
#: shared memory with the same cores that compute, it measured no faster (bench/RESULTS.md);
#: across machines, with a network doing the transfer, it is the one to try.
OVERLAP = False
BUCKET_BYTES = 1 << 16


def _overlap_for(model):
    """The overlapped reducer for model, or None where fit reduces after the backward pass:
    one rank, overlap off, or a model that is not a Sequential of layers taking input_grad."""
    from .nn import Sequential
    if not OVERLAP or world_size() == 1 or not isinstance(model, Sequential):
        return None
    import inspect
    for layer in model:
        try:
            if "input_grad" not in inspect.signature(layer.backward).parameters:
                return None
        except (TypeError, ValueError):
            return None
    return _OverlappedReduce(model, BUCKET_BYTES)


def shard(n: int, r: Optional[int] = None, P: Optional[int] = None) -> slice:
    """The slice of n items that rank r takes when n is split as evenly as possible over P
    ranks in rank order (sizes differ by at most one, the first n % P ranks take one more).

    >>> [shard(10, r, 3) for r in range(3)]
    [slice(0, 4, None), slice(4, 7, None), slice(7, 10, None)]
    """
    if r is None:
        r = rank()
    if P is None:
        P = world_size()
    base, extra = divmod(int(n), int(P))
    start = r * base + min(r, extra)
    return slice(start, start + base + (1 if r < extra else 0))


def _allgather_sum(values: Sequence[float]) -> list:
    """Element-wise sum over ranks of a few numbers (added in float64, in rank order), as plain
    Python numbers: ints where the value given was an integer, floats otherwise."""
    parts = _world().allgather(np.asarray(values, np.float64))
    total = parts[0].copy()
    for p in parts[1:]:
        total += p
    return [int(t) if isinstance(v, (int, np.integer)) else float(t)
            for v, t in zip(values, total)]
