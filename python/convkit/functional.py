"""The function API: forward ops and their gradients, on NumPy arrays.

Each ``f_backward(grad_out, *inputs, **kw)`` takes the forward's own inputs and returns the
gradients of the array inputs in order (a tuple when there are several). Inputs of any numeric
dtype or layout are converted to C-contiguous float32; results are new float32 arrays. This module
only normalises arguments; validation and computation happen in ``convkit._core``.
"""
from __future__ import annotations

import numbers

import numpy as np

from . import _core

__all__ = [
    "conv2d", "conv2d_backward", "conv_transpose2d", "conv_transpose2d_backward", "max_pool2d", "max_pool2d_backward", "avg_pool2d",
    "avg_pool2d_backward", "relu", "relu_backward", "leaky_relu", "leaky_relu_backward",
    "sigmoid", "sigmoid_backward", "tanh", "tanh_backward", "elu", "elu_backward", "softmax",
    "softmax_backward", "log_softmax", "log_softmax_backward", "linear", "linear_backward",
    "cross_entropy", "cross_entropy_backward", "binary_cross_entropy_with_logits",
    "binary_cross_entropy_with_logits_backward", "mse_loss", "mse_loss_backward", "dropout",
    "dropout_backward",
]

_RELU, _LEAKY, _SIGMOID, _TANH, _ELU = range(5)


def _int(v, fn: str, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{fn}: argument '{name}' expected an int or a pair of ints, "
                        f"but got {v!r}")
    return int(v)


def _pair(v, fn: str, name: str) -> tuple[int, int]:
    """int or (h, w) pair -> (h, w)."""
    if isinstance(v, (tuple, list, np.ndarray)):
        if len(v) != 2:
            raise ValueError(f"{fn}: argument '{name}' expected an int or a pair of ints, "
                             f"but got {tuple(v)!r} with {len(v)} elements")
        return _int(v[0], fn, name), _int(v[1], fn, name)
    i = _int(v, fn, name)
    return i, i


def _float(v, fn: str, name: str) -> float:
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
    x = _as_array(x)
    unbatched = getattr(x, "ndim", 0) == 3
    if unbatched:
        x = x[None]
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
    """Array-likes (incl. framework tensors with __array__) as an ndarray, without a copy when
    possible; the binding converts the dtype and layout."""
    if x is None or isinstance(x, np.ndarray):
        return x
    try:
        return np.asarray(x)
    except Exception:  # let the binding name the argument in its TypeError
        return x if hasattr(x, "ndim") else np.asarray(x, dtype=object)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
           padding_mode="zeros"):
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


def conv2d_backward(grad_out, x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
                    padding_mode="zeros", input_grad=True):
    """Gradients of ``conv2d`` -> (grad_x or None, grad_weight, grad_bias or None).

    Takes conv2d's own arguments. With ``input_grad=False`` grad_x is not computed (None): the
    first layer of a network needs no input gradient.
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


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
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


def conv_transpose2d_backward(grad_out, x, weight, bias=None, stride=1, padding=0,
                              output_padding=0, groups=1, dilation=1, input_grad=True):
    """Gradients of ``conv_transpose2d`` -> (grad_x or None, grad_weight, grad_bias or None)."""
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
    sh, sw = (kh, kw) if stride is None else _pair(stride, fn, "stride")
    ph, pw = _pair(padding, fn, "padding")
    return kh, kw, sh, sw, ph, pw


def max_pool2d(x, kernel_size, stride=None, padding=0):
    """Max pooling; padding counts as -inf; stride=None means stride=kernel_size."""
    return _core.max_pool2d(x, *_pool_args("max_pool2d", kernel_size, stride, padding))


def max_pool2d_backward(grad_out, x, kernel_size, stride=None, padding=0):
    """Sends each output's gradient to the first maximum of its window (row-major)."""
    args = _pool_args("max_pool2d_backward", kernel_size, stride, padding)
    return _core.max_pool2d_backward(grad_out, x, *args)


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    """Average pooling with count_include_pad=True (padding counts as zeros)."""
    return _core.avg_pool2d(x, *_pool_args("avg_pool2d", kernel_size, stride, padding))


def avg_pool2d_backward(grad_out, x, kernel_size, stride=None, padding=0):
    args = _pool_args("avg_pool2d_backward", kernel_size, stride, padding)
    return _core.avg_pool2d_backward(grad_out, x, *args)


# ---- activations -------------------------------------------------------------------------------

