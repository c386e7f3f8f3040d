"""The function API: forward ops and their gradients, on NumPy arrays.

Each ``f_backward(grad_out, *inputs, **kw)`` takes the forward's own inputs and returns the
gradients of the array inputs in order (a tuple when there are several). Inputs of any numeric
dtype or layout are converted to C-contiguous float32; results are new float32 arrays. This module
only normalises arguments; validation and computation happen in ``convkit._core``.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np

from . import _core

__all__ = [
    "conv2d", "conv2d_backward", "conv_transpose2d", "conv_transpose2d_backward", "max_pool2d",
    "max_pool2d_backward", "max_unpool2d", "max_unpool2d_backward", "avg_pool2d",
    "avg_pool2d_backward", "adaptive_avg_pool2d", "adaptive_avg_pool2d_backward",
    "adaptive_max_pool2d", "adaptive_max_pool2d_backward", "batch_norm", "batch_norm_backward", "relu", "relu_backward", "leaky_relu", "leaky_relu_backward",
    "sigmoid", "sigmoid_backward", "tanh", "tanh_backward", "elu", "elu_backward", "softmax",
    "softmax_backward", "log_softmax", "log_softmax_backward", "linear", "linear_backward",
    "cross_entropy", "cross_entropy_backward", "binary_cross_entropy_with_logits",
    "binary_cross_entropy_with_logits_backward", "mse_loss", "mse_loss_backward", "dropout",
    "dropout_backward", "interpolate", "interpolate_backward",
]

_RELU, _LEAKY, _SIGMOID, _TANH, _ELU = range(5)

# Type hints: any array-like in (converted to C-contiguous float32), NumPy arrays out.
ArrayLike = Union[np.ndarray, Sequence, float, Any]
IntPair = Union[int, Tuple[int, int]]
Padding = Union[int, Tuple[int, int], str]
Grads = Tuple[Optional[np.ndarray], np.ndarray, Optional[np.ndarray]]


_I62 = 2**62


def _int(v, fn: str, name: str) -> int:
    if type(v) is int and -_I62 <= v < _I62:  # the common case, without the abc checks
        return v
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{fn}: argument '{name}' expected an int or a pair of ints, "
                        f"but got {v!r}")
    if not -_I62 <= int(v) < _I62:  # the C++ core takes 64-bit sizes
        raise ValueError(f"{fn}: argument '{name}' is out of range: {v}")
    return int(v)


def _pair(v, fn: str, name: str) -> tuple[int, int]:
    """int or (h, w) pair -> (h, w)."""
    if type(v) is int and -_I62 <= v < _I62:
        return v, v
    if isinstance(v, (tuple, list, np.ndarray)):
        if len(v) != 2:
            raise ValueError(f"{fn}: argument '{name}' expected an int or a pair of ints, "
                             f"but got {tuple(v)!r} with {len(v)} elements")
        return _int(v[0], fn, name), _int(v[1], fn, name)
    i = _int(v, fn, name)
    return i, i


def _float(v, fn: str, name: str) -> float:
    if type(v) is float:  # the common case, without the abc checks
        return v
    if isinstance(v, np.ndarray) and v.size == 1:
        v = v.item()
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{fn}: argument '{name}' expected a float, but got {v!r}")
    return float(v)


# ---- convolution -------------------------------------------------------------------------------

_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _conv_setup(fn, x, weight, stride, padding, dilation, groups, padding_mode):
    """Normalises conv2d's arguments. Returns (x4, unbatched, (sh, sw), conv padding (ph, pw),
    explicit padding (top, bottom, left, right) or None, (dh, dw), groups)."""
    sh, sw = _pair(stride, fn, "stride")
    dh, dw = _pair(dilation, fn, "dilation")
    groups = _int(groups, fn, "groups")
    if not isinstance(padding_mode, str) or padding_mode not in _PADDING_MODES:
        raise ValueError(f"{fn}: expected padding_mode to be one of {_PADDING_MODES}, "
                         f"but got {padding_mode!r}")
    x, unbatched = _batched(x)
    wshape = np.shape(weight)
    if isinstance(padding, str):
        if padding == "valid":
            pads = (0, 0, 0, 0)
        elif padding == "same":
            if (sh, sw) != (1, 1):
                raise ValueError(f"{fn}: padding='same' is not supported for strided "
                                 f"convolutions (stride {(sh, sw)}); give the padding as numbers")
            if len(wshape) != 4:
                raise ValueError(f"{fn}: argument 'weight' expected 4 dimensions "
                                 f"(out_channels, in_channels / groups, kH, kW), but got shape "
                                 f"{tuple(wshape)}")
            th, tw = dh * (wshape[2] - 1), dw * (wshape[3] - 1)  # total padding per axis
            pads = (th // 2, th - th // 2, tw // 2, tw - tw // 2)
        else:
            raise ValueError(f"{fn}: expected padding to be an int, a pair, 'valid' or 'same', "
                             f"but got {padding!r}")
    else:
        ph, pw = _pair(padding, fn, "padding")
        pads = (ph, ph, pw, pw)
    t, b, l, r = pads
    if padding_mode == "zeros" and t == b and l == r:
        return x, unbatched, (sh, sw), (t, l), None, (dh, dw), groups
    return x, unbatched, (sh, sw), (0, 0), pads, (dh, dw), groups


def _as_array(x):
    """Array-likes as an ndarray without a copy where possible: PyTorch tensors (also with
    requires_grad) detached, objects with only ``__dlpack__`` read through it; the binding
    converts the dtype and layout."""
    if x is None or isinstance(x, np.ndarray):
        return x
    try:
        return _core.as_array(x)
    except TypeError:  # let the binding name the argument in its TypeError
        return x if hasattr(x, "ndim") else np.asarray(x, dtype=object)


def _batched(x):
    """(x as an array with a batch axis, whether it had none): the unbatched (C, H, W) form of
    the 2-D ops."""
    x = _as_array(x)
    if getattr(x, "ndim", 0) == 3:
        return x[None], True
    return x, False


def _unbatch(y, unbatched):
    if not unbatched:
        return y
    if isinstance(y, tuple):
        return tuple(_unbatch(v, True) for v in y)
    return y[0]


def conv2d(x: ArrayLike, weight: ArrayLike, bias: Optional[ArrayLike] = None, stride: IntPair = 1,
           padding: Padding = 0, dilation: IntPair = 1, groups: int = 1,
           padding_mode: str = "zeros") -> np.ndarray:
    """2-D convolution (cross-correlation, as PyTorch's ``F.conv2d``).

    x (N, C, H, W) or unbatched (C, H, W); weight (K, C / groups, R, S); bias (K,) or None
    -> (N, K, P, Q) (or (K, P, Q)), P = floor((H + 2*pad_h - dil_h*(R-1) - 1) / stride_h) + 1.

    stride, padding, dilation: an int or an (h, w) pair; padding may also be 'valid' (0) or
    'same' (stride 1; any kernel and dilation; an odd total puts the extra row/column at the
    bottom/right, as PyTorch). groups splits the channels (depthwise: groups == C).
    padding_mode: 'zeros', 'reflect', 'replicate' or 'circular'.

    >>> x = np.ones((2, 4, 8, 8), np.float32); w = np.ones((4, 1, 3, 3), np.float32)
    >>> conv2d(x, w, padding=1, groups=4).shape     # depthwise
    (2, 4, 8, 8)
    """
    x4, unb, st, pd, pads, dil, g = _conv_setup("conv2d", x, weight, stride, padding, dilation,
                                                groups, padding_mode)
    if pads is not None:
        x4 = _core.pad2d(x4, *pads, padding_mode)
    y = _core.conv2d(x4, weight, bias, *st, *pd, *dil, g)
    return y[0] if unb else y


def conv2d_backward(grad_out: ArrayLike, x: ArrayLike, weight: ArrayLike,
                    bias: Optional[ArrayLike] = None, stride: IntPair = 1, padding: Padding = 0,
                    dilation: IntPair = 1, groups: int = 1, padding_mode: str = "zeros",
                    input_grad: bool = True) -> Grads:
    """Gradients of ``conv2d`` -> (grad_x or None, grad_weight, grad_bias or None).

    grad_out (N, K, P, Q); the other arguments are conv2d's own. With ``input_grad=False``
    grad_x is not computed (None): the first layer of a network needs no input gradient.

    >>> x = np.ones((2, 3, 8, 8), np.float32); w = np.ones((4, 3, 3, 3), np.float32)
    >>> gx, gw, gb = conv2d_backward(np.ones((2, 4, 8, 8), np.float32), x, w, padding=1)
    >>> gx.shape, gw.shape, gb
    ((2, 3, 8, 8), (4, 3, 3, 3), None)
    """
    fn = "conv2d_backward"
    x4, unb, st, pd, pads, dil, g = _conv_setup(fn, x, weight, stride, padding, dilation, groups,
                                                padding_mode)
    go = _as_array(grad_out)
    if unb and getattr(go, "ndim", 0) == 3:
        go = go[None]
    xin = x4 if pads is None else _core.pad2d(x4, *pads, padding_mode)
    dx, dw, db = _core.conv2d_backward(go, xin, weight, bias, *st, *pd, *dil, g, bool(input_grad))
    if dx is not None and pads is not None:
        dx = _core.pad2d_backward(dx, x4.shape[2], x4.shape[3], *pads, padding_mode)
    if dx is not None and unb:
        dx = dx[0]
    return dx, dw, db


def conv_transpose2d(x: ArrayLike, weight: ArrayLike, bias: Optional[ArrayLike] = None,
                     stride: IntPair = 1, padding: IntPair = 0, output_padding: IntPair = 0,
                     groups: int = 1, dilation: IntPair = 1) -> np.ndarray:
    """Transposed 2-D convolution (PyTorch's ``F.conv_transpose2d``): the gradient of conv2d
    with respect to its input, as an op.

    x (N, C_in, H, W) or (C_in, H, W); weight (C_in, C_out / groups, R, S); bias (C_out,) or None
    -> (N, C_out, Ho, Wo), Ho = (H - 1)*stride_h - 2*pad_h + dil_h*(R - 1) + output_padding_h + 1.

    >>> x = np.ones((1, 8, 4, 4), np.float32); w = np.ones((8, 3, 4, 4), np.float32)
    >>> conv_transpose2d(x, w, stride=2, padding=1).shape
    (1, 3, 8, 8)
    """
    fn = "conv_transpose2d"
    args = _convT_args(fn, stride, padding, output_padding, groups, dilation)
    x = _as_array(x)
    unb = getattr(x, "ndim", 0) == 3
    y = _core.conv_transpose2d(x[None] if unb else x, weight, bias, *args)
    return y[0] if unb else y


def conv_transpose2d_backward(grad_out: ArrayLike, x: ArrayLike, weight: ArrayLike,
                              bias: Optional[ArrayLike] = None, stride: IntPair = 1,
                              padding: IntPair = 0, output_padding: IntPair = 0, groups: int = 1,
                              dilation: IntPair = 1, input_grad: bool = True) -> Grads:
    """Gradients of ``conv_transpose2d`` -> (grad_x or None, grad_weight, grad_bias or None);
    grad_out (N, C_out, Ho, Wo), the other arguments the forward's.

    >>> x = np.ones((1, 8, 4, 4), np.float32); w = np.ones((8, 3, 4, 4), np.float32)
    >>> gx, gw, gb = conv_transpose2d_backward(np.ones((1, 3, 8, 8)), x, w, stride=2, padding=1)
    >>> gx.shape, gw.shape
    ((1, 8, 4, 4), (8, 3, 4, 4))
    """
    fn = "conv_transpose2d_backward"
    args = _convT_args(fn, stride, padding, output_padding, groups, dilation)
    x, go = _as_array(x), _as_array(grad_out)
    unb = getattr(x, "ndim", 0) == 3
    if unb:
        x, go = x[None], (go[None] if getattr(go, "ndim", 0) == 3 else go)
    dx, dw, db = _core.conv_transpose2d_backward(go, x, weight, bias, *args, bool(input_grad))
    if dx is not None and unb:
        dx = dx[0]
    return dx, dw, db


def _convT_args(fn, stride, padding, output_padding, groups, dilation):
    sh, sw = _pair(stride, fn, "stride")
    if isinstance(padding, str):
        raise ValueError(f"{fn}: expected padding to be an int or a pair, but got {padding!r}")
    ph, pw = _pair(padding, fn, "padding")
    oph, opw = _pair(output_padding, fn, "output_padding")
    dh, dw = _pair(dilation, fn, "dilation")
    return sh, sw, ph, pw, oph, opw, dh, dw, _int(groups, fn, "groups")


# ---- pooling -----------------------------------------------------------------------------------

def _pool_args(fn, kernel_size, stride, padding):
    kh, kw = _pair(kernel_size, fn, "kernel_size")
    no_stride = stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0)
    sh, sw = (kh, kw) if no_stride else _pair(stride, fn, "stride")
    ph, pw = _pair(padding, fn, "padding")
    return kh, kw, sh, sw, ph, pw


def _divisor(fn, divisor_override):
    if divisor_override is None:
        return None
    return _int(divisor_override, fn, "divisor_override")


def max_pool2d(x: ArrayLike, kernel_size: IntPair, stride: Optional[IntPair] = None,
               padding: IntPair = 0, dilation: IntPair = 1, ceil_mode: bool = False,
               return_indices: bool = False):
    """Max pooling: x (N, C, H, W) or (C, H, W) -> (N, C, P, Q) with
    P = floor((H + 2*pad - dilation*(kH-1) - 1) / stride) + 1 (rounded up with ``ceil_mode``,
    dropping a window that would start in the bottom/right padding), as PyTorch.

    Padding counts as -inf; stride=None means stride=kernel_size. With ``return_indices`` it
    returns ``(y, indices)``: int64 positions of each maximum in its flattened H*W plane.

    >>> max_pool2d(np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4), 2)[0, 0]
    array([[ 5.,  7.],
           [13., 15.]], dtype=float32)
    >>> max_pool2d(np.arange(9, dtype=np.float32).reshape(1, 3, 3), 2, ceil_mode=True,
    ...            return_indices=True)[1]
    array([[[4, 5],
            [7, 8]]])
    """
    fn = "max_pool2d"
    x, unb = _batched(x)
    dh, dw = _pair(dilation, fn, "dilation")
    y = _core.max_pool2d(x, *_pool_args(fn, kernel_size, stride, padding), dh, dw,
                         bool(ceil_mode), bool(return_indices))
    return _unbatch(y, unb)


def max_pool2d_backward(grad_out: ArrayLike, x: ArrayLike, kernel_size: IntPair,
                        stride: Optional[IntPair] = None, padding: IntPair = 0,
                        dilation: IntPair = 1, ceil_mode: bool = False) -> np.ndarray:
    """Gradient of ``max_pool2d``: grad_out (N, C, P, Q), x (N, C, H, W) -> grad_x (N, C, H, W)
    (or all unbatched).

    Each output's gradient goes to the first maximum of its window (row-major), as PyTorch.

    >>> x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    >>> max_pool2d_backward(np.ones((1, 1, 2, 2), np.float32), x, 2)[0, 0, 1]
    array([0., 1., 0., 1.], dtype=float32)
    """
    fn = "max_pool2d_backward"
    x, unb = _batched(x)
    dh, dw = _pair(dilation, fn, "dilation")
    g = _as_array(grad_out)[None] if unb else grad_out
    return _unbatch(_core.max_pool2d_backward(g, x, *_pool_args(fn, kernel_size, stride, padding),
                                              dh, dw, bool(ceil_mode)), unb)


def avg_pool2d(x: ArrayLike, kernel_size: IntPair, stride: Optional[IntPair] = None,
               padding: IntPair = 0, ceil_mode: bool = False, count_include_pad: bool = True,
               divisor_override: Optional[int] = None) -> np.ndarray:
    """Average pooling: x (N, C, H, W) or (C, H, W) -> (N, C, P, Q); stride=None means
    stride=kernel_size. Each window's sum is divided by ``divisor_override`` when given, else by
    its size counting padding (``count_include_pad=True``) or only the input elements, as
    PyTorch (with ``ceil_mode`` a window is clipped at the padded edge).

    >>> avg_pool2d(np.ones((1, 1, 4, 4), np.float32), 2, padding=1)[0, 0, 0]
    array([0.25, 0.5 , 0.25], dtype=float32)
    >>> avg_pool2d(np.ones((1, 1, 4, 4), np.float32), 2, padding=1, count_include_pad=False)[0, 0, 0]
    array([1., 1., 1.], dtype=float32)
    """
    fn = "avg_pool2d"
    x, unb = _batched(x)
    return _unbatch(_core.avg_pool2d(x, *_pool_args(fn, kernel_size, stride, padding),
                                     bool(ceil_mode), bool(count_include_pad),
                                     _divisor(fn, divisor_override)), unb)


def avg_pool2d_backward(grad_out: ArrayLike, x: ArrayLike, kernel_size: IntPair,
                        stride: Optional[IntPair] = None, padding: IntPair = 0,
                        ceil_mode: bool = False, count_include_pad: bool = True,
                        divisor_override: Optional[int] = None) -> np.ndarray:
    """Gradient of ``avg_pool2d``: grad_out (N, C, P, Q), x (N, C, H, W) -> grad_x (N, C, H, W).

    >>> avg_pool2d_backward(np.ones((1, 1, 1, 1), np.float32), np.ones((1, 1, 2, 2)), 2)[0, 0]
    array([[0.25, 0.25],
           [0.25, 0.25]], dtype=float32)
    """
    fn = "avg_pool2d_backward"
    x, unb = _batched(x)
    g = _as_array(grad_out)[None] if unb else grad_out
    return _unbatch(_core.avg_pool2d_backward(g, x, *_pool_args(fn, kernel_size, stride, padding),
                                              bool(ceil_mode), bool(count_include_pad),
                                              _divisor(fn, divisor_override)), unb)


def _unpool_setup(fn, x, indices, kernel_size, stride, padding, output_size, allow_empty=False):
    """(x4, indices4 int64, (N, C, Ho, Wo), unbatched) for max_unpool2d, checked as PyTorch
    (``allow_empty``: an output plane of zero rows or columns, which the forward returns)."""
    kh, kw, sh, sw, ph, pw = _pool_args(fn, kernel_size, stride, padding)
    x = np.ascontiguousarray(_as_array(x), dtype=np.float32)
    unb = x.ndim == 3
    if unb:
        x = x[None]
    if x.ndim != 4:
        raise ValueError(f"{fn}: expected input of shape (N, C, H, W) or (C, H, W), but got "
                         f"{x.shape}")
    idx = np.asarray(indices)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"{fn}: argument 'indices' expected integers, but got dtype {idx.dtype}")
    idx = idx.astype(np.int64, copy=False).reshape(idx.shape)
    if unb and idx.ndim == 3:
        idx = idx[None]
    if idx.shape != x.shape:
        raise ValueError(f"{fn}: expected indices of the input's shape {x.shape}, but got "
                         f"{idx.shape}")
    N, C, H, W = x.shape
    default = ((H - 1) * sh - 2 * ph + kh, (W - 1) * sw - 2 * pw + kw)
    if output_size is None:
        out = default
    else:
        o = tuple(int(v) for v in output_size)
        if len(o) in (3, 4):
            o = o[-2:]
        if len(o) != 2:
            raise ValueError(f"{fn}: expected output_size (H, W), (C, H, W) or (N, C, H, W), "
                             f"but got {tuple(output_size)}")
        for d, (v, dv, st) in enumerate(zip(o, default, (sh, sw))):
            if not dv - st < v < dv + st:
                raise ValueError(f"{fn}: output_size {o} must lie between "
                                 f"{(default[0] - sh + 1, default[1] - sw + 1)} and "
                                 f"{(default[0] + sh - 1, default[1] + sw - 1)}")
        out = o
    if min(out) < (0 if allow_empty else 1):
        raise ValueError(f"{fn}: the output size {out} is too small for input {x.shape}")
    return x, idx, (N, C) + tuple(out), unb


def _unpool_checked(fn, result, idx, shape):
    """The core's (array, first bad position or -1): the array, or the ValueError naming the
    first index outside the output plane."""
    out, bad = result
    if bad >= 0:
        raise ValueError(f"{fn}: index {idx.flat[bad]} is outside the output plane of "
                         f"{shape[2]}x{shape[3]} = {shape[2] * shape[3]} elements")
    return out


def max_unpool2d(x: ArrayLike, indices: ArrayLike, kernel_size: IntPair,
                 stride: Optional[IntPair] = None, padding: IntPair = 0,
                 output_size: Optional[Sequence[int]] = None) -> np.ndarray:
    """The partial inverse of ``max_pool2d``: x (N, C, P, Q) placed at ``indices`` (from
    ``max_pool2d(..., return_indices=True)``) of zero planes (N, C, Ho, Wo), where
    Ho = (P - 1)*stride - 2*pad + kH unless ``output_size`` says otherwise.

    >>> y, i = max_pool2d(np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4), 2,
    ...                   return_indices=True)
    >>> max_unpool2d(y, i, 2)[0, 0, 1]
    array([0., 5., 0., 7.], dtype=float32)
    """
    x, idx, shape, unb = _unpool_setup("max_unpool2d", x, indices, kernel_size, stride, padding,
                                       output_size, allow_empty=True)
    if shape[2] == 0 or shape[3] == 0:  # an empty plane holds nothing (PyTorch checks no index)
        return _unbatch(np.zeros(shape, np.float32), unb)
    y = _unpool_checked("max_unpool2d", _core.max_unpool2d(x, idx, shape[2], shape[3]), idx,
                        shape)
    return _unbatch(y, unb)


def max_unpool2d_backward(grad_out: ArrayLike, x: ArrayLike, indices: ArrayLike,
                          kernel_size: IntPair, stride: Optional[IntPair] = None,
                          padding: IntPair = 0,
                          output_size: Optional[Sequence[int]] = None) -> np.ndarray:
    """Gradient of ``max_unpool2d`` with respect to x: grad_out read back at the indices.

    >>> y, i = max_pool2d(np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4), 2,
    ...                   return_indices=True)
    >>> max_unpool2d_backward(np.arange(16.).reshape(1, 1, 4, 4), y, i, 2)[0, 0]
    array([[ 5.,  7.],
           [13., 15.]], dtype=float32)
    """
    fn = "max_unpool2d_backward"
    x, idx, shape, unb = _unpool_setup(fn, x, indices, kernel_size, stride, padding, output_size)
    g = np.ascontiguousarray(_as_array(grad_out), dtype=np.float32)
    if unb and g.ndim == 3:
        g = g[None]
    if g.shape != shape:
        raise ValueError(f"{fn}: expected grad_out of shape {shape}, but got {g.shape}")
    dx = _unpool_checked(fn, _core.max_unpool2d_backward(g, idx), idx, shape)
    return _unbatch(dx, unb)


def _adaptive_size(fn, x, output_size):
    if isinstance(output_size, (tuple, list)):
        if len(output_size) != 2:
            raise ValueError(f"{fn}: argument 'output_size' expected an int or a pair, but got "
                             f"{tuple(output_size)!r}")
        h, w = output_size
    else:
        h = w = output_size
    H, W = np.shape(x)[-2:] if np.ndim(x) >= 2 else (None, None)
    h = H if h is None else _int(h, fn, "output_size")
    w = W if w is None else _int(w, fn, "output_size")
    return h, w


# ---- resizing ----------------------------------------------------------------------------------

def _interp_check(fn, size, scale_factor, mode, align_corners):
    """interpolate's arguments, or the ValueError naming the one to fix."""
    if mode not in ("nearest", "bilinear"):
        raise ValueError(f"{fn}: mode must be 'nearest' or 'bilinear', but got {mode!r}")
    if mode == "nearest" and align_corners is not None:
        raise ValueError(f"{fn}: align_corners can only be set with mode='bilinear'")
    if (size is None) == (scale_factor is None):
        raise ValueError(f"{fn}: give exactly one of size and scale_factor")


