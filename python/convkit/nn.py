"""Layers with explicit forward and backward (no autograd graph).

A layer's ``__init__`` makes its parameters, ``forward`` calls ``convkit.functional`` and caches
what the backward needs, and ``backward(grad_out)`` returns the gradient of the input while adding
(``+=``) the parameter gradients into each ``Parameter.grad``.
"""
from __future__ import annotations

import math
import os
import sys
import tempfile
import warnings
from typing import Any, Iterator, List, Mapping, NamedTuple, Optional, Tuple, Union
from collections import OrderedDict

import numpy as np

from . import _core, functional as F

IntPair = Union[int, Tuple[int, int]]

__all__ = [
    "Parameter", "Module", "Conv2d", "ConvTranspose2d", "MaxPool2d", "AvgPool2d", "MaxUnpool2d",
    "AdaptiveAvgPool2d", "AdaptiveMaxPool2d", "BatchNorm2d", "BatchNorm1d", "Identity",
    "Residual", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "ELU", "Softmax", "LogSoftmax", "Upsample",
    "Flatten", "Linear", "Dropout", "Sequential", "CrossEntropyLoss", "MSELoss",
    "BCEWithLogitsLoss", "summary",
]


_F32 = np.dtype(np.float32)


def _f32(a) -> np.ndarray:
    if type(a) is np.ndarray and a.dtype is _F32 and a.flags.c_contiguous:
        return a  # the common case, in a few hundred nanoseconds
    a = F._as_array(a)
    if getattr(a, "dtype", None) == np.uint8:
        warnings.warn("convkit: a uint8 batch is used as is (values 0-255); images usually "
                      "want scaling first, e.g. x.astype(np.float32) / 255", stacklevel=3)
    return np.ascontiguousarray(a, dtype=np.float32)


class Parameter:
    """A trainable array ``data`` and its gradient ``grad`` (float32, same shape).

    >>> p = Parameter(np.zeros((2, 3))); p.shape, p.grad.dtype
    ((2, 3), dtype('float32'))
    """

    __slots__ = ("data", "grad")

    def __init__(self, data):
        self.data = np.array(data, dtype=np.float32, order="C", copy=True)
        self.grad = np.zeros_like(self.data)

    @property
    def shape(self):
        return self.data.shape

    def __repr__(self):
        return f"Parameter(shape={self.data.shape})"


def _state_array(v, name, dtype=np.float32) -> np.ndarray:
    """A state entry as an array of `dtype` (PyTorch tensors detached, on the CPU)."""
    if hasattr(v, "detach") and hasattr(v, "cpu"):
        v = v.detach().cpu()
    try:
        a = _core.as_array(v, "load_state_dict", name)
    except Exception as e:
        raise TypeError(f"load_state_dict: entry {name!r} is not an array ({e})") from None
    if a.dtype.kind not in "biuf":
        raise TypeError(f"load_state_dict: entry {name!r} expected numeric data, but got dtype "
                        f"{a.dtype}")
    return a.astype(dtype)


def _write_atomic(path: str, write) -> None:
    """write(f) into a temporary file next to path, fsync, rename over path, fsync the folder:
    a crash at any moment leaves either the old file or the new one, never a torn one."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".convkit-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def _savez_atomic(path: str, arrays) -> None:
    """np.savez(path, **arrays), atomically (see _write_atomic)."""
    _write_atomic(path, lambda f: np.savez(f, **arrays))


def _uniform(shape, bound):
    from . import _generator
    return _generator().uniform(-bound, bound, size=shape).astype(np.float32)


class Module:
    """Base class of layers and models: parameters and sub-modules are found from the
    attributes, in definition order. ``model(x)`` runs ``forward``; ``backward(grad_out)``
    returns the input's gradient and adds (``+=``) into each parameter's ``.grad``.

    >>> class Scale(Module):
    ...     def __init__(self): self.w = Parameter(np.ones(1))
    ...     def forward(self, x: np.ndarray) -> np.ndarray: self._x = x; return x * self.w.data
    ...     def backward(self, grad_out, input_grad=True):
    ...         self.w.grad += (grad_out * self._x).sum(); return grad_out * self.w.data
    >>> m = Scale(); m(np.ones(3)); m.backward(np.ones(3)); m.w.grad
    array([1., 1., 1.])
    array([1., 1., 1.])
    array([3.], dtype=float32)
    """

    training = True

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__}.forward is not implemented")

    def backward(self, grad_out: np.ndarray, input_grad: bool = True) -> Optional[np.ndarray]:
        """Gradient of the input for ``grad_out`` (the gradient of the output), accumulating
        (``+=``) into each parameter's ``.grad``. With ``input_grad=False`` a layer may skip the
        input gradient and return None (the first layer of a network needs none)."""
        raise NotImplementedError(f"{type(self).__name__}.backward is not implemented")

    def _cached(self, value):
        """The input saved by forward; a clear error when backward comes first."""
        if value is None:
            raise RuntimeError(f"{type(self).__name__}.backward: no input saved; call the layer "
                               f"(forward) on a batch before backward")
        return value

    # -- parameters, buffers and sub-modules (PyTorch's order: a module's own parameters and
    #    buffers, in definition order, then each child's) -------------------------------------
    _buffers: Tuple[str, ...] = ()  # names of non-trainable state arrays (None when absent)

    def named_parameters(self, prefix: str = "") -> Iterator[Tuple[str, "Parameter"]]:
        for name, v in self.__dict__.items():
            if isinstance(v, Parameter):
                yield prefix + name, v
        for name, c in self.named_children():
            yield from c.named_parameters(prefix + name + ".")

    def parameters(self) -> List["Parameter"]:
        return [p for _, p in self.named_parameters()]

    def named_buffers(self, prefix: str = "") -> Iterator[Tuple[str, np.ndarray]]:
        """Non-trainable state (e.g. batch norm's running statistics), PyTorch's names."""
        for name in self._buffers:
            v = getattr(self, name, None)
            if v is not None:
                yield prefix + name, v
        for name, c in self.named_children():
            yield from c.named_buffers(prefix + name + ".")

    def buffers(self) -> List[np.ndarray]:
        return [b for _, b in self.named_buffers()]

    def named_children(self) -> Iterator[Tuple[str, "Module"]]:
        for name, v in self.__dict__.items():
            if isinstance(v, Module):
                yield name, v

    def children(self) -> List["Module"]:
        return [c for _, c in self.named_children()]

    def named_modules(self, prefix: str = "") -> Iterator[Tuple[str, "Module"]]:
        """This module (named ``prefix``) and every sub-module below it, depth first, each once.

        >>> [n for n, _ in Sequential(Linear(2, 2), Sequential(ReLU())).named_modules()]
        ['', '0', '1', '1.0']
        """
        seen = set()

        def walk(m, name):
            if id(m) in seen:
                return
            seen.add(id(m))
            yield name, m
            for n, c in m.named_children():
                yield from walk(c, f"{name}.{n}" if name else n)

        yield from walk(self, prefix)

    def modules(self) -> Iterator["Module"]:
        for _, m in self.named_modules():
            yield m

    def add_module(self, name: str, module: Optional["Module"]) -> None:
        """Adds ``module`` as the child ``name`` (PyTorch's ``add_module``): the same as
        ``setattr(self, name, module)``, with the name checked.

        >>> m = Sequential(); m.add_module("fc", Linear(2, 3)); [n for n, _ in m.named_children()]
        ['fc']
        """
        if not isinstance(module, Module) and module is not None:
            raise TypeError(f"add_module: {type(module).__name__} is not a Module")
        _check_child_name(self, name, "add_module")
        setattr(self, name, module)

    register_module = add_module

    def get_submodule(self, target: str) -> "Module":
        """The sub-module at the dotted path ``target`` ("" is this module), as PyTorch's.

        >>> type(Sequential(Sequential(ReLU())).get_submodule("0.0")).__name__
        'ReLU'
        """
        m = self
        for item in target.split(".") if target else []:
            if not hasattr(m, item):
                raise AttributeError(f"{type(m).__name__} has no attribute `{item}`")
            m = getattr(m, item)
            if not isinstance(m, Module):
                raise AttributeError(f"`{item}` is not a Module")
        return m

    def apply(self, fn) -> "Module":
        """Calls ``fn`` on every sub-module (children first, each subtree depth first) and then
        on this module, as PyTorch's ``apply`` (e.g. to initialise weights); returns self.

        >>> names = []; _ = Sequential(Linear(2, 2), ReLU()).apply(lambda m: names.append(
        ...     type(m).__name__)); names
        ['Linear', 'ReLU', 'Sequential']
        """
        for c in self.children():
            c.apply(fn)
        fn(self)
        return self

    def zero_grad(self, set_to_none: bool = False) -> None:
        """Zeroes every parameter's ``.grad`` (convkit keeps it an array of zeros whatever
        ``set_to_none`` says, so that backward can add into it)."""
        for p in self.parameters():
            p.grad.fill(0.0)

    def train(self, mode: bool = True) -> "Module":
        self.training = bool(mode)
        for c in self.children():
            c.train(mode)
        return self

    def eval(self) -> "Module":
        return self.train(False)

    # -- state ---------------------------------------------------------------------------------
    def _state_items(self, prefix=""):
        """(name, owner, attribute, kind) of every state entry in PyTorch's state_dict order."""
        for name, v in self.__dict__.items():
            if isinstance(v, Parameter):
                yield prefix + name, self, name, "parameter"
        for name in self._buffers:
            if getattr(self, name, None) is not None:
                yield prefix + name, self, name, "buffer"
        for name, c in self.named_children():
            yield from c._state_items(prefix + name + ".")

    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Parameters and buffers by name (copies), in PyTorch's order."""
        out = OrderedDict()
        for n, owner, attr, kind in self._state_items():
            v = getattr(owner, attr)
            out[n] = (v.data if kind == "parameter" else v).copy()
        return out

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True) -> "IncompatibleKeys":
        """Copies arrays into the parameters and buffers, all or nothing: a missing,
        unexpected, misshapen or non-numeric entry raises and leaves every array as it was.
        With ``strict=False`` (PyTorch's) missing and unexpected names are allowed: the entries
        present are loaded, the others left as they are (a shape mismatch still raises).
        Returns PyTorch's ``(missing_keys, unexpected_keys)``. Values may be NumPy arrays,
        anything with ``__array__``, or PyTorch tensors (also with ``requires_grad``).

        >>> m = Linear(3, 2); m.load_state_dict(Linear(3, 2).state_dict())
        <All keys matched successfully>
        >>> m.load_state_dict({"weight": np.zeros((2, 3))}, strict=False)
        IncompatibleKeys(missing_keys=['bias'], unexpected_keys=[])
        """
        if not isinstance(state, Mapping):
            raise TypeError(f"load_state_dict: expected a mapping of names to arrays (a "
                            f"state_dict), but got {type(state).__name__}")
        own = OrderedDict((n, (o, a, k)) for n, o, a, k in self._state_items())
        missing = [n for n in own if n not in state]
        unexpected = [n for n in state if n not in own]
        if (missing or unexpected) and strict:
            parts = []
            if missing:
                parts.append(f"missing {', '.join(repr(n) for n in missing)}")
            if unexpected:
                parts.append(f"unexpected {', '.join(repr(n) for n in unexpected)}")
            raise ValueError(f"load_state_dict: the state does not match {type(self).__name__}: "
                             + "; ".join(parts))
        own = OrderedDict((n, v) for n, v in own.items() if n in state)
        new = {}
        for n, (o, a, kind) in own.items():  # check and convert everything before changing
            cur = getattr(o, a)
            cur = cur.data if kind == "parameter" else cur
            v = _state_array(state[n], n, cur.dtype)
            if v.shape != cur.shape:
                raise ValueError(f"load_state_dict: {kind} {n!r} has shape {cur.shape} in the "
                                 f"model, but {v.shape} in the state")
            new[n] = v
        for n, (o, a, kind) in own.items():
            cur = getattr(o, a)
            (cur.data if kind == "parameter" else cur)[...] = new[n]
        return IncompatibleKeys(missing, unexpected)

    def save(self, path: Union[str, os.PathLike]) -> None:
        """Writes the state_dict (parameters and buffers) to an .npz file (``.npz`` is appended when missing), atomically:
        a crash while writing leaves any earlier file at ``path`` intact."""
        path = str(path)
        if not path.endswith(".npz"):
            path += ".npz"
        _savez_atomic(path, self.state_dict())

    def load(self, path: Union[str, os.PathLike]) -> "Module":
        """Reads parameters written by ``save()`` (an ``.npz``) or, when PyTorch is installed, a
        state_dict written by ``torch.save``; names and shapes must match, all or nothing."""
        import zipfile
        path = str(path)
        if not os.path.exists(path) and os.path.exists(path + ".npz"):
            path += ".npz"  # np.savez appends the suffix when it is missing
        if not os.path.exists(path):
            raise FileNotFoundError(f"{type(self).__name__}.load: no file {path!r}")
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
            if any(n.endswith("data.pkl") for n in names):  # torch.save's zip format
                return self._load_torch(path)
        try:
            with np.load(path) as f:
                state = {k: f[k] for k in f.files}
        except Exception as e:
            raise ValueError(f"{type(self).__name__}.load: {path!r} is not a readable .npz file "
                             f"({type(e).__name__}: {e})") from None
        self.load_state_dict(state)
        return self

    def _load_torch(self, path):
        try:
            import torch
        except ImportError:
            raise ValueError(f"{type(self).__name__}.load: {path!r} was written by torch.save; "
                             f"install PyTorch to read it (pip install torch), or save it as "
                             f"NumPy arrays: np.savez(path, **{{k: v.numpy() for k, v in "
                             f"state_dict.items()}})") from None
        state = torch.load(path, map_location="cpu", weights_only=True)
        if hasattr(state, "state_dict") and not isinstance(state, dict):
            state = state.state_dict()
        if not isinstance(state, dict):
            raise ValueError(f"{type(self).__name__}.load: {path!r} holds a "
                             f"{type(state).__name__}, not a state_dict")
        self.load_state_dict(state)
        return self

    # -- repr ----------------------------------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def __repr__(self):
        kids = list(self.named_children())
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not kids:
            return head + ")"
        lines = [head]
        for n, v in kids:
            sub = repr(v).replace("\n", "\n  ")
            lines.append(f"  ({n}): {sub}")
        return "\n".join(lines) + "\n)"