def relu(x):
    return _core.activation(_RELU, x, 0.0)


def relu_backward(grad_out, x):
    return _core.activation_backward(_RELU, grad_out, x, 0.0)


def leaky_relu(x, negative_slope=0.01):
    return _core.activation(_LEAKY, x, _float(negative_slope, "leaky_relu", "negative_slope"))


def leaky_relu_backward(grad_out, x, negative_slope=0.01):
    slope = _float(negative_slope, "leaky_relu_backward", "negative_slope")
    return _core.activation_backward(_LEAKY, grad_out, x, slope)


def sigmoid(x):
    return _core.activation(_SIGMOID, x, 0.0)


def sigmoid_backward(grad_out, x):
    return _core.activation_backward(_SIGMOID, grad_out, x, 0.0)


def tanh(x):
    return _core.activation(_TANH, x, 0.0)


def tanh_backward(grad_out, x):
    return _core.activation_backward(_TANH, grad_out, x, 0.0)


def elu(x, alpha=1.0):
    return _core.activation(_ELU, x, _float(alpha, "elu", "alpha"))


def elu_backward(grad_out, x, alpha=1.0):
    return _core.activation_backward(_ELU, grad_out, x, _float(alpha, "elu_backward", "alpha"))


# ---- softmax -----------------------------------------------------------------------------------

def softmax(x, axis=-1):
    return _core.softmax(x, _int(axis, "softmax", "axis"), False)


def softmax_backward(grad_out, x, axis=-1):
    return _core.softmax_backward(grad_out, x, _int(axis, "softmax_backward", "axis"), False)


def log_softmax(x, axis=-1):
    return _core.softmax(x, _int(axis, "log_softmax", "axis"), True)


def log_softmax_backward(grad_out, x, axis=-1):
    return _core.softmax_backward(grad_out, x, _int(axis, "log_softmax_backward", "axis"), True)


# ---- linear ------------------------------------------------------------------------------------

def linear(x, weight, bias=None):
    """y = x @ weight.T + bias; x (..., in_features), weight (out_features, in_features)."""
    return _core.linear(x, weight, bias)


def linear_backward(grad_out, x, weight, bias=None):
    """-> (grad_x, grad_weight, grad_bias or None)."""
    return _core.linear_backward(grad_out, x, weight, bias)


# ---- losses ------------------------------------------------------------------------------------

def cross_entropy(logits, labels):
    """Mean over the batch of -log softmax(logits)[label]; logits (N, K), integer labels (N,)."""
    return _core.cross_entropy(logits, labels)


def cross_entropy_backward(grad_out, logits, labels):
    g = _float(grad_out, "cross_entropy_backward", "grad_out")
    return _core.cross_entropy_backward(g, logits, labels)


def binary_cross_entropy_with_logits(logits, targets):
    """Mean of the numerically stable max(x,0) - x*t + log(1 + exp(-|x|))."""
    return _core.bce_with_logits(logits, targets)


def binary_cross_entropy_with_logits_backward(grad_out, logits, targets):
    g = _float(grad_out, "binary_cross_entropy_with_logits_backward", "grad_out")
    return _core.bce_with_logits_backward(g, logits, targets)


def mse_loss(pred, target):
    """Mean of squared differences."""
    return _core.mse_loss(pred, target)


def mse_loss_backward(grad_out, pred, target):
    g = _float(grad_out, "mse_loss_backward", "grad_out")
    return _core.mse_loss_backward(g, pred, target)


# ---- dropout -----------------------------------------------------------------------------------

def dropout(x, p=0.5, training=True, seed=None):
    """Inverted dropout -> (y, mask): kept values scaled by 1/(1-p); mask is 1.0 where kept.

    With training=False (or p=0) y is a copy of x and the mask is all ones. seed=None draws one
    from the generator that convkit.manual_seed seeds.
    """
    p = _float(p, "dropout", "p")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: expected dropout probability p in [0, 1], but got {p}")
    if not training:
        return _core.dropout(x, 0.0, 0)  # keeps everything: a float32 copy and a mask of ones
    if seed is None:
        from . import _generator
        seed = int(_generator().integers(0, 2**63 - 1))
    return _core.dropout(x, p, _int(seed, "dropout", "seed") & (2**64 - 1))


def dropout_backward(grad_out, mask, p):
    p = _float(p, "dropout_backward", "p")
    return _core.dropout_backward(grad_out, mask, p)