_PLANS: dict = {}  # _interp_plan's results by their arguments (at most 256)


def _interp_plan(fn, shape, size, scale_factor, mode, align_corners, recompute_scale_factor):
    """Per spatial axis, (i0, i1, w0, w1): output j = w0[j] x[i0[j]] + w1[j] x[i1[j]]
    (nearest: w1 = 0), PyTorch's source indices and weights (float32); their lengths are the
    output size. Kept by the arguments for the next call (the checks cost a (1, 1, 4, 4)
    image three times its resize); arguments that raise are checked again on every call."""
    # size and scale_factor by their repr, which tells 2.0 from 2 and a list from a tuple
    # (whose checks differ); the others compare as the checks read them
    key = (len(shape), tuple(shape[2:]), repr(size), repr(scale_factor), mode, align_corners,
           recompute_scale_factor)
    try:
        plan = _PLANS.get(key)
    except TypeError:  # an unhashable mode or flag: the checks below name it
        plan = key = None
    if plan is None:
        plan = _interp_plan_of(fn, shape, size, scale_factor, mode, align_corners,
                               recompute_scale_factor)
        if key is not None:
            if len(_PLANS) >= 256:
                _PLANS.clear()
            _PLANS[key] = plan
    return plan


def _interp_plan_of(fn, shape, size, scale_factor, mode, align_corners, recompute_scale_factor):
    """_interp_plan's work."""
    if len(shape) != 4:
        raise ValueError(f"{fn}: expected a 4-D input (N, C, H, W), but got shape {shape}")
    _interp_check(fn, size, scale_factor, mode, align_corners)
    ins = shape[2:]
    if size is not None:
        outs = tuple(int(v) for v in _pair(size, fn, "size"))
        factors = (None, None)
    else:
        factors = tuple(float(v) for v in (scale_factor if isinstance(scale_factor, (tuple, list))
                                            else (scale_factor, scale_factor)))
        if len(factors) != 2 or min(factors) <= 0:
            raise ValueError(f"{fn}: expected scale_factor > 0 (one or two), but got "
                             f"{scale_factor!r}")
        outs = tuple(int(math.floor(n * f)) for n, f in zip(ins, factors))
        if recompute_scale_factor:
            factors = (None, None)
    if min(outs) < 1:
        raise ValueError(f"{fn}: the output size {outs} must be positive (input {ins})")
    return tuple(_axis_taps(n, o, f, mode, bool(align_corners))
                 for n, o, f in zip(ins, outs, factors))


