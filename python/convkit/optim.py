"""Optimizers with PyTorch's update equations, applied in place (no new parameter arrays per step).

Each optimizer keeps its state arrays (momentum, running averages) allocated once, and one scratch
array per parameter, and updates ``param.data`` with NumPy's in-place ufuncs.
"""
from __future__ import annotations

import math
from typing import Iterable, List

import numpy as np

from . import nn  # noqa: F401  (the docstring examples)

__all__ = ["Optimizer", "SGD", "Adam", "Adagrad", "RMSprop", "Adadelta", "clip_max_norm", "StepLR"]


def _check(name, value, low=0.0):
    if not (isinstance(value, (int, float, np.floating)) and value >= low):
        raise ValueError(f"{name}: expected a number >= {low}, but got {value!r}")
    return float(value)


class Optimizer:
    """Base class: holds the parameters (``model.parameters()``) and the learning rate;
    ``step()`` updates every parameter from its ``.grad``, ``zero_grad()`` clears the grads.

    >>> opt = SGD(nn.Linear(3, 1).parameters(), lr=0.1); opt.zero_grad(); opt.step()
    """

    def __init__(self, params: Iterable, lr: float):
        name = type(self).__name__
        if hasattr(params, "parameters") and hasattr(params, "forward"):
            raise TypeError(f"{name}: expected an iterable of Parameters, but got the module "
                            f"{type(params).__name__}; pass model.parameters()")
        try:
            self.params = list(params)
        except TypeError:
            raise TypeError(f"{name}: expected an iterable of Parameters (model.parameters()), "
                            f"but got {type(params).__name__}") from None
        if not self.params:
            raise ValueError(f"{name}: got an empty parameter list")
        for i, p in enumerate(self.params):
            if not (hasattr(p, "data") and hasattr(p, "grad")):
                raise TypeError(f"{name}: parameter {i} is a {type(p).__name__}, not a Parameter "
                                f"with .data and .grad; pass model.parameters()")
        self.lr = _check(f"{type(self).__name__}: lr", lr)
        self.step_count = 0
        self._tmp = [np.empty_like(p.data) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad.fill(0.0)

    def _grad(self, i, p, weight_decay):
        """The gradient with weight decay folded in (in scratch memory when decay is on)."""
        if weight_decay == 0.0:
            return p.grad
        g = self._tmp[i]
        np.multiply(p.data, weight_decay, out=g)
        g += p.grad
        return g

    def step(self) -> None:
        self.step_count += 1
        for i, p in enumerate(self.params):
            self._update(i, p)

    def _update(self, i, p):
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, Nesterov momentum, dampening and
    weight decay; PyTorch's update: buf = momentum*buf + (1 - dampening)*g, p -= lr*buf.

    >>> model = nn.Linear(3, 1); model(np.ones((2, 3), np.float32))
    ... # doctest: +ELLIPSIS
    array(...)
    >>> model.backward(np.ones((2, 1), np.float32)) is not None
    True
    >>> SGD(model.parameters(), lr=0.01, momentum=0.9).step()
    """

    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0, dampening=0.0):
        super().__init__(params, lr)
        self.momentum = _check("SGD: momentum", momentum)
        self.weight_decay = _check("SGD: weight_decay", weight_decay)
        self.dampening = _check("SGD: dampening", dampening)
        self.nesterov = bool(nesterov)
        if self.nesterov and (self.momentum == 0.0 or self.dampening != 0.0):
            raise ValueError("SGD: nesterov momentum requires momentum > 0 and dampening = 0")
        self._buf = [None] * len(self.params)
        self._upd = [np.empty_like(p.data) for p in self.params]

    def _update(self, i, p):
        g = self._grad(i, p, self.weight_decay)
        upd = self._upd[i]
        if self.momentum != 0.0:
            buf = self._buf[i]
            if buf is None:  # first step: the buffer starts as the gradient itself
                buf = self._buf[i] = g.copy()
            else:
                buf *= np.float32(self.momentum)
                if self.dampening:
                    np.multiply(g, np.float32(1.0 - self.dampening), out=upd)
                    buf += upd
                else:
                    buf += g
            if self.nesterov:  # g + momentum * buf
                np.multiply(buf, np.float32(self.momentum), out=upd)
                upd += g
                g = upd
            else:
                g = buf
        np.multiply(g, np.float32(self.lr), out=upd)
        p.data -= upd


class Adam(Optimizer):
    """Adam (PyTorch's equations, bias-corrected moments; weight decay added to the gradient).

    >>> model = nn.Linear(3, 1); model(np.ones((2, 3), np.float32))
    ... # doctest: +ELLIPSIS
    array(...)
    >>> model.backward(np.ones((2, 1), np.float32)) is not None
    True
    >>> Adam(model.parameters(), lr=1e-3).step()
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr)
        self.beta1, self.beta2 = (_check("Adam: betas", b) for b in betas)
        self.eps = _check("Adam: eps", eps)
        self.weight_decay = _check("Adam: weight_decay", weight_decay)
        self._m = [np.zeros_like(p.data) for p in self.params]
        self._v = [np.zeros_like(p.data) for p in self.params]
        self._d = [np.empty_like(p.data) for p in self.params]

    def _update(self, i, p):
        g = self._grad(i, p, self.weight_decay)
        m, v, d = self._m[i], self._v[i], self._d[i]
        b1, b2, t = self.beta1, self.beta2, self.step_count
        np.subtract(g, m, out=d)
        d *= np.float32(1.0 - b1)
        m += d                                        # m.lerp_(g, 1 - b1)
        v *= np.float32(b2)
        np.multiply(g, g, out=d)
        d *= np.float32(1.0 - b2)
        v += d                                        # v = b2 v + (1 - b2) g^2
        bc1 = 1.0 - b1 ** t
        bc2_sqrt = math.sqrt(1.0 - b2 ** t)
        np.sqrt(v, out=d)
        d /= np.float32(bc2_sqrt)
        d += np.float32(self.eps)                     # denom = sqrt(v) / sqrt(bc2) + eps
        np.divide(m, d, out=d)
        d *= np.float32(self.lr / bc1)
        p.data -= d


class Adagrad(Optimizer):
    """Adagrad: p -= lr * g / (sqrt(sum of g^2) + eps) (PyTorch's equations).

    >>> model = nn.Linear(3, 1); model(np.ones((2, 3), np.float32))
    ... # doctest: +ELLIPSIS
    array(...)
    >>> model.backward(np.ones((2, 1), np.float32)) is not None
    True
    >>> Adagrad(model.parameters(), lr=1e-2).step()
    """

    def __init__(self, params, lr=1e-2, eps=1e-10, weight_decay=0.0):
        super().__init__(params, lr)
        self.eps = _check("Adagrad: eps", eps)
        self.weight_decay = _check("Adagrad: weight_decay", weight_decay)
        self._sum = [np.zeros_like(p.data) for p in self.params]
        self._d = [np.empty_like(p.data) for p in self.params]

    def _update(self, i, p):
        g = self._grad(i, p, self.weight_decay)
        s, d = self._sum[i], self._d[i]
        np.multiply(g, g, out=d)
        s += d
        np.sqrt(s, out=d)
        d += np.float32(self.eps)
        np.divide(g, d, out=d)
        d *= np.float32(self.lr)
        p.data -= d


class RMSprop(Optimizer):
    """RMSprop: a running average of g^2 with decay alpha, optional momentum (PyTorch's).

    >>> model = nn.Linear(3, 1); model(np.ones((2, 3), np.float32))
    ... # doctest: +ELLIPSIS
    array(...)
    >>> model.backward(np.ones((2, 1), np.float32)) is not None
    True
    >>> RMSprop(model.parameters(), lr=1e-2).step()
    """

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, momentum=0.0, weight_decay=0.0):
        super().__init__(params, lr)
        self.alpha = _check("RMSprop: alpha", alpha)
        self.eps = _check("RMSprop: eps", eps)
        self.momentum = _check("RMSprop: momentum", momentum)
        self.weight_decay = _check("RMSprop: weight_decay", weight_decay)
        self._sq = [np.zeros_like(p.data) for p in self.params]
        self._buf = [np.zeros_like(p.data) for p in self.params]
        self._d = [np.empty_like(p.data) for p in self.params]

    def _update(self, i, p):
        g = self._grad(i, p, self.weight_decay)
        sq, d = self._sq[i], self._d[i]
        sq *= np.float32(self.alpha)
        np.multiply(g, g, out=d)
        d *= np.float32(1.0 - self.alpha)
        sq += d
        np.sqrt(sq, out=d)
        d += np.float32(self.eps)
        np.divide(g, d, out=d)                        # g / (sqrt(sq) + eps)
        if self.momentum > 0.0:
            buf = self._buf[i]
            buf *= np.float32(self.momentum)
            buf += d
            np.multiply(buf, self.lr, out=d)
        else:
            d *= np.float32(self.lr)
        p.data -= d