class IncompatibleKeys(NamedTuple):
    """What ``Module.load_state_dict`` returns (PyTorch's): the model's names the state lacked
    and the state's names the model lacks (both empty unless ``strict=False``)."""

    missing_keys: List[str]
    unexpected_keys: List[str]

    def __repr__(self):
        if not self.missing_keys and not self.unexpected_keys:
            return "<All keys matched successfully>"
        return (f"IncompatibleKeys(missing_keys={self.missing_keys!r}, "
                f"unexpected_keys={self.unexpected_keys!r})")


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _check_child_name(owner, name, fn):
    """A sub-module name PyTorch would take, or the error PyTorch gives."""
    if not isinstance(name, str):
        raise TypeError(f"{fn}: module name should be a str, but got {type(name).__name__}")
    if not name or "." in name:
        raise KeyError(f"{fn}: module name can't be empty or contain \".\", got: {name!r}")
    if hasattr(type(owner), name) or (name in owner.__dict__ and
                                      not isinstance(owner.__dict__[name], (Module, type(None)))):
        raise KeyError(f"{fn}: attribute {name!r} already exists")


def _check_conv_channels(layer, in_channels, out_channels, kh, kw, groups):
    """A convolution layer's channel, kernel and group arguments, or a ValueError."""
    for name, v in (("in_channels", in_channels), ("out_channels", out_channels),
                    ("kernel_size", kh), ("kernel_size", kw), ("groups", groups)):
        if int(v) < 1:
            raise ValueError(f"{layer}: expected {name} >= 1, but got {v}")
    if in_channels % groups or out_channels % groups:
        raise ValueError(f"{layer}: in_channels ({in_channels}) and out_channels "
                         f"({out_channels}) must be divisible by groups ({groups})")