def _axis_taps(n, o, f, mode, align_corners):
    """One axis's taps, read-only arrays (_interp_plan keeps them for later calls). An axis
    that keeps its size is copied whatever the scale factor (PyTorch's kernels skip it: a 4x4
    image by (1.1, 1.1) stays itself)."""
    j = np.arange(o, dtype=np.float32)
    if o == n:
        i0 = np.arange(n, dtype=np.int64)
        taps = (i0, i0, np.ones(o, np.float32), np.zeros(o, np.float32))
    elif mode == "nearest":
        scale = np.float32(1.0 / f if f else n / o)
        i0 = np.minimum(np.floor(j * scale).astype(np.int64), n - 1)
        taps = (i0, i0, np.ones(o, np.float32), np.zeros(o, np.float32))
    else:
        if align_corners:
            scale = np.float32((n - 1) / (o - 1) if o > 1 else 0.0)
            src = j * scale
        else:
            scale = np.float32(1.0 / f if f else n / o)
            src = np.maximum(scale * (j + np.float32(0.5)) - np.float32(0.5), np.float32(0))
        i0 = np.minimum(src.astype(np.int64), n - 1)
        w1 = (src - i0.astype(np.float32)).astype(np.float32)
        taps = (i0, np.minimum(i0 + 1, n - 1), (np.float32(1) - w1).astype(np.float32), w1)
    for a in taps:
        a.setflags(write=False)
    return taps


