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
    "conv2d", "conv2d_backward", "max_pool2d", "max_pool2d_backward", "avg_pool2d",
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

def _conv_padding(padding, weight, stride, fn):
    """int, (h, w), or PyTorch's strings: 'valid' (no padding) and 'same' (stride 1, odd kernel)."""
    if isinstance(padding, str):
        if padding == "valid":
            return 0, 0
        if padding == "same":
            shape = np.shape(weight)
            if stride != (1, 1) or len(shape) != 4 or shape[2] % 2 == 0 or shape[3] % 2 == 0:
                raise ValueError(f"{fn}: padding='same' needs stride 1 and an odd kernel size "
                                 f"(convkit pads symmetrically), but got stride {stride} and "
                                 f"weight of shape {tuple(shape)}")
            return (shape[2] - 1) // 2, (shape[3] - 1) // 2
        raise ValueError(f"{fn}: expected padding to be an int, a pair, 'valid' or 'same', "
                         f"but got {padding!r}")
    return _pair(padding, fn, "padding")


def conv2d(x, weight, bias=None, stride=1, padding=0):
    """2-D convolution (cross-correlation, as PyTorch). x (N,C,H,W), weight (K,C,R,S) -> (N,K,P,Q).

    stride and padding: an int or an (h, w) pair; padding may also be 'valid' or 'same'.
    """
    sh, sw = _pair(stride, "conv2d", "stride")
    ph, pw = _conv_padding(padding, weight, (sh, sw), "conv2d")
    return _core.conv2d(x, weight, bias, sh, sw, ph, pw)


def conv2d_backward(grad_out, x, weight, bias=None, stride=1, padding=0):
    """-> (grad_x, grad_weight, grad_bias or None)."""
    sh, sw = _pair(stride, "conv2d_backward", "stride")
    ph, pw = _conv_padding(padding, weight, (sh, sw), "conv2d_backward")
    return _core.conv2d_backward(grad_out, x, weight, bias, sh, sw, ph, pw)


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