class Conv2d(Module):
    """2-D convolution layer (PyTorch's ``nn.Conv2d``): x (N, C_in, H, W) or (C_in, H, W) ->
    (N, C_out, P, Q). weight (C_out, C_in / groups, kH, kW), bias (C_out,); both initialised
    uniform in +-1/sqrt(C_in / groups * kH * kW). See ``functional.conv2d`` for the arguments.

    >>> conv = Conv2d(3, 16, 3, padding=1)
    >>> conv(np.zeros((2, 3, 32, 32), np.float32)).shape
    (2, 16, 32, 32)
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntPair,
                 stride: IntPair = 1, padding: Union[IntPair, str] = 0, dilation: IntPair = 1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros"):
        kh, kw = _pair(kernel_size)
        _check_conv_channels("Conv2d", in_channels, out_channels, kh, kw, groups)
        if padding_mode not in F._PADDING_MODES:
            raise ValueError(f"Conv2d: expected padding_mode to be one of {F._PADDING_MODES}, "
                             f"but got {padding_mode!r}")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size, self.stride = (kh, kw), _pair(stride)
        self.padding = padding if isinstance(padding, str) else _pair(padding)
        self.dilation, self.groups, self.padding_mode = _pair(dilation), int(groups), padding_mode
        bound = 1.0 / math.sqrt(in_channels // groups * kh * kw)
        self.weight = Parameter(_uniform((out_channels, in_channels // groups, kh, kw), bound))
        self.bias = Parameter(_uniform((out_channels,), bound)) if bias else None
        self._x = None

    def _kw(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    groups=self.groups, padding_mode=self.padding_mode)

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self._forward(x, False)

    def _plain(self, x: np.ndarray) -> bool:
        """Whether the core's conv2d takes this call's arguments as they are (a batch, zero
        padding given as numbers; checked at __init__)."""
        return (x.ndim == 4 and self.padding_mode == "zeros" and type(self.padding) is tuple
                and type(self.stride) is tuple and type(self.dilation) is tuple)

    def _forward(self, x: np.ndarray, relu: bool) -> np.ndarray:
        """forward and, when ``relu``, the ReLU after it in the same core call (Sequential)."""
        self._x = x = _f32(x)
        b = None if self.bias is None else self.bias.data
        if self._plain(x):
            return _core.conv2d(x, self.weight.data, b, *self.stride, *self.padding,
                                *self.dilation, self.groups, relu)
        y = F.conv2d(x, self.weight.data, b, **self._kw())
        return _core.activation(F._RELU, y, 0.0) if relu else y

    def backward(self, grad_out: np.ndarray, input_grad: bool = True) -> Optional[np.ndarray]:
        b = None if self.bias is None else self.bias.data
        dx, dw, db = F.conv2d_backward(grad_out, self._cached(self._x), self.weight.data, b,
                                       input_grad=input_grad, **self._kw())
        self.weight.grad += dw
        if self.bias is not None:
            self.bias.grad += db
        return dx

    def extra_repr(self):
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}, padding={self.padding!r}")
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode!r}"
        return s + f", bias={self.bias is not None}"


class ConvTranspose2d(Module):
    """Transposed 2-D convolution layer (PyTorch's ``nn.ConvTranspose2d``): x (N, C_in, H, W)
    -> (N, C_out, Ho, Wo), Ho = (H - 1)*stride - 2*padding + dilation*(kH - 1) + output_padding
    + 1. weight (C_in, C_out / groups, kH, kW), bias (C_out,).

    ``up(x, output_size=(Ho, Wo))`` picks the output padding that gives that size (PyTorch's
    rule: from the smallest size up to stride - 1 more; N and C may lead the tuple), for that
    call and its backward.

    >>> up = ConvTranspose2d(16, 8, 4, stride=2, padding=1)
    >>> up(np.zeros((1, 16, 7, 7), np.float32)).shape
    (1, 8, 14, 14)
    >>> up(np.zeros((1, 16, 7, 7), np.float32), output_size=(15, 15)).shape
    (1, 8, 15, 15)
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntPair,
                 stride: IntPair = 1, padding: IntPair = 0, output_padding: IntPair = 0,
                 groups: int = 1, bias: bool = True, dilation: IntPair = 1):
        kh, kw = _pair(kernel_size)
        _check_conv_channels("ConvTranspose2d", in_channels, out_channels, kh, kw, groups)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size, self.stride, self.padding = (kh, kw), _pair(stride), _pair(padding)
        self.output_padding, self.groups = _pair(output_padding), int(groups)
        self.dilation = _pair(dilation)
        bound = 1.0 / math.sqrt(out_channels // groups * kh * kw)
        self.weight = Parameter(_uniform((in_channels, out_channels // groups, kh, kw), bound))
        self.bias = Parameter(_uniform((out_channels,), bound)) if bias else None
        self._x = None
        self._op = None  # the output padding of the last forward

    def _kw(self, output_padding=None):
        return dict(stride=self.stride, padding=self.padding,
                    output_padding=self.output_padding if output_padding is None
                    else output_padding, groups=self.groups, dilation=self.dilation)

    def _output_padding(self, x, output_size):
        """The output padding that gives output_size (PyTorch's ConvTranspose2d rule)."""
        if output_size is None:
            return self.output_padding
        lead = x.ndim - 2  # N and C, or C alone
        size = tuple(int(v) for v in output_size)
        if len(size) == lead + 2:
            size = size[lead:]
        if len(size) != 2:
            raise ValueError(f"ConvTranspose2d: for {x.ndim}D input, output_size must have 2 or "
                             f"{lead + 2} elements (got {len(size)})")
        lo = [(x.shape[lead + d] - 1) * self.stride[d] - 2 * self.padding[d] +
              self.dilation[d] * (self.kernel_size[d] - 1) + 1 for d in range(2)]
        hi = [lo[d] + self.stride[d] - 1 for d in range(2)]
        if any(not lo[d] <= size[d] <= hi[d] for d in range(2)):
            raise ValueError(f"ConvTranspose2d: requested an output size of {size}, but valid "
                             f"sizes range from {tuple(lo)} to {tuple(hi)} (for an input of "
                             f"{tuple(x.shape[lead:])})")
        return (size[0] - lo[0], size[1] - lo[1])

    def forward(self, x: np.ndarray, output_size=None) -> np.ndarray:
        x = _f32(x)
        op = self._output_padding(x, output_size)
        self._x, self._op = x, op
        b = None if self.bias is None else self.bias.data
        return F.conv_transpose2d(x, self.weight.data, b, **self._kw(op))

    def backward(self, grad_out: np.ndarray, input_grad: bool = True) -> Optional[np.ndarray]:
        b = None if self.bias is None else self.bias.data
        dx, dw, db = F.conv_transpose2d_backward(grad_out, self._cached(self._x), self.weight.data,
                                                 b, input_grad=input_grad, **self._kw(self._op))
        self.weight.grad += dw
        if self.bias is not None:
            self.bias.grad += db
        return dx

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, "
                f"output_padding={self.output_padding}, groups={self.groups}, "
                f"dilation={self.dilation}, bias={self.bias is not None}")


class MaxPool2d(Module):
    """Max pooling layer (PyTorch's ``nn.MaxPool2d``, see ``functional.max_pool2d``):
    (N, C, H, W) or (C, H, W) -> (N, C, P, Q). With ``return_indices`` the call returns
    ``(y, indices)`` (for ``MaxUnpool2d``).

    >>> MaxPool2d(2)(np.zeros((1, 6, 28, 28), np.float32)).shape
    (1, 6, 14, 14)
    >>> MaxPool2d(3, 2, ceil_mode=True)(np.zeros((1, 1, 8, 8), np.float32)).shape
    (1, 1, 4, 4)
    """

    def __init__(self, kernel_size: IntPair, stride: Optional[IntPair] = None,
                 padding: IntPair = 0, dilation: IntPair = 1, return_indices: bool = False,
                 ceil_mode: bool = False):
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.dilation, self.return_indices, self.ceil_mode = dilation, return_indices, ceil_mode
        self._x = None

    def _kw(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    ceil_mode=self.ceil_mode)

    def forward(self, x: np.ndarray):
        return self._forward(x, False)

    def _forward(self, x: np.ndarray, relu: bool):
        """forward and, when ``relu``, the ReLU after it in the same core call (Sequential runs
        a ReLU written before the pool after it)."""
        self._x = x = _f32(x)
        k, st, pd, dl = self.kernel_size, self.stride, self.padding, self.dilation
        if (x.ndim == 4 and type(k) is int and type(pd) is int and type(dl) is int
                and (st is None or type(st) is int) and not self.return_indices):
            st = k if st is None else st  # the core checks the values
            return _core.max_pool2d(x, k, k, st, st, pd, pd, dl, dl, bool(self.ceil_mode), False,
                                    relu)
        y = F.max_pool2d(x, self.kernel_size, return_indices=self.return_indices, **self._kw())
        return _core.activation(F._RELU, y, 0.0) if relu else y

    def backward(self, grad_out: np.ndarray, input_grad: bool = True) -> Optional[np.ndarray]:
        return F.max_pool2d_backward(grad_out, self._cached(self._x), self.kernel_size,
                                     **self._kw())

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class AvgPool2d(Module):
    """Average pooling layer (PyTorch's ``nn.AvgPool2d``, see ``functional.avg_pool2d``):
    (N, C, H, W) or (C, H, W) -> (N, C, P, Q).

    >>> AvgPool2d(2, stride=1)(np.ones((1, 1, 3, 3), np.float32))[0, 0]
    array([[1., 1.],
           [1., 1.]], dtype=float32)
    """

    def __init__(self, kernel_size: IntPair, stride: Optional[IntPair] = None,
                 padding: IntPair = 0, ceil_mode: bool = False, count_include_pad: bool = True,
                 divisor_override: Optional[int] = None):
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.ceil_mode, self.count_include_pad = ceil_mode, count_include_pad
        self.divisor_override = divisor_override
        self._x = None

    def _kw(self):
        return dict(stride=self.stride, padding=self.padding, ceil_mode=self.ceil_mode,
                    count_include_pad=self.count_include_pad,
                    divisor_override=self.divisor_override)

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._x = x = _f32(x)
        return F.avg_pool2d(x, self.kernel_size, **self._kw())

    def backward(self, grad_out: np.ndarray, input_grad: bool = True) -> Optional[np.ndarray]:
        return F.avg_pool2d_backward(grad_out, self._cached(self._x), self.kernel_size,
                                     **self._kw())

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxUnpool2d(Module):
    """The partial inverse of ``MaxPool2d(..., return_indices=True)``:
    ``unpool(y, indices, output_size=None)`` (see ``functional.max_unpool2d``); ``backward``
    returns the gradient of y.

    >>> pool, unpool = MaxPool2d(2, return_indices=True), MaxUnpool2d(2)
    >>> unpool(*pool(np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4))).shape
    (1, 1, 4, 4)
    """

    def __init__(self, kernel_size: IntPair, stride: Optional[IntPair] = None,
                 padding: IntPair = 0):
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self._saved = None

    def forward(self, x: np.ndarray, indices=None, output_size=None) -> np.ndarray:
        if indices is None:
            raise TypeError("MaxUnpool2d: call it as unpool(x, indices), with the indices from "
                            "MaxPool2d(..., return_indices=True)")
        x = _f32(x)
        self._saved = (x, indices, output_size)
        return F.max_unpool2d(x, indices, self.kernel_size, self.stride, self.padding,
                              output_size)

    def backward(self, grad_out: np.ndarray, input_grad: bool = True) -> Optional[np.ndarray]:
        x, indices, output_size = self._cached(self._saved)
        return F.max_unpool2d_backward(grad_out, x, indices, self.kernel_size, self.stride,
                                       self.padding, output_size)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AdaptiveAvgPool2d(Module):
    """Adaptive average pooling to a fixed ``output_size`` (``functional.adaptive_avg_pool2d``);
    ``AdaptiveAvgPool2d(1)`` is global average pooling.

    >>> AdaptiveAvgPool2d(1)(np.ones((2, 64, 8, 8), np.float32)).shape
    (2, 64, 1, 1)
    """

    def __init__(self, output_size):
        self.output_size = output_size
        self._x = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._x = x = _f32(x)
        return F.adaptive_avg_pool2d(x, self.output_size)

    def backward(self, grad_out: np.ndarray, input_grad: bool = True) -> Optional[np.ndarray]:
        return F.adaptive_avg_pool2d_backward(grad_out, self._cached(self._x), self.output_size)

    def extra_repr(self):
        return f"output_size={self.output_size}"


class AdaptiveMaxPool2d(Module):
    """Adaptive max pooling to a fixed ``output_size`` (``functional.adaptive_max_pool2d``).

    >>> AdaptiveMaxPool2d((2, 1))(np.ones((2, 3, 7, 5), np.float32)).shape
    (2, 3, 2, 1)
    """

    def __init__(self, output_size, return_indices: bool = False):
        self.output_size, self.return_indices = output_size, return_indices
        self._x = None

    def forward(self, x: np.ndarray):
        self._x = x = _f32(x)
        return F.adaptive_max_pool2d(x, self.output_size, self.return_indices)

    def backward(self, grad_out: np.ndarray, input_grad: bool = True) -> Optional[np.ndarray]:
        return F.adaptive_max_pool2d_backward(grad_out, self._cached(self._x), self.output_size)

    def extra_repr(self):
        return f"output_size={self.output_size}"


class _BatchNorm(Module):
    _ndims: Tuple[int, ...] = ()
    _buffers = ("running_mean", "running_var", "num_batches_tracked")

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1,
                 affine: bool = True, track_running_stats: bool = True):
        name = type(self).__name__
        if int(num_features) < 1:
            raise ValueError(f"{name}: expected num_features >= 1, but got {num_features}")
        self.num_features, self.eps, self.momentum = int(num_features), float(eps), momentum
        self.affine, self.track_running_stats = bool(affine), bool(track_running_stats)
        C = self.num_features
        self.weight = Parameter(np.ones(C, np.float32)) if affine else None
        self.bias = Parameter(np.zeros(C, np.float32)) if affine else None
        if track_running_stats:
            self.running_mean = np.zeros(C, np.float32)
            self.running_var = np.ones(C, np.float32)
            self.num_batches_tracked = np.zeros((), np.int64)
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None
        self._saved = None

    def _check(self, x):
        name = type(self).__name__
        if x.ndim not in self._ndims:
            want = " or ".join(f"{d}D" for d in self._ndims)
            raise ValueError(f"{name}: expected {want} input, but got {x.ndim}D input of shape "
                             f"{x.shape}")
        if x.shape[1] != self.num_features:
            raise ValueError(f"{name}: expected {self.num_features} channels in dimension 1, but "
                             f"got input of shape {x.shape}")

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self._forward(x, False)

    def _forward(self, x: np.ndarray, relu: bool, add: Optional[np.ndarray] = None) -> np.ndarray:
        """forward, then y + add (a residual sum; float32, x's shape) and max(y, 0) when
        ``relu``, on each sample while it is in cache: Sequential and Residual run a batch norm
        followed by the sum and a ReLU so, in one pass over memory (the same bits)."""
        x = _f32(x)
        self._check(x)
        batch_stats = self.training or not self.track_running_stats
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked += 1
            if self.momentum is None:  # cumulative moving average, as PyTorch
                momentum = 1.0 / float(self.num_batches_tracked)
        rm, rv = self.running_mean, self.running_var
        if batch_stats and not self.training:
            rm = rv = None  # no running statistics to update outside training
        w = None if self.weight is None else self.weight.data
        b = None if self.bias is None else self.bias.data
        fn = type(self).__name__
        y = _core.batch_norm(x, rm, rv, w, b, batch_stats, F._float(momentum, fn, "momentum"),
                             F._float(self.eps, fn, "eps"), relu, add)
        # the backward needs the statistics the forward used: the batch's (recomputed from x)
        # or copies of the running ones
        self._saved = (x, batch_stats, None if batch_stats else (rm.copy(), rv.copy()))
        return y

    def backward(self, grad_out: np.ndarray, input_grad: bool = True) -> Optional[np.ndarray]:
        x, batch_stats, running = self._cached(self._saved)
        if type(x) is _ConvOutput:  # the input a fused forward (_ConvBn) did not keep
            x = x.compute()
        rm, rv = running if running is not None else (None, None)
        w = None if self.weight is None else self.weight.data
        b = None if self.bias is None else self.bias.data
        dx, dw, db = F.batch_norm_backward(grad_out, x, rm, rv, w, b, batch_stats,
                                           eps=self.eps, input_grad=input_grad)
        if self.weight is not None:
            self.weight.grad += dw
            self.bias.grad += db
        return dx

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")


class BatchNorm2d(_BatchNorm):
    """Batch normalisation over (N, C, H, W) (PyTorch's ``nn.BatchNorm2d``): training mode
    normalises with the batch's statistics and updates ``running_mean`` / ``running_var``
    (``momentum=None``: a cumulative average); ``eval()`` uses the running statistics. The
    buffers are in ``state_dict()`` under PyTorch's names, not in ``parameters()``.

    >>> bn = BatchNorm2d(16); y = bn(np.ones((2, 16, 4, 4), np.float32)); list(bn.state_dict())
    ['weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked']
    """

    _ndims = (4,)


class BatchNorm1d(_BatchNorm):
    """Batch normalisation over (N, C) or (N, C, L) (PyTorch's ``nn.BatchNorm1d``); as
    ``BatchNorm2d`` otherwise.

    >>> BatchNorm1d(3)(np.array([[1, 2, 3], [3, 2, 1]], np.float32))[0]
    array([-0.999995,  0.      ,  0.999995], dtype=float32)
    """

    _ndims = (2, 3)


class Identity(Module):
    """Returns its input (a placeholder, e.g. a shortcut that does nothing); any arguments are
    accepted and ignored, as PyTorch's.

    >>> Identity()(np.ones(2))
    array([1., 1.])
    """

    def __init__(self, *args, **kwargs):
        pass

    def forward(self, x: np.ndarray) -> np.ndarray:
        return F._as_array(x)

    def backward(self, grad_out: np.ndarray, input_grad: bool = True) -> Optional[np.ndarray]:
        return F._as_array(grad_out)


class Residual(Module):
    """A residual connection: ``y = body(x) + shortcut(x)``, or ``body(x) + x`` without a
    shortcut. State names are ``body.*`` and ``shortcut.*`` (a PyTorch module with attributes
    ``body`` and ``shortcut`` has the same state_dict).

    >>> block = Residual(Sequential(Conv2d(16, 16, 3, padding=1), ReLU()))
    >>> block(np.zeros((2, 16, 8, 8), np.float32)).shape
    (2, 16, 8, 8)
    """

    def __init__(self, body: Module, shortcut: Optional[Module] = None):
        for name, m in (("body", body), ("shortcut", shortcut)):
            if m is not None and not isinstance(m, Module):
                raise TypeError(f"Residual: {name} must be a Module, but got "
                                f"{type(m).__name__}")
        self.body, self.shortcut = body, shortcut

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self._forward(x, False)

    def _forward(self, x: np.ndarray, relu: bool) -> np.ndarray:
        """forward, then max(y, 0) when ``relu``: Sequential runs a Residual followed by a
        ReLU as one pass over the sum, or, where the body is a Sequential ending in a batch
        norm, in the batch norm's pass (the same bits)."""
        x = F._as_array(x)
        body = self.body
        if type(body) is Sequential and "forward" not in body.__dict__:
            steps, hook_free = _planned_steps(body)
            last, relu_after = steps[-1] if steps else (None, None)
            if relu_after is None and type(last) in (BatchNorm1d, BatchNorm2d, _ConvBn) and \
                    not _not_movable(last):
                # the body ends in a batch norm: it adds the shortcut (and applies the ReLU)
                # to each sample while it is in cache, one pass instead of two or three
                h = _core.run_steps(steps[:-1], x) if hook_free else None
                if h is None:  # hooks (or gained since: then nothing ran, and the plan is redone)
                    if hook_free:
                        steps = _planned_steps(body, replan=True)[0]
                    h = _run_steps(steps[:-1], x)
                s = x if self.shortcut is None else self.shortcut(x)
                if type(s) is np.ndarray and s.dtype == np.float32 and s.flags.c_contiguous \
                        and np.shape(h) == np.shape(s):
                    return last._forward(h, relu, s)
                y = last(h)
                return self._sum(y, s, relu)
        y = body(x)
        s = x if self.shortcut is None else self.shortcut(x)
        return self._sum(y, s, relu)

    def _sum(self, y, s, relu):
        if np.shape(y) != np.shape(s):
            raise ValueError(f"Residual: the body gives shape {np.shape(y)} but the shortcut "
                             f"{np.shape(s)}; give a shortcut that maps the input to the body's "
                             f"output shape (e.g. a strided 1x1 Conv2d)")
        if relu and type(y) is np.ndarray and y.dtype == np.float32 and y.flags.c_contiguous \
                and type(s) is np.ndarray and s.dtype == np.float32 and s.flags.c_contiguous:
            return _core.activation(F._RELU, y, 0.0, s)  # a new array, as below
        y = np.add(y, s, dtype=np.float32)  # a new array: y or s may be x or a saved input
        return _core.activation(F._RELU, y, 0.0) if relu else y

    def backward(self, grad_out: np.ndarray, input_grad: bool = True) -> Optional[np.ndarray]:
        g = self.body.backward(grad_out, input_grad=input_grad)
        if self.shortcut is None:
            s = grad_out
        else:
            s = self.shortcut.backward(grad_out, input_grad=input_grad)
        if not input_grad:
            return None
        # in place when nothing else holds g (the body's own new array): no fresh array a block
        if (sys.getrefcount(g) <= 2 and not isinstance(g.base, np.ndarray) and
                g.dtype == np.float32 and g.flags.writeable and g.shape == np.shape(s)):
            return np.add(g, s, out=g)
        return np.add(g, s, dtype=np.float32)


class _Activation(Module):
    _fwd = _bwd = None
    inplace = False
    _keeps_sign = False  # forward(x) > 0 exactly where x > 0: its backward may read the output

    def __init__(self):
        self._x = None

    def _kw(self):
        return {}

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._x = x = _f32(x)
        return self._in_place(x, type(self)._fwd(x, **self._kw()))

    def _in_place(self, x, y):
        """y, or with ``inplace`` y written into x (PyTorch's in-place activations), keeping
        what the backward reads: x itself when the output has x's signs, else a copy."""
        if not self.inplace or not x.flags.writeable:
            return y
        if not self._keeps_sign:
            self._x = x.copy()
        np.copyto(x, y)
        return x

    def _inplace_repr(self):
        return ", inplace=True" if self.inplace else ""

    def backward(self, grad_out: np.ndarray, input_grad: bool = True) -> Optional[np.ndarray]:
        return type(self)._bwd(grad_out, self._cached(self._x), **self._kw())


class ReLU(_Activation):
    """max(x, 0), any shape (``functional.relu``). With ``inplace=True`` the result is written
    into the input array (a writable float32 one), as PyTorch's; the same values either way.

    >>> ReLU()(np.array([-1.0, 2.0]))
    array([0., 2.], dtype=float32)
    """

    _fwd, _bwd = F.relu, F.relu_backward
    _keeps_sign = True

    def __init__(self, inplace: bool = False):
        super().__init__()
        self.inplace = bool(inplace)

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._x = x = _f32(x)
        y = _core.activation(F._RELU, x, 0.0)  # F.relu without its frame
        return self._in_place(x, y) if self.inplace else y

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""


class Sigmoid(_Activation):
    """1 / (1 + exp(-x)), any shape (``functional.sigmoid``).

    >>> Sigmoid()(np.zeros(2))
    array([0.5, 0.5], dtype=float32)
    """

    _fwd, _bwd = F.sigmoid, F.sigmoid_backward


class Tanh(_Activation):
    """tanh(x), any shape (``functional.tanh``).

    >>> Tanh()(np.zeros(2))
    array([0., 0.], dtype=float32)
    """

    _fwd, _bwd = F.tanh, F.tanh_backward


class LeakyReLU(_Activation):
    """x for x > 0, else negative_slope * x, any shape (``functional.leaky_relu``);
    ``inplace`` as ``ReLU``'s.

    >>> LeakyReLU(0.1)(np.array([-1.0, 1.0]))
    array([-0.1,  1. ], dtype=float32)
    """

    _fwd, _bwd = F.leaky_relu, F.leaky_relu_backward

    def __init__(self, negative_slope: float = 0.01, inplace: bool = False):
        super().__init__()
        self.negative_slope = float(negative_slope)
        self.inplace = bool(inplace)
        self._keeps_sign = self.negative_slope >= 0

    def _kw(self):
        return {"negative_slope": self.negative_slope}

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}{self._inplace_repr()}"


class ELU(_Activation):
    """x for x > 0, else alpha * (exp(x) - 1), any shape (``functional.elu``); ``inplace`` as
    ``ReLU``'s.

    >>> ELU()(np.array([2.0]))
    array([2.], dtype=float32)
    """

    _fwd, _bwd = F.elu, F.elu_backward

    def __init__(self, alpha: float = 1.0, inplace: bool = False):
        super().__init__()
        self.alpha = float(alpha)
        self.inplace = bool(inplace)

    def _kw(self):
        return {"alpha": self.alpha}

    def extra_repr(self):
        return f"alpha={self.alpha}{self._inplace_repr()}"


class Upsample(Module):
    """Resizes (N, C, H, W) images to ``size`` or by ``scale_factor``, "nearest" or "bilinear"
    (PyTorch's ``nn.Upsample``; ``functional.interpolate``).

    >>> Upsample(scale_factor=2)(np.zeros((1, 3, 4, 5))).shape
    (1, 3, 8, 10)
    """

    def __init__(self, size=None, scale_factor=None, mode: str = "nearest",
                 align_corners: Optional[bool] = None,
                 recompute_scale_factor: Optional[bool] = None):
        self.size = size
        if isinstance(scale_factor, (tuple, list)):
            self.scale_factor = tuple(float(f) for f in scale_factor)
        else:
            self.scale_factor = float(scale_factor) if scale_factor else None
        self.mode, self.align_corners = mode, align_corners
        self.recompute_scale_factor = recompute_scale_factor
        self._x = None
        F._interp_check("Upsample", size, self.scale_factor, mode, align_corners)

    def _kw(self):
        return dict(size=self.size, scale_factor=self.scale_factor, mode=self.mode,
                    align_corners=self.align_corners,
                    recompute_scale_factor=self.recompute_scale_factor)

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._x = x = _f32(x)
        return F.interpolate(x, **self._kw())

    def backward(self, grad_out: np.ndarray, input_grad: bool = True) -> Optional[np.ndarray]:
        return F.interpolate_backward(grad_out, self._cached(self._x), **self._kw())

    def extra_repr(self):
        info = (f"scale_factor={self.scale_factor!r}" if self.scale_factor is not None
                else f"size={self.size!r}")
        return info + f", mode={self.mode!r}"


class Softmax(Module):
    """softmax along ``dim`` (PyTorch's ``nn.Softmax``; ``functional.softmax``), any shape.
    Without ``dim``, PyTorch's legacy choice: 0 for 0-, 1- and 3-D input, else 1. The backward
    reads the output forward returned, as PyTorch's does (no exponentials taken again): change
    that array in place before ``backward`` and the gradient is wrong.

    >>> Softmax(dim=1)(np.array([[0.0, np.log(3.0)]]))
    array([[0.25, 0.75]], dtype=float32)
    """

    _log = False

    def __init__(self, dim: Optional[int] = None):
        self.dim = None if dim is None else int(dim)
        self._y = self._axis = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = _f32(x)
        self._axis = self.dim if self.dim is not None else (0 if x.ndim in (0, 1, 3) else 1)
        self._y = (F.log_softmax if self._log else F.softmax)(x, self._axis)
        return self._y

    def backward(self, grad_out: np.ndarray, input_grad: bool = True) -> Optional[np.ndarray]:
        # from the output: dy - exp(y) sum(dy) (log) or y (dy - sum(y dy)), the sums in float64
        return _core.softmax_backward(grad_out, self._cached(self._y), self._axis, self._log,
                                      True)

    def extra_repr(self):
        return f"dim={self.dim}"


class LogSoftmax(Softmax):
    """log softmax along ``dim`` (PyTorch's ``nn.LogSoftmax``; ``functional.log_softmax``).

    >>> LogSoftmax(dim=1)(np.zeros((1, 2)))
    array([[-0.6931472, -0.6931472]], dtype=float32)
    """

    _log = True


class Flatten(Module):
    """(N, ...) -> (N, prod(...)); a view, no copy. ``start_dim`` .. ``end_dim`` (inclusive,
    negative from the end) are the axes merged, as PyTorch's.

    >>> Flatten()(np.zeros((2, 16, 5, 5))).shape, Flatten(0, 1)(np.zeros((2, 16, 5, 5))).shape
    ((2, 400), (32, 5, 5))
    """

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        self.start_dim, self.end_dim = int(start_dim), int(end_dim)
        self._shape = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = F._as_array(x)
        self._shape = x.shape
        if self.start_dim == 1 and self.end_dim == -1:
            return x.reshape(x.shape[0], -1)
        return x.reshape(_flat_shape(x.shape, self.start_dim, self.end_dim))

    def backward(self, grad_out: np.ndarray, input_grad: bool = True) -> Optional[np.ndarray]:
        return F._as_array(grad_out).reshape(self._cached(self._shape))

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


def _flat_shape(shape, start, end):
    """The shape torch.flatten(x, start, end) gives x of ``shape``."""
    n = max(len(shape), 1)
    s, e = (d + n if d < 0 else d for d in (start, end))
    for d, v in ((start, s), (end, e)):
        if not 0 <= v < n:
            raise IndexError(f"Flatten: dimension out of range (expected to be in range of "
                             f"[{-n}, {n - 1}], but got {d})")
    if s > e:
        raise ValueError("Flatten: start_dim cannot come after end_dim")
    shape = tuple(shape) or (1,)
    return shape[:s] + (int(np.prod(shape[s:e + 1])),) + shape[e + 1:]


class Linear(Module):
    """Fully connected layer (PyTorch's ``nn.Linear``): (N, in_features) -> (N, out_features),
    y = x @ weight.T + bias; weight and bias uniform in +-1/sqrt(in_features).

    >>> Linear(400, 120)(np.zeros((2, 400), np.float32)).shape
    (2, 120)
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        if int(in_features) < 1 or int(out_features) < 1:
            raise ValueError(f"Linear: expected in_features and out_features >= 1, but got "
                             f"({in_features}, {out_features})")
        self.in_features, self.out_features = int(in_features), int(out_features)
        bound = 1.0 / math.sqrt(in_features)
        self.weight = Parameter(_uniform((out_features, in_features), bound))
        self.bias = Parameter(_uniform((out_features,), bound)) if bias else None
        self._x = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self._forward(x, False)

    def _forward(self, x: np.ndarray, relu: bool) -> np.ndarray:
        """forward and, when ``relu``, the ReLU after it in the same core call (Sequential)."""
        self._x = x = _f32(x)
        return _core.linear(x, self.weight.data, None if self.bias is None else self.bias.data,
                            relu)

    def backward(self, grad_out: np.ndarray, input_grad: bool = True) -> Optional[np.ndarray]:
        b = None if self.bias is None else self.bias.data
        dx, dw, db = F.linear_backward(grad_out, self._cached(self._x), self.weight.data, b)
        self.weight.grad += dw
        if self.bias is not None:
            self.bias.grad += db
        return dx

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Dropout(Module):
    """Inverted dropout in training mode (kept values scaled by 1/(1-p)); the identity after
    ``eval()``. Any shape; ``inplace`` writes the result into the input array, as PyTorch's.

    >>> Dropout(0.5).eval()(np.ones(3))
    array([1., 1., 1.], dtype=float32)
    """

    def __init__(self, p: float = 0.5, inplace: bool = False):
        if not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"Dropout: expected p in [0, 1], but got {p}")
        self.p, self.inplace = float(p), bool(inplace)
        self._mask = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        if not self.training or self.p == 0.0:
            self._mask = None
            return _f32(x)
        y, self._mask = F.dropout(x, self.p, training=True)
        if self.inplace and type(x) is np.ndarray and x.dtype == np.float32 and \
                x.flags.writeable:  # as PyTorch's: the result written into the input
            np.copyto(x, y)
            return x
        return y

    def backward(self, grad_out: np.ndarray, input_grad: bool = True) -> Optional[np.ndarray]:
        if self._mask is None:
            return _f32(grad_out)
        return F.dropout_backward(grad_out, self._mask, self.p)

    def extra_repr(self):
        return f"p={self.p}, inplace={self.inplace}"


_NAMES = tuple(str(i) for i in range(64))


def _index_names(n):
    """("0", "1", ..., str(n - 1)): the attribute names of a Sequential's layers."""
    return _NAMES[:n] if n <= len(_NAMES) else tuple(str(i) for i in range(n))


class Sequential(Module):
    """Layers applied in order; indexable and iterable. Parameters are named '<index>.<name>'.
    A ReLU directly followed by a MaxPool2d runs after the pool, on a quarter of the values,
    and a BatchNorm1d/2d, Residual, Conv2d, Linear or MaxPool2d followed by a ReLU runs with it
    in one core call (one pass over memory for the batch norm and the residual sum); in
    evaluation mode a Conv2d followed by a BatchNorm2d (and its ReLU) is one core call too, the
    norm applied as the convolution's output is produced where the algorithm allows. The results
    are the same bits. A pair with a forward replaced on the instance (a hook, ``summary``) runs as
    written; ``run_order()`` gives the order the last forward used. After the first forward the
    layers run in one C++ call (convkit's own Conv2d, Linear, MaxPool2d, Flatten and ReLU
    without a Python frame each; other layers through their ``forward``).

    >>> m = Sequential(Linear(4, 3), ReLU(), Linear(3, 2))
    >>> m(np.zeros((5, 4), np.float32)).shape, [n for n, _ in m.named_parameters()][:2]
    ((5, 2), ['0.weight', '0.bias'])
    """

    def __init__(self, *layers: "Module"):
        if len(layers) == 1 and isinstance(layers[0], Mapping):  # Sequential(OrderedDict(...))
            items = list(layers[0].items())
        else:
            items = list(zip(_index_names(len(layers)), layers))
        object.__setattr__(self, "_names", [])
        for i, (name, layer) in enumerate(items):
            if not isinstance(layer, Module):
                raise TypeError(f"Sequential: layer {name if len(layers) == 1 else i} is a "
                                f"{type(layer).__name__}, not a Module")
            _check_child_name(self, name, "Sequential")
            setattr(self, name, layer)
            self._names.append(name)

    def __setattr__(self, name, value):
        if isinstance(value, Module) or name in self.__dict__.get("_names", ()):
            self._drop_caches()  # a layer replaced
        object.__setattr__(self, name, value)

    def train(self, mode: bool = True) -> "Sequential":
        if bool(mode) != self.training:
            self._drop_caches()  # the plan pairs Conv2d -> BatchNorm2d in evaluation mode
        return Module.train(self, mode)

    def _drop_caches(self):
        """Forgets the order and steps forward planned: the layers changed."""
        for k in ("_order_cache", "_steps_cache", "_run_cache"):
            self.__dict__.pop(k, None)

    def _changed(self, names):
        """The layer names (in order) after an edit."""
        object.__setattr__(self, "_names", names)
        self._drop_caches()

    def _renumbered(self, layers):
        """Holds `layers`, named "0", "1", ... (after an insertion or a deletion)."""
        for k in self._names:
            object.__delattr__(self, k)
        names = list(_index_names(len(layers)))
        for k, layer in zip(names, layers):
            object.__setattr__(self, k, layer)
        self._changed(names)

    def named_children(self) -> Iterator[Tuple[str, "Module"]]:
        listed = set(self._names)
        for name in self._names:
            yield name, getattr(self, name)
        for name, v in self.__dict__.items():  # other Module attributes (not run by forward)
            if isinstance(v, Module) and name not in listed:
                yield name, v

    def __len__(self):
        return len(self._names)

    def __iter__(self):
        return (getattr(self, k) for k in self._names)

    def _index(self, i) -> int:
        n = len(self._names)
        i = int(i)
        if not -n <= i < n:
            raise IndexError(f"Sequential: index {i} out of range for {n} layers")
        return i % n

    def __getitem__(self, i):
        if isinstance(i, slice):  # the layers' names are kept, as PyTorch's
            return Sequential(OrderedDict((k, getattr(self, k)) for k in self._names[i]))
        return getattr(self, self._names[self._index(i)])

    def __setitem__(self, i, layer: "Module"):
        if not isinstance(layer, Module):
            raise TypeError(f"Sequential: {type(layer).__name__} is not a Module")
        setattr(self, self._names[self._index(i)], layer)

    def __delitem__(self, i):
        """Removes layers; the rest are renumbered "0", "1", ... (as PyTorch does)."""
        gone = set(self._names[i]) if isinstance(i, slice) else {self._names[self._index(i)]}
        self._renumbered([getattr(self, k) for k in self._names if k not in gone])

    def append(self, layer: "Module") -> "Sequential":
        """Adds ``layer`` at the end (named by its index); returns self."""
        if not isinstance(layer, Module):
            raise TypeError(f"Sequential.append: {type(layer).__name__} is not a Module")
        name = str(len(self._names))
        _check_child_name(self, name, "Sequential.append")
        setattr(self, name, layer)
        self._changed(self._names + [name])
        return self

    def extend(self, layers) -> "Sequential":
        """Appends each of ``layers``; returns self."""
        for layer in layers:
            self.append(layer)
        return self

    def insert(self, index: int, layer: "Module") -> "Sequential":
        """Puts ``layer`` before position ``index``; the layers are renumbered "0", "1", ...
        (PyTorch's rule for numbered layers); returns self."""
        if not isinstance(layer, Module):
            raise TypeError(f"Sequential.insert: {type(layer).__name__} is not a Module")
        n = len(self._names)
        if not -n <= index <= n:
            raise IndexError(f"Sequential.insert: index {index} out of range for {n} layers")
        layers = list(self)
        layers.insert(index + n if index < 0 else index, layer)
        self._renumbered(layers)
        return self

    def pop(self, index: int = -1) -> "Module":
        """Removes and returns the layer at ``index`` (the rest renumbered, as ``del``)."""
        layer = self[index]
        del self[index]
        return layer

    def add_module(self, name: str, module: Optional["Module"]) -> None:
        """Adds (or replaces) the layer ``name``; a new name goes at the end, as PyTorch's."""
        Module.add_module(self, name, module)
        if name not in self._names and module is not None:
            self._changed(self._names + [name])

    register_module = add_module

    def __call__(self, x):  # (one argument: the generic form costs a batch-1 LeNet-5 1 %)
        return self.forward(x)

    def forward(self, x: np.ndarray) -> np.ndarray:
        steps, hook_free = _planned_steps(self)
        if hook_free:
            y = _core.run_steps(steps, x)  # None (nothing run) when a layer gained a hook since
            if y is not None:
                return y
            steps, hook_free = _planned_steps(self, replan=True)
        return _run_steps(steps, x)

    def run_order(self) -> List[Module]:
        """The layers in the order the last forward ran them (backward undoes that order): a
        ReLU followed by a MaxPool2d runs after it, on a quarter of the values (max pooling
        commutes with ReLU; outputs, gradients and pooling winners are the same)."""
        cached = self.__dict__.get("_order_cache")  # set by the last forward
        return cached[1] if cached is not None else list(self)

    def backward(self, grad_out: np.ndarray, input_grad: bool = True) -> Optional[np.ndarray]:
        """Runs each layer's backward in reverse; ``input_grad`` goes to the first layer only
        (in one C++ call: convkit's own Conv2d, Linear, MaxPool2d, ReLU and Flatten without a
        Python frame each, other layers through their ``backward``). Without ``input_grad``, a
        first Conv2d (stride 1, zero padding, kernels up to 8 wide) followed by a
        MaxPool2d(2) gets its weight and bias gradients straight from the pool's gradient:
        only each window's winner has a gradient, so a quarter of the dense sum's terms (and
        the ReLU's zeros) are skipped, with float32 rounding of its own."""
        return _core.run_backward(self.run_order(), grad_out, bool(input_grad))


class _ConvOutput:
    """A convolution's output that a fused forward (_ConvBn) did not keep, computed again from
    the same input and weight arrays when asked for (an evaluation-mode batch norm's backward
    reads its input)."""

    __slots__ = ("args",)

    def __init__(self, *args):
        self.args = args

    def compute(self) -> np.ndarray:
        x, w, b, st, pd, dl, groups = self.args
        return _core.conv2d(x, w, b, *st, *pd, *dl, groups, False)


class _ConvBn:
    """A Conv2d and the BatchNorm2d after it, as one step of Sequential's forward. With the
    norm in evaluation mode (running statistics) and the convolution in its plain form, one core
    call (``_core.conv2d_bn``) applies the norm, and the residual sum and ReLU after it, to the
    convolution's output (as the lanes Winograd produces it, at AVX2 and AVX-512): the same bits
    as the layers apart, one pass over memory fewer. Otherwise (training mode, other forms, or a hook
    on either layer since the plan) it runs the two layers' forwards. Not a Module: it lives in
    the plan only, the layers stay in the model.
    """

    __slots__ = ("conv", "bn")

    def __init__(self, conv: Conv2d, bn: BatchNorm2d):
        self.conv, self.bn = conv, bn

    def __call__(self, x):
        return self._forward(x, False)

    def _forward(self, x, relu: bool, add: Optional[np.ndarray] = None) -> np.ndarray:
        """forward, then y + add (float32, y's shape) and max(y, 0) when ``relu``."""
        conv, bn = self.conv, self.bn
        if _not_movable(conv) or _not_movable(bn):  # hooked since the plan: as the layers run
            y = bn(conv(x))
            if add is not None:
                y = np.add(y, add, dtype=np.float32)
            return _core.activation(F._RELU, y, 0.0) if relu else y
        x = _f32(x)
        w = conv.weight.data
        st, pd, dl = conv.stride, conv.padding, conv.dilation
        rm, rv = bn.running_mean, bn.running_var
        if (bn.training or not bn.track_running_stats or rm is None or rv is None
                or bn.num_features != w.shape[0] or not conv._plain(x)):
            return bn._forward(conv._forward(x, False), relu, add)
        conv._x = x
        b = None if conv.bias is None else conv.bias.data
        bw = None if bn.weight is None else bn.weight.data
        bb = None if bn.bias is None else bn.bias.data
        name = type(bn).__name__  # (the checks of bn._forward)
        F._float(0.0 if bn.momentum is None else bn.momentum, name, "momentum")
        y = _core.conv2d_bn(x, w, b, *st, *pd, *dl, conv.groups, rm, rv, bw, bb,
                            F._float(bn.eps, name, "eps"), relu, add)
        bn._saved = (_ConvOutput(x, w, b, st, pd, dl, conv.groups), False,
                     (rm.copy(), rv.copy()))
        return y


def _execution_order(seq: Sequential) -> List[Module]:
    """seq's layers in the order forward runs them (and backward undoes them): a ReLU followed
    by a MaxPool2d runs after it. Max pooling commutes with ReLU, which then touches a quarter
    of the values (LeNet-5's first ReLU was as costly as its convolution); outputs, gradients
    and the windows' winners are the same (where a window holds no positive value both give
    zero, and a zero gradient)."""
    cached = seq.__dict__.get("_order_cache")  # (reusable, order, the layers moved)
    if cached is not None and cached[0]:  # (Sequential.__setattr__ drops it when a layer changes)
        for m in cached[2]:
            if _not_movable(m):
                break
        else:
            return cached[1]
    order, moved, held = list(seq), [], False
    for i in range(len(order) - 1):
        a, b = order[i], order[i + 1]
        if type(a) is ReLU and type(b) is MaxPool2d:
            if _not_movable(a) or _not_movable(b):
                held = True
            else:
                order[i], order[i + 1] = b, a
                moved += [a, b]
    # run_order() reads the order back; one that held a pair in place is not reused (the hook
    # or the indices may go away)
    seq._order_cache = (not held, order, moved)
    return order


# layers with _forward(x, relu)
_RELU_FUSED = (BatchNorm1d, BatchNorm2d, Residual, Linear, MaxPool2d, Conv2d)


def _execution_steps(seq: Sequential) -> List[Tuple[Module, Optional[Module]]]:
    """The forward's steps over _execution_order(seq): (layer, None), or (layer, ReLU) for a
    BatchNorm1d/2d, Residual, Conv2d, Linear or MaxPool2d directly followed by a ReLU (in the
    order forward runs them), which run in one core call (the same bits: the ReLU is applied to the
    layer's output, while it is in cache where the layer works sample by sample). A Conv2d
    followed by a BatchNorm2d in evaluation mode is one step, _ConvBn (with the ReLU after them,
    if any)."""
    order = _execution_order(seq)
    cached = seq.__dict__.get("_steps_cache")  # (the order, steps, the layers fused)
    if cached is not None and cached[0] is order:
        for m in cached[2]:
            if _not_movable(m):
                break
        else:
            return cached[1]
    steps, fused, held, i = [], [], False, 0
    while i < len(order):
        a, b = order[i], order[i + 1] if i + 1 < len(order) else None
        if type(a) is Conv2d and type(b) is BatchNorm2d and not b.training:
            c = order[i + 2] if i + 2 < len(order) else None
            if not (_not_movable(a) or _not_movable(b)):
                relu = c if type(c) is ReLU and not _not_movable(c) else None
                held |= type(c) is ReLU and relu is None
                steps.append((_ConvBn(a, b), relu))
                fused += [a, b] if relu is None else [a, b, relu]
                i += 2 if relu is None else 3
                continue
            held = True
        if type(a) in _RELU_FUSED and type(b) is ReLU:
            if not (_not_movable(a) or _not_movable(b)):
                steps.append((a, b))
                fused += [a, b]
                i += 2
                continue
            held = True
        steps.append((a, None))
        i += 1
    seq._steps_cache = (None if held else order, steps, fused)
    return steps


def _planned_steps(seq: Sequential, replan: bool = False):
    """(steps, hook_free): _execution_steps(seq), and whether none of their layers has a hook,
    so that _core.run_steps may run them (it returns None, running nothing, should one have
    gained a hook since). Hook-free steps are kept for the next forward without re-checking
    them in Python; ``replan`` drops them first."""
    steps = None if replan else seq.__dict__.get("_run_cache")
    if steps is not None:
        return steps, True
    steps = _execution_steps(seq)
    hook_free = True
    for layer, relu in steps:
        if _not_movable(layer) or (relu is not None and _not_movable(relu)):
            hook_free = False
            break
    seq._run_cache = steps if hook_free else None
    return steps, hook_free


def _run_steps(steps, x):
    """The steps on x, layer by layer (the plain form of _core.run_steps, which Sequential's
    forward uses once the steps are known to have no hook)."""
    for layer, relu in steps:
        if relu is None:
            x = layer(x)
        else:  # a BatchNorm or Residual and the ReLU after it, in one pass
            x = relu._x = layer._forward(x, True)  # ReLU's backward reads y > 0 as x > 0
    return x


def _not_movable(m: Module) -> bool:
    """A layer whose forward is replaced on the instance (summary's recorder, a user's hook) or
    a pool that returns indices runs where it stands (a _ConvBn: where either layer does)."""
    if type(m) is _ConvBn:
        return _not_movable(m.conv) or _not_movable(m.bn)
    return "forward" in m.__dict__ or getattr(m, "return_indices", False)


class _Loss:
    """loss = crit(pred, target) -> float; crit.backward() -> gradient w.r.t. pred."""

    _fwd = _bwd = None

    def __init__(self, **options):
        self._pred = self._target = None
        self._options = {k: v for k, v in options.items() if v is not None}  # PyTorch's keywords

    def __call__(self, pred: np.ndarray, target: np.ndarray) -> float:
        self._pred, self._target = _f32(pred), target
        if self._options:
            return type(self)._fwd(self._pred, target, **self._options)
        return type(self)._fwd(self._pred, target)

    def backward(self, grad_out: float = 1.0) -> np.ndarray:
        """The gradient with respect to pred of the loss times grad_out (with reduction "none",
        grad_out may also hold one value per element of the loss)."""
        if self._pred is None:
            raise RuntimeError(f"{type(self).__name__}.backward: call the loss on a batch first")
        if self._options:
            return type(self)._bwd(grad_out, self._pred, self._target, **self._options)
        return type(self)._bwd(grad_out, self._pred, self._target)

    def __repr__(self):
        return f"{type(self).__name__}()"


class CrossEntropyLoss(_Loss):
    """``loss = crit(logits, labels)``: mean cross-entropy of logits (N, K) and integer labels
    (N,), a float; ``crit.backward()`` -> the gradient (N, K) of that loss. ``weight``,
    ``ignore_index``, ``reduction`` and ``label_smoothing`` as PyTorch's (see
    ``functional.cross_entropy``).

    >>> crit = CrossEntropyLoss(); round(crit(np.zeros((2, 2)), [0, 1]), 4), crit.backward().shape
    (0.6931, (2, 2))
    """

    _fwd, _bwd = F.cross_entropy, F.cross_entropy_backward

    def __init__(self, weight: Optional[np.ndarray] = None, ignore_index: int = -100,
                 reduction: str = "mean", label_smoothing: float = 0.0):
        F._reduction(reduction, "CrossEntropyLoss")
        F._label_smoothing(label_smoothing, "CrossEntropyLoss")
        super().__init__(weight=weight, ignore_index=None if ignore_index == -100 else
                         int(ignore_index), reduction=None if reduction == "mean" else reduction,
                         label_smoothing=None if label_smoothing == 0 else label_smoothing)


class MSELoss(_Loss):
    """``loss = crit(pred, target)``: mean squared error (a float); ``crit.backward()`` -> its
    gradient with respect to pred. ``reduction`` as PyTorch's.

    >>> crit = MSELoss(); crit(np.ones(2), np.zeros(2)), crit.backward()
    (1.0, array([1., 1.], dtype=float32))
    """

    _fwd, _bwd = F.mse_loss, F.mse_loss_backward

    def __init__(self, reduction: str = "mean"):
        F._reduction(reduction, "MSELoss")
        super().__init__(reduction=None if reduction == "mean" else reduction)


class BCEWithLogitsLoss(_Loss):
    """``loss = crit(logits, targets)``: mean binary cross-entropy of sigmoid(logits) and targets
    in [0, 1] (a float); ``crit.backward()`` -> its gradient with respect to the logits.
    ``weight``, ``reduction`` and ``pos_weight`` as PyTorch's.

    >>> round(BCEWithLogitsLoss()(np.zeros(2), np.ones(2)), 4)
    0.6931
    """

    _fwd, _bwd = F.binary_cross_entropy_with_logits, F.binary_cross_entropy_with_logits_backward

    def __init__(self, weight: Optional[np.ndarray] = None, reduction: str = "mean",
                 pos_weight: Optional[np.ndarray] = None):
        F._reduction(reduction, "BCEWithLogitsLoss")
        super().__init__(weight=weight, reduction=None if reduction == "mean" else reduction,
                         pos_weight=pos_weight)


def summary(model: Module, input_shape: Tuple[int, ...], print_fn=print) -> List[dict]:
    """Runs ``model`` (in evaluation mode, then restores its mode) on zeros of
    ``(2,) + input_shape`` (one sample's shape; a full batch shape is accepted too) and returns,
    and prints, each leaf layer's name, type, output shape (batch as -1) and parameter count.

    >>> rows = summary(Sequential(Conv2d(1, 4, 3), ReLU(), Flatten(), Linear(4 * 26 * 26, 10)),
    ...                (1, 28, 28), print_fn=None)
    >>> [(r["name"], r["output_shape"], r["params"]) for r in rows][::3]
    [('0', (-1, 4, 26, 26), 40), ('3', (-1, 10), 27050)]
    """
    rows: List[dict] = []
    leaves = [(n, m) for n, m in model.named_modules() if not m.children()]
    was_training = model.training

    def recorder(name, m):
        fwd = m.forward

        def run(*args, **kw):
            y = fwd(*args, **kw)
            out = y[0] if isinstance(y, tuple) else y
            rows.append(dict(name=name, type=type(m).__name__,
                             output_shape=(-1,) + tuple(np.shape(out))[1:],
                             params=sum(p.data.size for p in m.parameters())))
            return y
        return run

    def attempt(shape):
        rows.clear()
        for n, m in leaves:
            m.forward = recorder(n, m)
        try:
            model(np.zeros(shape, np.float32))
        finally:
            for _, m in leaves:
                del m.forward
    model.eval()
    try:
        try:
            attempt((2,) + tuple(input_shape))
        except ValueError:
            if len(input_shape) < 2:
                raise
            attempt(tuple(input_shape))  # the shape of a whole batch
    finally:
        model.train(was_training)
    if print_fn is not None:
        total = sum(p.data.size for p in model.parameters())
        lines = [f"{'layer':<24}{'type':<20}{'output shape':<22}{'params':>10}", "-" * 76]
        lines += [f"{r['name']:<24}{r['type']:<20}{str(r['output_shape']):<22}{r['params']:>10,}"
                  for r in rows]
        lines += ["-" * 76, f"total parameters: {total:,}"]
        print_fn("\n".join(lines))
    return rows


_core._register_layers(np.ndarray, Conv2d, MaxPool2d, Linear, Flatten, ReLU)