def interpolate(x: ArrayLike, size=None, scale_factor=None, mode: str = "nearest",
                align_corners: Optional[bool] = None,
                recompute_scale_factor: Optional[bool] = None) -> np.ndarray:
    """Resizes (N, C, H, W) images to ``size`` or by ``scale_factor`` (PyTorch's
    ``interpolate``): ``mode`` "nearest" (source pixel floor(j * in / out)) or "bilinear"
    (``align_corners`` as PyTorch's). Each output reads its (up to) two source pixels per axis,
    so a NaN or Inf reaches only the outputs that read it.

    >>> interpolate(np.arange(4.0).reshape(1, 1, 2, 2), scale_factor=2)[0, 0]
    array([[0., 0., 1., 1.],
           [0., 0., 1., 1.],
           [2., 2., 3., 3.],
           [2., 2., 3., 3.]], dtype=float32)
    """
    x = _as_array(x)
    rows, cols = _interp_plan("interpolate", tuple(np.shape(x)), size, scale_factor, mode,
                              align_corners, recompute_scale_factor)
    return _core.resize2d(x, rows[0], rows[1], rows[2], rows[3], cols[0], cols[1], cols[2],
                          cols[3], mode == "nearest")


def interpolate_backward(grad_out: ArrayLike, x: ArrayLike, size=None, scale_factor=None,
                         mode: str = "nearest", align_corners: Optional[bool] = None,
                         recompute_scale_factor: Optional[bool] = None) -> np.ndarray:
    """Gradient of ``interpolate`` with respect to x: each output's gradient goes back to the
    source pixels it read, times their weights (added in output order).

    >>> interpolate_backward(np.ones((1, 1, 4, 4)), np.zeros((1, 1, 2, 2)), scale_factor=2)[0, 0]
    array([[4., 4.],
           [4., 4.]], dtype=float32)
    """
    shape = tuple(np.shape(_as_array(x)))
    rows, cols = _interp_plan("interpolate_backward", shape, size, scale_factor, mode,
                              align_corners, recompute_scale_factor)
    return _core.resize2d_backward(grad_out, shape[2], shape[3], rows[0], rows[1], rows[2],
                                   rows[3], cols[0], cols[1], cols[2], cols[3],
                                   mode == "nearest")


def adaptive_avg_pool2d(x: ArrayLike, output_size) -> np.ndarray:
    """Adaptive average pooling to ``output_size`` (an int, or a pair where None keeps that
    size): output (i, j) averages rows floor(i*H/P) .. ceil((i+1)*H/P) and likewise columns,
    as PyTorch. ``output_size=1`` is global average pooling.

    >>> adaptive_avg_pool2d(np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4), 1)[0, 0]
    array([[7.5]], dtype=float32)
    """
    fn = "adaptive_avg_pool2d"
    x, unb = _batched(x)
    return _unbatch(_core.adaptive_avg_pool2d(x, *_adaptive_size(fn, x, output_size)), unb)