class Adadelta(Optimizer):
    """Adadelta: running averages of g^2 and of the squared updates (PyTorch's equations).

    >>> model = nn.Linear(3, 1); model(np.ones((2, 3), np.float32))
    ... # doctest: +ELLIPSIS
    array(...)
    >>> model.backward(np.ones((2, 1), np.float32)) is not None
    True
    >>> Adadelta(model.parameters(), lr=1.0).step()
    """

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0):
        super().__init__(params, lr)
        self.rho = _check("Adadelta: rho", rho)
        self.eps = _check("Adadelta: eps", eps)
        self.weight_decay = _check("Adadelta: weight_decay", weight_decay)
        self._sq = [np.zeros_like(p.data) for p in self.params]
        self._acc = [np.zeros_like(p.data) for p in self.params]
        self._d = [np.empty_like(p.data) for p in self.params]
        self._e = [np.empty_like(p.data) for p in self.params]

    def _update(self, i, p):
        g = self._grad(i, p, self.weight_decay)
        sq, acc, d, e = self._sq[i], self._acc[i], self._d[i], self._e[i]
        rho = np.float32(self.rho)
        sq *= rho
        np.multiply(g, g, out=d)
        d *= np.float32(1.0 - self.rho)
        sq += d                                       # sq = rho sq + (1 - rho) g^2
        np.add(sq, np.float32(self.eps), out=e)
        np.sqrt(e, out=e)                             # std = sqrt(sq + eps)
        np.add(acc, np.float32(self.eps), out=d)
        np.sqrt(d, out=d)
        d /= e
        d *= g                                        # delta = sqrt(acc + eps) / std * g
        acc *= rho
        np.multiply(d, d, out=e)
        e *= np.float32(1.0 - self.rho)
        acc += e                                      # acc = rho acc + (1 - rho) delta^2
        d *= np.float32(self.lr)
        p.data -= d


