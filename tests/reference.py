"""Plain float64 NumPy references, independent of the C++ code."""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def conv2d(x, w, b=None, stride=(1, 1), padding=(0, 0)):
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    sh, sw = stride
    ph, pw = padding
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    win = sliding_window_view(xp, w.shape[2:], axis=(2, 3))[:, :, ::sh, ::sw]  # N C P Q R S
    y = np.einsum("ncpqrs,kcrs->nkpq", win, w)
    if b is not None:
        y = y + np.asarray(b, np.float64)[None, :, None, None]
    return y


def pool2d(x, k, stride, padding, op):
    x = np.asarray(x, np.float64)
    (kh, kw), (sh, sw), (ph, pw) = k, stride, padding
    fill = -np.inf if op == "max" else 0.0
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    win = sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]
    return win.max(axis=(-1, -2)) if op == "max" else win.mean(axis=(-1, -2))


def softmax(x, axis=-1):
    x = np.asarray(x, np.float64)
    m = x.max(axis=axis, keepdims=True)
    e = np.exp(x - m)
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax(x, axis=-1):
    x = np.asarray(x, np.float64)
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


def cross_entropy(logits, labels):
    ls = log_softmax(logits, axis=1)
    return float(-ls[np.arange(len(labels)), labels].mean())