def adaptive_avg_pool2d_backward(grad_out: ArrayLike, x: ArrayLike, output_size) -> np.ndarray:
    """Gradient of ``adaptive_avg_pool2d``: grad_out (N, C, P, Q) -> grad_x (N, C, H, W).

    >>> adaptive_avg_pool2d_backward(np.ones((1, 1, 1, 1)), np.ones((1, 1, 2, 2)), 1)[0, 0]
    array([[0.25, 0.25],
           [0.25, 0.25]], dtype=float32)
    """
    fn = "adaptive_avg_pool2d_backward"
    x, unb = _batched(x)
    g = _as_array(grad_out)[None] if unb else grad_out
    return _unbatch(_core.adaptive_avg_pool2d_backward(g, x, *_adaptive_size(fn, x, output_size)),
                    unb)


def adaptive_max_pool2d(x: ArrayLike, output_size, return_indices: bool = False):
    """Adaptive max pooling (windows as ``adaptive_avg_pool2d``); with ``return_indices`` it
    returns ``(y, indices)`` into each flattened H*W plane.

    >>> adaptive_max_pool2d(np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4), (1, 2))[0, 0]
    array([[13., 15.]], dtype=float32)
    """
    fn = "adaptive_max_pool2d"
    x, unb = _batched(x)
    return _unbatch(_core.adaptive_max_pool2d(x, *_adaptive_size(fn, x, output_size),
                                              bool(return_indices)), unb)


def adaptive_max_pool2d_backward(grad_out: ArrayLike, x: ArrayLike, output_size) -> np.ndarray:
    """Gradient of ``adaptive_max_pool2d``: each output's gradient goes to its window's first
    maximum.

    >>> x = np.arange(4, dtype=np.float32).reshape(1, 1, 2, 2)
    >>> adaptive_max_pool2d_backward(np.ones((1, 1, 1, 1)), x, 1)[0, 0]
    array([[0., 0.],
           [0., 1.]], dtype=float32)
    """
    fn = "adaptive_max_pool2d_backward"
    x, unb = _batched(x)
    g = _as_array(grad_out)[None] if unb else grad_out
    return _unbatch(_core.adaptive_max_pool2d_backward(g, x, *_adaptive_size(fn, x, output_size)),
                    unb)


# ---- normalisation -----------------------------------------------------------------------------

def batch_norm(x: ArrayLike, running_mean: Optional[np.ndarray], running_var: Optional[np.ndarray],
               weight: Optional[ArrayLike] = None, bias: Optional[ArrayLike] = None,
               training: bool = False, momentum: float = 0.1, eps: float = 1e-5) -> np.ndarray:
    """Batch normalisation of x (N, C) or (N, C, H, W) per channel:
    y = (x - mean) / sqrt(var + eps) * weight + bias.

    Training: mean and the biased variance of the batch; the running arrays (float32 (C,)
    NumPy arrays, or None) are updated in place with the unbiased variance,
    ``r = (1 - momentum) * r + momentum * batch_stat``. Evaluation: the running statistics.

    >>> x = np.array([[1.], [3.]], np.float32); rm, rv = np.zeros(1, np.float32), np.ones(1, np.float32)
    >>> batch_norm(x, rm, rv, training=True)[:, 0], rm, rv
    (array([-0.999995,  0.999995], dtype=float32), array([0.2], dtype=float32), array([1.1], dtype=float32))
    """
    fn = "batch_norm"
    return _core.batch_norm(x, running_mean, running_var, weight, bias, bool(training),
                            _float(momentum, fn, "momentum"), _float(eps, fn, "eps"))


def batch_norm_backward(grad_out: ArrayLike, x: ArrayLike, running_mean: Optional[np.ndarray],
                        running_var: Optional[np.ndarray], weight: Optional[ArrayLike] = None,
                        bias: Optional[ArrayLike] = None, training: bool = False,
                        momentum: float = 0.1, eps: float = 1e-5,
                        input_grad: bool = True) -> Grads:
    """Gradient of ``batch_norm`` -> ``(grad_x, grad_weight or None, grad_bias or None)``. In
    training mode the batch statistics are recomputed from x (the running arrays are not
    touched); in evaluation mode the running statistics are used. ``input_grad=False`` skips
    grad_x (None).

    >>> x = np.array([[1.], [3.]], np.float32)
    >>> batch_norm_backward(np.array([[1.], [0.]]), x, None, None, np.ones(1), np.zeros(1),
    ...                     training=True)[1:]
    (array([-0.999995], dtype=float32), array([1.], dtype=float32))
    """
    fn = "batch_norm_backward"
    _float(momentum, fn, "momentum")
    return _core.batch_norm_backward(grad_out, x, running_mean, running_var, weight, bias,
                                     bool(training), _float(eps, fn, "eps"), bool(input_grad))


# ---- activations -------------------------------------------------------------------------------

def relu(x: ArrayLike) -> np.ndarray:
    """max(x, 0), elementwise, any shape (NaN stays NaN).

    >>> relu(np.array([-1.0, 0.5]))
    array([0. , 0.5], dtype=float32)
    """
    return _core.activation(_RELU, x, 0.0)


def relu_backward(grad_out: ArrayLike, x: ArrayLike) -> np.ndarray:
    """grad_out where x > 0, else 0; grad_out and x of one shape.

    >>> relu_backward(np.ones(2), np.array([-1.0, 0.5]))
    array([0., 1.], dtype=float32)
    """
    return _core.activation_backward(_RELU, grad_out, x, 0.0)


def leaky_relu(x: ArrayLike, negative_slope: float = 0.01) -> np.ndarray:
    """x where x > 0, else negative_slope * x; elementwise, any shape.

    >>> leaky_relu(np.array([-2.0, 3.0]), 0.1)
    array([-0.2,  3. ], dtype=float32)
    """
    return _core.activation(_LEAKY, x, _float(negative_slope, "leaky_relu", "negative_slope"))


def leaky_relu_backward(grad_out: ArrayLike, x: ArrayLike,
                        negative_slope: float = 0.01) -> np.ndarray:
    """grad_out where x > 0, else negative_slope * grad_out.

    >>> leaky_relu_backward(np.ones(2), np.array([-2.0, 3.0]), 0.1)
    array([0.1, 1. ], dtype=float32)
    """
    slope = _float(negative_slope, "leaky_relu_backward", "negative_slope")
    return _core.activation_backward(_LEAKY, grad_out, x, slope)


def sigmoid(x: ArrayLike) -> np.ndarray:
    """1 / (1 + exp(-x)), elementwise, any shape; saturates without overflow.

    >>> sigmoid(np.array([0.0, 100.0]))
    array([0.5, 1. ], dtype=float32)
    """
    return _core.activation(_SIGMOID, x, 0.0)


def sigmoid_backward(grad_out: ArrayLike, x: ArrayLike) -> np.ndarray:
    """grad_out * s * (1 - s) with s = sigmoid(x).

    >>> sigmoid_backward(np.ones(1), np.zeros(1))
    array([0.25], dtype=float32)
    """
    return _core.activation_backward(_SIGMOID, grad_out, x, 0.0)


def tanh(x: ArrayLike) -> np.ndarray:
    """Hyperbolic tangent, elementwise, any shape.

    >>> tanh(np.array([0.0, 20.0]))
    array([0., 1.], dtype=float32)
    """
    return _core.activation(_TANH, x, 0.0)