def clip_max_norm(params: Iterable, max_norm: float) -> float:
    """Scales the gradients so that their total L2 norm is at most max_norm (as PyTorch's
    clip_grad_norm_: factor max_norm / (norm + 1e-6), applied only when it is below 1).
    Returns the total norm before clipping.

    >>> p = nn.Parameter(np.zeros(2)); p.grad[:] = [3.0, 4.0]
    >>> clip_max_norm([p], 1.0), p.grad.round(3)
    (5.0, array([0.6, 0.8], dtype=float32))
    """
    max_norm = _check("clip_max_norm: max_norm", max_norm)
    params = [p for p in params]
    total = math.sqrt(sum(float(np.dot(p.grad.ravel().astype(np.float64),
                                       p.grad.ravel().astype(np.float64))) for p in params))
    coef = max_norm / (total + 1e-6)
    if coef < 1.0:
        for p in params:
            p.grad *= np.float32(coef)
    return total


class StepLR:
    """lr = initial_lr * gamma ** (epoch // step_size); call step() once per epoch.

    >>> opt = SGD(nn.Linear(2, 1).parameters(), lr=0.1); sched = StepLR(opt, 2, gamma=0.5)
    >>> [sched.step() or round(opt.lr, 3) for _ in range(4)]
    [0.1, 0.05, 0.05, 0.025]
    """

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1):
        if int(step_size) < 1:
            raise ValueError(f"StepLR: expected step_size >= 1, but got {step_size}")
        self.optimizer, self.step_size, self.gamma = optimizer, int(step_size), float(gamma)
        self.base_lr = optimizer.lr
        self.last_epoch = 0

    def step(self):
        self.last_epoch += 1
        self.optimizer.lr = self.base_lr * self.gamma ** (self.last_epoch // self.step_size)

    def get_last_lr(self) -> List[float]:
        return [self.optimizer.lr]