def tanh_backward(grad_out: ArrayLike, x: ArrayLike) -> np.ndarray:
    """grad_out * (1 - tanh(x)^2).

    >>> tanh_backward(np.ones(1), np.zeros(1))
    array([1.], dtype=float32)
    """
    return _core.activation_backward(_TANH, grad_out, x, 0.0)


def elu(x: ArrayLike, alpha: float = 1.0) -> np.ndarray:
    """x where x > 0, else alpha * (exp(x) - 1); elementwise, any shape.

    >>> elu(np.array([1.0, -50.0]))
    array([ 1., -1.], dtype=float32)
    """
    return _core.activation(_ELU, x, _float(alpha, "elu", "alpha"))


def elu_backward(grad_out: ArrayLike, x: ArrayLike, alpha: float = 1.0) -> np.ndarray:
    """grad_out where x > 0, else grad_out * alpha * exp(x).

    >>> elu_backward(np.ones(2), np.array([1.0, 0.0]))
    array([1., 1.], dtype=float32)
    """
    return _core.activation_backward(_ELU, grad_out, x, _float(alpha, "elu_backward", "alpha"))


# ---- softmax -----------------------------------------------------------------------------------

def softmax(x: ArrayLike, axis: int = -1) -> np.ndarray:
    """exp(x - max) / sum(exp(x - max)) along ``axis``; any shape, the result sums to 1.

    >>> softmax(np.array([[0.0, np.log(3.0)]]))
    array([[0.25, 0.75]], dtype=float32)
    """
    return _core.softmax(x, _int(axis, "softmax", "axis"), False)


def softmax_backward(grad_out: ArrayLike, x: ArrayLike, axis: int = -1) -> np.ndarray:
    """Gradient of ``softmax`` with respect to x: s * (grad_out - sum(grad_out * s)).

    >>> softmax_backward(np.ones((1, 3)), np.zeros((1, 3)))  # a constant shift changes nothing
    array([[0., 0., 0.]], dtype=float32)
    """
    return _core.softmax_backward(grad_out, x, _int(axis, "softmax_backward", "axis"), False)


def log_softmax(x: ArrayLike, axis: int = -1) -> np.ndarray:
    """(x - max) - log(sum(exp(x - max))) along ``axis``: the sum in float64, the two
    subtractions in float32 (both terms are <= 0, so nothing cancels).

    >>> log_softmax(np.array([[0.0, 0.0]]))
    array([[-0.6931472, -0.6931472]], dtype=float32)
    """
    return _core.softmax(x, _int(axis, "log_softmax", "axis"), True)


def log_softmax_backward(grad_out: ArrayLike, x: ArrayLike, axis: int = -1) -> np.ndarray:
    """Gradient of ``log_softmax``: grad_out - softmax(x) * sum(grad_out).

    >>> log_softmax_backward(np.array([[1.0, 0.0]]), np.zeros((1, 2)))
    array([[ 0.5, -0.5]], dtype=float32)
    """
    return _core.softmax_backward(grad_out, x, _int(axis, "log_softmax_backward", "axis"), True)


# ---- linear ------------------------------------------------------------------------------------

def linear(x: ArrayLike, weight: ArrayLike, bias: Optional[ArrayLike] = None) -> np.ndarray:
    """y = x @ weight.T + bias: x (N, in_features), weight (out_features, in_features), bias
    (out_features,) or None -> (N, out_features).

    >>> linear(np.ones((2, 3)), np.ones((4, 3)), np.arange(4.0))
    array([[3., 4., 5., 6.],
           [3., 4., 5., 6.]], dtype=float32)
    """
    return _core.linear(x, weight, bias)


def linear_backward(grad_out: ArrayLike, x: ArrayLike, weight: ArrayLike,
                    bias: Optional[ArrayLike] = None) -> Grads:
    """Gradients of ``linear``: grad_out (N, out) -> (grad_x (N, in), grad_weight (out, in),
    grad_bias (out,) or None).

    >>> gx, gw, gb = linear_backward(np.ones((2, 4)), np.ones((2, 3)), np.ones((4, 3)))
    >>> gx.shape, gw.shape, gb
    ((2, 3), (4, 3), None)
    """
    return _core.linear_backward(grad_out, x, weight, bias)


# ---- losses ------------------------------------------------------------------------------------

_REDUCTIONS = ("mean", "sum", "none")


def _reduction(v, fn):
    if v not in _REDUCTIONS:
        raise ValueError(f"{fn}: reduction must be 'mean', 'sum' or 'none', but got {v!r}")
    return v


def _default_ce(weight, ignore_index, reduction, label_smoothing):
    """The core's plain mean (a negative ignore_index can only meet labels it rejects)."""
    return weight is None and reduction == "mean" and label_smoothing == 0.0 and ignore_index < 0


def cross_entropy(logits: ArrayLike, labels: ArrayLike, weight: Optional[ArrayLike] = None,
                  ignore_index: int = -100, reduction: str = "mean",
                  label_smoothing: float = 0.0) -> Union[float, np.ndarray]:
    """Mean over the batch of -log softmax(logits)[label] (a Python float): logits (N, K),
    integer labels (N,) in [0, K).

    The rest as PyTorch's: ``weight`` (K,) weighs each class (the mean divides by the weights
    of the labels summed); samples whose label is ``ignore_index`` count for nothing;
    ``reduction`` "sum" adds the samples' losses, "none" returns them (N,); with
    ``label_smoothing`` e the target is (1 - e) on the label plus e / K on every class.

    Also PyTorch's other forms: unbatched logits (K,) with one label; logits (N, K, d1, ...)
    with labels (N, d1, ...) (a loss per position: "none" returns (N, d1, ...)); and class
    probabilities as targets, float, of the logits' shape (``ignore_index`` does not apply; the
    mean divides by the number of samples).

    >>> round(cross_entropy(np.zeros((2, 4)), [1, 3]), 6)  # log 4
    1.386294
    >>> round(cross_entropy(np.zeros((2, 4)), [1, -100]), 6), cross_entropy(
    ...     np.zeros((2, 2)), [0, 1], reduction="none")
    (1.386294, array([0.6931472, 0.6931472], dtype=float32))
    >>> cross_entropy(np.zeros((1, 2, 3)), np.zeros((1, 3), np.int64), reduction="none").shape
    (1, 3)
    """
    flat = _ce_flat("cross_entropy", logits, labels, None, reduction)
    if flat is not None:
        x2, y2, _, back = flat
        return back(cross_entropy(x2, y2, weight, ignore_index, reduction, label_smoothing))
    if _soft_targets(logits, labels, ignore_index, "cross_entropy"):
        return _ce_soft("cross_entropy", None, logits, labels, weight, reduction,
                        label_smoothing)
    if _default_ce(weight, ignore_index, reduction, label_smoothing):
        try:
            return _core.cross_entropy(logits, labels)
        except ValueError:
            if not _has_label(labels, ignore_index):
                raise
    return _ce_general("cross_entropy", None, logits, labels, weight, ignore_index, reduction,
                       label_smoothing)


def cross_entropy_backward(grad_out: Union[float, ArrayLike], logits: ArrayLike,
                           labels: ArrayLike, weight: Optional[ArrayLike] = None,
                           ignore_index: int = -100, reduction: str = "mean",
                           label_smoothing: float = 0.0) -> np.ndarray:
    """Gradient of ``cross_entropy`` (grad_out a float; (N,) or a float with reduction
    "none"): (softmax(logits) - onehot) * grad_out / N without the options.

    >>> cross_entropy_backward(1.0, np.zeros((1, 2)), [0])
    array([[-0.5,  0.5]], dtype=float32)
    """
    flat = _ce_flat("cross_entropy_backward", logits, labels, grad_out, reduction)
    if flat is not None:
        x2, y2, g2, back = flat
        return back(cross_entropy_backward(g2, x2, y2, weight, ignore_index, reduction,
                                           label_smoothing))
    if _soft_targets(logits, labels, ignore_index, "cross_entropy_backward"):
        return _ce_soft("cross_entropy_backward", grad_out, logits, labels, weight, reduction,
                        label_smoothing)
    if _default_ce(weight, ignore_index, reduction, label_smoothing):
        g = _float(grad_out, "cross_entropy_backward", "grad_out")
        try:
            return _core.cross_entropy_backward(g, logits, labels)
        except ValueError:
            if not _has_label(labels, ignore_index):
                raise
    return _ce_general("cross_entropy_backward", grad_out, logits, labels, weight,
                       ignore_index, reduction, label_smoothing)


def _ce_flat(fn, logits, labels, grad_out, reduction):
    """PyTorch's other layouts of cross_entropy as the (M, K) one: unbatched logits (K,) and
    logits (N, K, d1, ...) with their labels (or probabilities) -> (logits (M, K), labels,
    grad_out for "none" flattened alike, back: the (M, ...) result in the caller's layout), or
    None for (N, K)."""
    x = _as_array(logits)
    nd = getattr(x, "ndim", 2)
    if nd == 2:
        return None
    none = _reduction(reduction, fn) == "none"
    y = np.asarray(_as_array(labels))
    soft = y.dtype.kind == "f" and y.shape == x.shape
    if nd == 1:  # one sample
        x2, y2 = x.reshape(1, -1), y.reshape((1,) + y.shape)
        lead = ()
    elif nd == 0:
        raise ValueError(f"{fn}: expected logits of shape (N, num_classes), (num_classes,) or "
                         f"(N, num_classes, d1, ...), but got a scalar")
    else:  # (N, K, d1, ...): each position a sample, classes last
        K = x.shape[1]
        lead = (x.shape[0],) + x.shape[2:]
        if not soft and y.shape != lead:
            raise ValueError(f"{fn}: expected labels of shape {lead} to match logits "
                             f"{x.shape}, but got {y.shape}")
        x2 = np.moveaxis(x, 1, -1).reshape(-1, K)
        y2 = np.moveaxis(y, 1, -1).reshape(-1, K) if soft else y.reshape(-1)
    g2 = grad_out
    if grad_out is not None and none:
        g = np.asarray(_as_array(grad_out))
        if g.ndim:
            if g.shape != lead:
                raise ValueError(f"{fn}: expected grad_out of shape {lead} (reduction 'none'), "
                                 f"but got {g.shape}")
            g2 = g.reshape(-1)

    def back(out):
        if grad_out is not None:  # the gradient, (M, K) -> the logits' layout
            if nd == 1:
                return out.reshape(x.shape)
            return np.ascontiguousarray(np.moveaxis(out.reshape(lead + (x.shape[1],)), -1, 1))
        return out.reshape(lead) if none else out
    return x2, y2, g2, back


def _soft_targets(logits, labels, ignore_index, fn):
    """Whether labels are class probabilities: floats of the logits' shape (which take no
    ignore_index, as PyTorch's)."""
    y = np.asarray(_as_array(labels))
    soft = y.dtype.kind == "f" and y.shape == np.shape(_as_array(logits))
    if soft and _int(ignore_index, fn, "ignore_index") != -100:
        raise ValueError(f"{fn}: ignore_index is not supported with class probabilities as "
                         f"targets (float labels of the logits' shape), but got ignore_index="
                         f"{ignore_index}")
    return soft


def _ce_soft(fn, grad_out, logits, targets, weight, reduction, eps):
    """cross_entropy (grad_out None) or its gradient with class probabilities as targets
    (PyTorch's): per sample -sum over classes of w_k t_k log softmax(x)_k, t smoothed to
    (1 - eps) t + eps / K; the mean divides by the number of samples."""
    reduction = _reduction(reduction, fn)
    eps = _label_smoothing(eps, fn)
    x = np.asarray(_as_array(logits), dtype=np.float32)
    N, K = x.shape
    t = np.asarray(_as_array(targets), dtype=np.float64)
    t = (1 - eps) * t + eps / K if eps else t
    w = np.ones(K) if weight is None else np.asarray(_as_array(weight), dtype=np.float64)
    if w.shape != (K,):
        raise ValueError(f"{fn}: expected weight of shape ({K},), but got {w.shape}")
    wt = w * t  # (N, K)
    logp = log_softmax(x).astype(np.float64) if N else np.zeros((0, K))
    if grad_out is None:
        loss = -(wt * logp).sum(1)
        if reduction == "none":
            return loss.astype(np.float32)
        total = loss.sum()
        return float(total) if reduction == "sum" else float(total / N) if N else float("nan")
    if reduction == "none":
        g = np.broadcast_to(np.asarray(_as_array(grad_out), dtype=np.float64), (N,))
    else:
        g = _float(grad_out, fn, "grad_out")
        g = np.full(N, g / N if reduction == "mean" and N else g)
    d = np.exp(logp) * wt.sum(1, keepdims=True) - wt
    return (g[:, None] * d).astype(np.float32)


def _has_label(labels, ignore_index):
    """Whether a label the core refused is ignore_index (the general path then skips it)."""
    return bool(np.any(np.asarray(labels) == ignore_index))


def _ce_general(fn, grad_out, logits, labels, weight, ignore_index, reduction, eps):
    """cross_entropy (grad_out None) or its gradient with PyTorch's options, in float64 from
    the core's float32 log-softmax."""
    reduction = _reduction(reduction, fn)
    eps = _label_smoothing(eps, fn)
    x = _as_array(logits)
    if getattr(x, "ndim", 0) != 2:
        raise ValueError(f"{fn}: expected logits of shape (N, num_classes), but got shape "
                         f"{np.shape(x)}")
    N, K = x.shape
    y = np.asarray(labels)
    if y.size and y.dtype.kind not in "iu":  # (the core's error)
        raise TypeError(f"{fn}: argument 'labels' expected integer class labels, but got dtype "
                        f"{y.dtype}")
    if y.shape != (N,):
        raise ValueError(f"{fn}: expected labels of shape ({N},) to match logits "
                         f"{tuple(x.shape)}, but got {y.shape}")
    y = y.astype(np.int64)
    valid = y != ignore_index
    bad = valid & ((y < 0) | (y >= K))
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{fn}: labels[{i}] = {y[i]} is out of range: expected a class in "
                         f"[0, {K - 1}] or ignore_index ({ignore_index})")
    w = np.ones(K) if weight is None else np.asarray(_as_array(weight), dtype=np.float64)
    if w.shape != (K,):
        raise ValueError(f"{fn}: expected weight of shape ({K},), but got {w.shape}")
    yv = np.where(valid, y, 0)
    wy = np.where(valid, w[yv], 0.0)  # each sample's weight, 0 where ignored
    denom = wy.sum()
    logp = log_softmax(x).astype(np.float64) if N else np.zeros((0, K))
    if grad_out is None:
        loss = -wy * logp[np.arange(N), yv]
        if eps:
            loss = (1 - eps) * loss - eps / K * np.where(valid, (logp * w).sum(1), 0.0)
        if reduction == "none":
            return loss.astype(np.float32)
        total = loss.sum()
        return float(total) if reduction == "sum" else float(total / denom) if denom else \
            float("nan")
    if reduction == "none":
        g = np.broadcast_to(np.asarray(_as_array(grad_out), dtype=np.float64), (N,))
    else:
        g = _float(grad_out, fn, "grad_out")
        g = np.full(N, (g / denom if denom else 0.0) if reduction == "mean" else g)
    p = np.exp(logp)
    onehot = np.zeros((N, K))
    onehot[np.arange(N), yv] = 1.0
    d = (1 - eps) * wy[:, None] * (p - onehot)
    if eps:
        d += eps / K * (w.sum() * p - w)
    return (np.where(valid, g, 0.0)[:, None] * d).astype(np.float32)


def _label_smoothing(eps, fn):
    eps = _float(eps, fn, "label_smoothing")
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"{fn}: label_smoothing must be in [0, 1], but got {eps}")
    return eps


def _reduce_elementwise(loss, reduction):
    """loss (float64 elements) reduced as PyTorch's ``reduction``."""
    if reduction == "none":
        return loss.astype(np.float32)
    return float(loss.sum()) if reduction == "sum" else \
        float(loss.sum() / loss.size) if loss.size else float("nan")


def _grad_scale(fn, grad_out, shape, n, reduction):
    """d loss / d element for each element: grad_out / n (mean), grad_out (sum), or
    grad_out itself (none: an array of the elements' shape, or a float)."""
    if reduction == "none":
        return np.broadcast_to(np.asarray(_as_array(grad_out), dtype=np.float64), shape)
    g = _float(grad_out, fn, "grad_out")
    return (g / n if n else 0.0) if reduction == "mean" else g


def binary_cross_entropy_with_logits(logits: ArrayLike, targets: ArrayLike,
                                     weight: Optional[ArrayLike] = None, reduction: str = "mean",
                                     pos_weight: Optional[ArrayLike] = None
                                     ) -> Union[float, np.ndarray]:
    """Mean of max(x, 0) - x*t + log(1 + exp(-|x|)) (a float): logits and targets of one shape.
    ``weight`` (broadcast to them) scales each element's loss and ``pos_weight`` (broadcast, e.g.
    one per class on the last axis) the positive term, -p t log sigmoid(x) - (1 - t)
    log(1 - sigmoid(x)); ``reduction`` as ``cross_entropy``'s (PyTorch's).

    >>> round(binary_cross_entropy_with_logits(np.zeros(3), np.ones(3)), 6)  # log 2
    0.693147
    """
    if weight is None and pos_weight is None and reduction == "mean":
        return _core.bce_with_logits(logits, targets)
    x, t = _pair_args("binary_cross_entropy_with_logits", logits, "logits", targets, "targets")
    sp_pos, sp_neg = np.logaddexp(0, -x), np.logaddexp(0, x)  # -log sigmoid(x), -log(1 - ...)
    pw = 1.0 if pos_weight is None else np.asarray(_as_array(pos_weight), dtype=np.float64)
    loss = pw * t * sp_pos + (1 - t) * sp_neg
    if weight is not None:
        loss = loss * np.asarray(_as_array(weight), dtype=np.float64)
    return _reduce_elementwise(loss, _reduction(reduction, "binary_cross_entropy_with_logits"))


def binary_cross_entropy_with_logits_backward(grad_out: Union[float, ArrayLike],
                                              logits: ArrayLike, targets: ArrayLike,
                                              weight: Optional[ArrayLike] = None,
                                              reduction: str = "mean",
                                              pos_weight: Optional[ArrayLike] = None
                                              ) -> np.ndarray:
    """Gradient of ``binary_cross_entropy_with_logits``: (sigmoid(x) - t) * grad_out / n
    without the options.

    >>> binary_cross_entropy_with_logits_backward(1.0, np.zeros(2), np.ones(2))
    array([-0.25, -0.25], dtype=float32)
    """
    fn = "binary_cross_entropy_with_logits_backward"
    if weight is None and pos_weight is None and reduction == "mean":
        g = _float(grad_out, fn, "grad_out")
        return _core.bce_with_logits_backward(g, logits, targets)
    x, t = _pair_args(fn, logits, "logits", targets, "targets")
    sig = 0.5 * (1 + np.tanh(0.5 * x))  # sigmoid without overflow
    pw = 1.0 if pos_weight is None else np.asarray(_as_array(pos_weight), dtype=np.float64)
    d = (1 - t) * sig - pw * t * (1 - sig)
    if weight is not None:
        d = d * np.asarray(_as_array(weight), dtype=np.float64)
    d = d * _grad_scale(fn, grad_out, x.shape, x.size, _reduction(reduction, fn))
    return np.broadcast_to(d, x.shape).astype(np.float32)


def mse_loss(pred: ArrayLike, target: ArrayLike, reduction: str = "mean"
             ) -> Union[float, np.ndarray]:
    """Mean of squared differences (a float); pred and target of one shape. ``reduction`` as
    ``cross_entropy``'s (PyTorch's).

    >>> mse_loss(np.array([1.0, 3.0]), np.array([0.0, 0.0]))
    5.0
    """
    if reduction == "mean":
        return _core.mse_loss(pred, target)
    a, b = _pair_args("mse_loss", pred, "pred", target, "target")
    return _reduce_elementwise((a - b) ** 2, _reduction(reduction, "mse_loss"))


def mse_loss_backward(grad_out: Union[float, ArrayLike], pred: ArrayLike, target: ArrayLike,
                      reduction: str = "mean") -> np.ndarray:
    """Gradient of ``mse_loss``: 2 * (pred - target) * grad_out / n.

    >>> mse_loss_backward(1.0, np.array([1.0, 3.0]), np.zeros(2))
    array([1., 3.], dtype=float32)
    """
    if reduction == "mean":
        g = _float(grad_out, "mse_loss_backward", "grad_out")
        return _core.mse_loss_backward(g, pred, target)
    a, b = _pair_args("mse_loss_backward", pred, "pred", target, "target")
    scale = _grad_scale("mse_loss_backward", grad_out, a.shape, a.size,
                        _reduction(reduction, "mse_loss_backward"))
    return np.broadcast_to(2 * (a - b) * scale, a.shape).astype(np.float32)


def _pair_args(fn, a, an, b, bn):
    """Two arrays of one shape, in float64, or the ValueError the core gives."""
    a, b = np.asarray(_as_array(a), dtype=np.float64), np.asarray(_as_array(b), dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"{fn}: expected {bn} of the same shape as {an} {a.shape}, but got "
                         f"{b.shape}")
    return a, b


# ---- dropout -----------------------------------------------------------------------------------

def dropout(x: ArrayLike, p: float = 0.5, training: bool = True,
            seed: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Inverted dropout -> (y, mask), both shaped like x: kept values scaled by 1/(1-p); mask
    is 1.0 where kept. The same seed gives the same mask for any thread count.

    With training=False (or p=0) y is a copy of x and the mask is all ones. seed=None draws one
    from the generator that convkit.manual_seed seeds.

    >>> y, mask = dropout(np.ones(4), p=0.5, seed=1)
    >>> sorted(set(y.tolist())) in ([0.0, 2.0], [2.0], [0.0])
    True
    """
    p = _float(p, "dropout", "p")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: expected dropout probability p in [0, 1], but got {p}")
    if not training:
        return _core.dropout(x, 0.0, 0)  # keeps everything: a float32 copy and a mask of ones
    if seed is None:
        from . import _generator
        seed = int(_generator().integers(0, 2**63 - 1))
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"dropout: argument 'seed' expected an int, but got {seed!r}")
    return _core.dropout(x, p, int(seed) & (2**64 - 1))  # any int: its low 64 bits


def dropout_backward(grad_out: ArrayLike, mask: ArrayLike, p: float) -> np.ndarray:
    """Gradient of ``dropout``: grad_out * mask / (1 - p), with the forward's mask.

    >>> dropout_backward(np.ones(2), np.array([1.0, 0.0]), 0.5)
    array([2., 0.], dtype=float32)
    """
    p = _float(p, "dropout_backward", "p")
    return _core.dropout_backward(grad_out, mask, p)
