"""Optimizers with PyTorch's update equations, applied in place (no new parameter arrays per step).

Each optimizer keeps its state arrays (momentum, running averages) allocated once, and one scratch
array per parameter, and updates ``param.data`` with NumPy's in-place ufuncs.
"""
from __future__ import annotations

import bisect
import math
import types
from collections import Counter
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import numpy as np

from . import _core, nn  # noqa: F401  (nn: the docstring examples)

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "Adagrad", "RMSprop", "Adadelta",
           "clip_grad_norm_", "clip_max_norm", "LRScheduler", "StepLR", "MultiStepLR",
           "ExponentialLR", "LinearLR", "LambdaLR", "CosineAnnealingLR", "OneCycleLR",
           "SequentialLR", "ReduceLROnPlateau"]


def _check(name, value, low=0.0):
    if isinstance(value, bool) or not (isinstance(value, (int, float, np.floating, np.integer))
                                       and value >= low):
        raise ValueError(f"{name}: expected a number >= {low}, but got {value!r}")
    return float(value)


def _scalar(v):
    """A state entry that is a number (PyTorch keeps "step" as a 0-d tensor)."""
    if hasattr(v, "item"):
        v = v.item()
    return float(v)


def _plain(a) -> bool:
    """A float32 C-contiguous ndarray: what the core updates in place."""
    return type(a) is np.ndarray and a.dtype == np.float32 and a.flags.c_contiguous


class Optimizer:
    """Base class: parameter groups (``param_groups``, PyTorch's layout: each a dict with
    ``"params"`` and the hyperparameters), per-parameter ``state``, ``step()`` updates every
    parameter from its ``.grad``, ``zero_grad()`` clears the grads.

    ``params`` is ``model.parameters()`` or a list of dicts ``{"params": [...], "lr": ...}``
    whose entries override the constructor's defaults for that group. ``opt.lr`` reads the
    first group's learning rate; setting it sets every group's.

    >>> opt = SGD(nn.Linear(3, 1).parameters(), lr=0.1); opt.zero_grad(); opt.step()
    >>> opt.param_groups[0]["lr"], sorted(opt.state_dict())
    (0.1, ['param_groups', 'state'])
    """

    #: PyTorch's names of the per-parameter state entries this optimizer keeps
    _state_names: Tuple[str, ...] = ()

    def __init__(self, params: Iterable, defaults: Dict[str, Any]):
        name = type(self).__name__
        if hasattr(params, "parameters") and hasattr(params, "forward"):
            raise TypeError(f"{name}: expected an iterable of Parameters, but got the module "
                            f"{type(params).__name__}; pass model.parameters()")
        try:
            params = list(params)
        except TypeError:
            raise TypeError(f"{name}: expected an iterable of Parameters (model.parameters()), "
                            f"but got {type(params).__name__}") from None
        if not params:
            raise ValueError(f"{name}: got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.defaults = dict(defaults)
        self.param_groups: List[Dict[str, Any]] = []
        self._params: List[Any] = []
        for gi, g in enumerate(groups):
            if not isinstance(g, dict) or "params" not in g:
                raise TypeError(f"{name}: parameter group {gi} must be a dict with 'params' "
                                f"(and optional hyperparameters), but got {type(g).__name__}")
            unknown = sorted(set(g) - set(defaults) - {"params"})
            if unknown:
                raise ValueError(f"{name}: parameter group {gi} has unknown option(s) "
                                 f"{', '.join(unknown)}; {name} takes {', '.join(defaults)}")
            ps = list(g["params"]) if not hasattr(g["params"], "data") else [g["params"]]
            for p in ps:
                if not (hasattr(p, "data") and hasattr(p, "grad")):
                    raise TypeError(f"{name}: parameter {len(self._params)} is a "
                                    f"{type(p).__name__}, not a Parameter with .data and "
                                    f".grad; pass model.parameters()")
                if any(p is q for q in self._params):
                    raise ValueError(f"{name}: a parameter appears in more than one group")
                self._params.append(p)
            group = dict(self.defaults)
            group.update({k: v for k, v in g.items() if k != "params"})
            self._validate(group)
            group["params"] = ps
            self.param_groups.append(group)
        self.state: Dict[int, Dict[str, Any]] = {}
        self._tmp = [np.empty_like(p.data) for p in self._params]

    # the parameters, flat, in group order (older code read opt.params)
    @property
    def params(self) -> List[Any]:
        return self._params

    @property
    def lr(self) -> float:
        return self.param_groups[0]["lr"]

    @lr.setter
    def lr(self, value: float) -> None:
        value = _check(f"{type(self).__name__}: lr", value)
        for g in self.param_groups:
            g["lr"] = value

    def _validate(self, group: Dict[str, Any]) -> None:
        name = type(self).__name__
        for k, v in group.items():
            if k == "betas":
                if not (isinstance(v, (tuple, list)) and len(v) == 2):
                    raise ValueError(f"{name}: betas expected a pair, but got {v!r}")
                group[k] = tuple(_check(f"{name}: betas", b) for b in v)
            elif k in ("nesterov", "amsgrad", "maximize", "centered"):
                group[k] = bool(v)
            else:
                group[k] = _check(f"{name}: {k}", v)

    def _groups(self):
        """(global index, parameter, group) for every parameter."""
        i = 0
        for g in self.param_groups:
            for p in g["params"]:
                yield i, p, g
                i += 1

    def zero_grad(self, set_to_none: bool = False) -> None:
        """Clears every parameter's gradient (convkit keeps .grad as an array of zeros)."""
        grads = [p.grad for p in self._params]
        try:
            _core.zero_arrays(grads)  # one call (a fill per parameter cost ~2 us each)
        except TypeError:  # a gradient that is not a float32 C-contiguous array
            for g in grads:
                g.fill(0.0)

    def _grad(self, i, p, weight_decay, maximize=False):
        """The gradient, negated with ``maximize``, with weight decay folded in (PyTorch's order:
        -grad first, then + weight_decay * p), in scratch memory when either is on."""
        if weight_decay == 0.0 and not maximize:
            return p.grad
        g = self._tmp[i]
        if weight_decay == 0.0:
            return np.negative(p.grad, out=g)
        np.multiply(p.data, weight_decay, out=g)
        if maximize:
            g -= p.grad
        else:
            g += p.grad
        return g

    def step(self) -> None:
        for i, p, g in self._groups():
            self._update(i, p, g)

    def _update(self, i, p, group):
        raise NotImplementedError

    def _stepped_state(self, i, p, *arrays):
        """Parameter i's state with its step count advanced: created on the first step as
        step 0 and zero arrays under the given names (PyTorch's lazy state)."""
        st = self.state.get(i)
        if st is None:
            st = self.state[i] = {"step": 0.0, **{n: np.zeros_like(p.data) for n in arrays}}
        st["step"] += 1.0
        return st

    @property
    def step_count(self) -> int:
        """Steps taken (of the first parameter)."""
        return int(self.state.get(0, {}).get("step", 0))

    # -- state -------------------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        """PyTorch's layout: ``{"state": {index: {name: array or number}}, "param_groups":
        [{hyperparameters..., "params": [indices]}]}``; arrays are copies."""
        state = {i: {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in s.items()}
                 for i, s in self.state.items()}
        groups, i = [], 0
        for g in self.param_groups:
            d = {k: v for k, v in g.items() if k != "params"}
            d["params"] = list(range(i, i + len(g["params"])))
            i += len(g["params"])
            groups.append(d)
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restores what ``state_dict()`` returned (or a PyTorch optimizer's state_dict of the
        same kind over parameters of the same shapes), all or nothing."""
        name = type(self).__name__
        if not isinstance(state_dict, Mapping) or set(state_dict) != {"state", "param_groups"}:
            raise ValueError(f"{name}.load_state_dict: expected a dict with 'state' and "
                             f"'param_groups' (from state_dict()), but got "
                             f"{type(state_dict).__name__}"
                             + (f" with keys {sorted(map(str, state_dict))}"
                                if isinstance(state_dict, Mapping) else ""))
        saved = list(state_dict["param_groups"])
        sizes = [len(g["params"]) for g in saved]
        mine = [len(g["params"]) for g in self.param_groups]
        if sizes != mine:
            raise ValueError(f"{name}.load_state_dict: the state has parameter groups of sizes "
                             f"{sizes}, this optimizer {mine}")
        groups = []
        for g, sg in zip(self.param_groups, saved):
            for flag in ("amsgrad", "centered", "maximize", "capturable", "lr_decay"):
                if sg.get(flag) and flag not in self.defaults:
                    raise ValueError(f"{name}.load_state_dict: the state uses {flag}=True, "
                                     f"which convkit's {name} does not have")
            dec = sg.get("decoupled_weight_decay")
            if dec is not None and bool(dec) != getattr(self, "_decoupled", False):
                raise ValueError(f"{name}.load_state_dict: the state is "
                                 f"{'AdamW' if dec else 'Adam'}'s (decoupled_weight_decay="
                                 f"{bool(dec)}); load it into optim."
                                 f"{'AdamW' if dec else 'Adam'}")
            new = dict(g)
            new.update({k: sg[k] for k in sg if k != "params" and
                        (k in self.defaults or k not in _TORCH_ONLY)})
            self._validate_known(new)
            groups.append(new)
        # old index -> new index, in the order of the saved groups
        order = [j for sg in saved for j in sg["params"]]
        params = self._params
        state = {}
        for old, s in dict(state_dict["state"]).items():
            old = int(old)
            if old not in order:
                raise ValueError(f"{name}.load_state_dict: state for parameter {old}, which is "
                                 f"in no group")
            i = order.index(old)
            unknown = sorted(set(s) - set(self._state_names))
            if unknown:
                raise ValueError(f"{name}.load_state_dict: the state of parameter {i} has "
                                 f"{', '.join(map(repr, unknown))}, which {name} does not keep "
                                 f"(it keeps {', '.join(self._state_names)}); is it another "
                                 f"optimizer's state?")
            entry = {}
            for k, v in s.items():
                if v is None:
                    continue
                if k == "step":
                    entry[k] = _scalar(v)
                    continue
                from .nn import _state_array
                a = np.ascontiguousarray(_state_array(v, f"state[{i}][{k!r}]"))
                if a.shape != params[i].data.shape:
                    raise ValueError(f"{name}.load_state_dict: {k} of parameter {i} has shape "
                                     f"{a.shape}, but the parameter {params[i].data.shape}")
                entry[k] = a.copy()
            state[i] = entry
        for g, new in zip(self.param_groups, groups):
            params_of_g = g["params"]
            g.clear()
            g.update(new)
            g["params"] = params_of_g
        self.state = state

    def _validate_known(self, group):
        known = {k: v for k, v in group.items() if k in self.defaults}
        self._validate(known)
        group.update(known)


# PyTorch's optimizer flags that convkit's optimizers do not have (dropped on load when off)
_TORCH_ONLY = {"maximize", "foreach", "differentiable", "fused", "capturable", "amsgrad",
               "decoupled_weight_decay", "centered", "lr_decay", "initial_accumulator_value"}


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, Nesterov momentum, dampening and
    weight decay; PyTorch's update: buf = momentum*buf + (1 - dampening)*g, p -= lr*buf.
    ``maximize`` ascends (the gradient negated), as PyTorch's.

    >>> model = nn.Linear(3, 1); model(np.ones((2, 3), np.float32))
    ... # doctest: +ELLIPSIS
    array(...)
    >>> model.backward(np.ones((2, 1), np.float32)) is not None
    True
    >>> SGD(model.parameters(), lr=0.01, momentum=0.9).step()
    """

    _state_names = ("momentum_buffer",)

    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0, dampening=0.0,
                 *, maximize=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov,
                                      maximize=maximize))

    def _validate(self, group):
        super()._validate(group)
        if group.get("nesterov") and (group["momentum"] == 0.0 or group["dampening"] != 0.0):
            raise ValueError("SGD: nesterov momentum requires momentum > 0 and dampening = 0")

    def _update(self, i, p, group):
        momentum = group["momentum"]
        buf = first = None
        if momentum != 0.0:
            st = self.state.setdefault(i, {})
            buf = st.get("momentum_buffer")
            if buf is None:  # first step: the buffer starts as the gradient itself
                buf, first = np.empty_like(p.data), True
        maximize = group.get("maximize", False)
        if _plain(p.data) and _plain(p.grad) and (buf is None or _plain(buf)):
            # the NumPy sequence below in one pass over memory, with the same roundings
            grad = self._grad(i, p, 0.0, maximize)  # (the core adds the weight decay)
            _core.sgd_update(p.data, grad, buf, group["lr"], momentum, group["dampening"],
                             group["nesterov"], group["weight_decay"], bool(first))
            if first:
                st["momentum_buffer"] = buf
            return
        # parameters or gradients that are not float32 C-contiguous arrays: NumPy, step by step
        g = self._grad(i, p, group["weight_decay"], maximize)
        upd = np.empty_like(p.data)
        if momentum != 0.0:
            if first:
                buf = st["momentum_buffer"] = g.copy()
            else:
                buf *= np.float32(momentum)
                if group["dampening"]:
                    np.multiply(g, np.float32(1.0 - group["dampening"]), out=upd)
                    buf += upd
                else:
                    buf += g
            if group["nesterov"]:  # g + momentum * buf
                np.multiply(buf, np.float32(momentum), out=upd)
                upd += g
                g = upd
            else:
                g = buf
        np.multiply(g, np.float32(group["lr"]), out=upd)
        p.data -= upd


class Adam(Optimizer):
    """Adam (PyTorch's equations, bias-corrected moments; weight decay added to the gradient).
    With ``amsgrad`` the denominator uses the largest second moment so far (PyTorch's
    ``max_exp_avg_sq``); ``maximize`` ascends; ``decoupled_weight_decay=True`` is AdamW.

    >>> model = nn.Linear(3, 1); model(np.ones((2, 3), np.float32))
    ... # doctest: +ELLIPSIS
    array(...)
    >>> model.backward(np.ones((2, 1), np.float32)) is not None
    True
    >>> Adam(model.parameters(), lr=1e-3).step()
    """

    _state_names = ("step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    _decoupled = False  # AdamW: the decay scales the weights instead of joining the gradient

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, *, maximize=False, decoupled_weight_decay=False):
        if decoupled_weight_decay:
            self._decoupled = True
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      amsgrad=bool(amsgrad), maximize=maximize))
        self._d = [np.empty_like(p.data) for p in self._params]

    def _update(self, i, p, group):
        maximize = group.get("maximize", False)
        if self._decoupled:
            if group["weight_decay"]:
                p.data *= np.float32(1.0 - group["lr"] * group["weight_decay"])
            g = self._grad(i, p, 0.0, maximize)
        else:
            g = self._grad(i, p, group["weight_decay"], maximize)
        ams = group.get("amsgrad", False)
        st = self._stepped_state(i, p, "exp_avg", "exp_avg_sq",
                                 *(("max_exp_avg_sq",) if ams else ()))
        m, v, d = st["exp_avg"], st["exp_avg_sq"], self._d[i]
        (b1, b2), t = group["betas"], int(st["step"])
        np.subtract(g, m, out=d)
        d *= np.float32(1.0 - b1)
        m += d                                        # m.lerp_(g, 1 - b1)
        v *= np.float32(b2)
        np.multiply(g, g, out=d)
        d *= np.float32(1.0 - b2)
        v += d                                        # v = b2 v + (1 - b2) g^2
        if ams:
            if "max_exp_avg_sq" not in st:  # (a state loaded from a run without amsgrad)
                st["max_exp_avg_sq"] = np.zeros_like(p.data)
            v = np.maximum(st["max_exp_avg_sq"], v, out=st["max_exp_avg_sq"])
        bc1 = 1.0 - b1 ** t
        bc2_sqrt = math.sqrt(1.0 - b2 ** t)
        np.sqrt(v, out=d)
        d /= np.float32(bc2_sqrt)
        d += np.float32(group["eps"])                 # denom = sqrt(v) / sqrt(bc2) + eps
        np.divide(m, d, out=d)
        d *= np.float32(group["lr"] / bc1)
        p.data -= d


class AdamW(Adam):
    """AdamW (PyTorch's): Adam whose weight decay scales the weights, w *= 1 - lr *
    weight_decay, before the step instead of joining the gradient (Loshchilov and Hutter);
    the default decay 0.01 as PyTorch's.

    >>> model = nn.Linear(3, 1); AdamW(model.parameters(), lr=1e-3).step()
    """

    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize)


class Adagrad(Optimizer):
    """Adagrad: p -= clr * g / (sqrt(sum of g^2) + eps) with clr = lr / (1 + (step - 1) *
    lr_decay), the sum starting at ``initial_accumulator_value`` (PyTorch's equations);
    ``maximize`` ascends.

    >>> model = nn.Linear(3, 1); model(np.ones((2, 3), np.float32))
    ... # doctest: +ELLIPSIS
    array(...)
    >>> model.backward(np.ones((2, 1), np.float32)) is not None
    True
    >>> Adagrad(model.parameters(), lr=1e-2).step()
    """

    _state_names = ("step", "sum")

    def __init__(self, params, lr=1e-2, eps=1e-10, weight_decay=0.0, *, lr_decay=0.0,
                 initial_accumulator_value=0.0, maximize=False):
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, eps=eps,
                                      weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value,
                                      maximize=maximize))
        self._d = [np.empty_like(p.data) for p in self._params]

    def _update(self, i, p, group):
        g = self._grad(i, p, group["weight_decay"], group.get("maximize", False))
        fresh = i not in self.state
        st = self._stepped_state(i, p, "sum")
        s, d = st["sum"], self._d[i]
        if fresh and group.get("initial_accumulator_value", 0.0):
            s.fill(group["initial_accumulator_value"])
        clr = group["lr"] / (1.0 + (st["step"] - 1.0) * group.get("lr_decay", 0.0))
        np.multiply(g, g, out=d)
        s += d
        np.sqrt(s, out=d)
        d += np.float32(group["eps"])
        np.divide(g, d, out=d)
        d *= np.float32(clr)
        p.data -= d


class RMSprop(Optimizer):
    """RMSprop: a running average of g^2 with decay alpha, optional momentum (PyTorch's);
    ``centered`` divides by the estimated standard deviation sqrt(avg g^2 - (avg g)^2) instead
    (a running average of g kept as ``grad_avg``); ``maximize`` ascends.

    >>> model = nn.Linear(3, 1); model(np.ones((2, 3), np.float32))
    ... # doctest: +ELLIPSIS
    array(...)
    >>> model.backward(np.ones((2, 1), np.float32)) is not None
    True
    >>> RMSprop(model.parameters(), lr=1e-2).step()
    """

    _state_names = ("step", "square_avg", "momentum_buffer", "grad_avg")

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, momentum=0.0, weight_decay=0.0,
                 *, centered=False, maximize=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps,
                                      centered=centered, weight_decay=weight_decay,
                                      maximize=maximize))
        self._d = [np.empty_like(p.data) for p in self._params]

    def _update(self, i, p, group):
        g = self._grad(i, p, group["weight_decay"], group.get("maximize", False))
        st = self._stepped_state(i, p, "square_avg")
        sq, d, alpha = st["square_avg"], self._d[i], group["alpha"]
        sq *= np.float32(alpha)
        np.multiply(g, g, out=d)
        d *= np.float32(1.0 - alpha)
        sq += d
        if group.get("centered", False):
            ga = st.get("grad_avg")
            if ga is None:
                ga = st["grad_avg"] = np.zeros_like(p.data)
            np.subtract(g, ga, out=d)
            d *= np.float32(1.0 - alpha)
            ga += d                                   # grad_avg.lerp_(g, 1 - alpha)
            np.multiply(ga, ga, out=d)
            np.subtract(sq, d, out=d)
            np.sqrt(d, out=d)                         # sqrt(sq - grad_avg^2)
        else:
            np.sqrt(sq, out=d)
        d += np.float32(group["eps"])
        np.divide(g, d, out=d)                        # g / (sqrt(sq) + eps)
        if group["momentum"] > 0.0:
            buf = st.get("momentum_buffer")
            if buf is None:
                buf = st["momentum_buffer"] = np.zeros_like(p.data)
            buf *= np.float32(group["momentum"])
            buf += d
            np.multiply(buf, group["lr"], out=d)
        else:
            d *= np.float32(group["lr"])
        p.data -= d


class Adadelta(Optimizer):
    """Adadelta: running averages of g^2 and of the squared updates (PyTorch's equations);
    ``maximize`` ascends.

    >>> model = nn.Linear(3, 1); model(np.ones((2, 3), np.float32))
    ... # doctest: +ELLIPSIS
    array(...)
    >>> model.backward(np.ones((2, 1), np.float32)) is not None
    True
    >>> Adadelta(model.parameters(), lr=1.0).step()
    """

    _state_names = ("step", "square_avg", "acc_delta")

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, *, maximize=False):
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay,
                                      maximize=maximize))
        self._d = [np.empty_like(p.data) for p in self._params]
        self._e = [np.empty_like(p.data) for p in self._params]

    def _update(self, i, p, group):
        g = self._grad(i, p, group["weight_decay"], group.get("maximize", False))
        st = self._stepped_state(i, p, "square_avg", "acc_delta")
        sq, acc, d, e = st["square_avg"], st["acc_delta"], self._d[i], self._e[i]
        rho = np.float32(group["rho"])
        eps = np.float32(group["eps"])
        sq *= rho
        np.multiply(g, g, out=d)
        d *= np.float32(1.0 - group["rho"])
        sq += d                                       # sq = rho sq + (1 - rho) g^2
        np.add(sq, eps, out=e)
        np.sqrt(e, out=e)                             # std = sqrt(sq + eps)
        np.add(acc, eps, out=d)
        np.sqrt(d, out=d)
        d /= e
        d *= g                                        # delta = sqrt(acc + eps) / std * g
        acc *= rho
        np.multiply(d, d, out=e)
        e *= np.float32(1.0 - group["rho"])
        acc += e                                      # acc = rho acc + (1 - rho) delta^2
        d *= np.float32(group["lr"])
        p.data -= d


def _grad_list(params):
    if hasattr(params, "grad") and hasattr(params, "data"):
        return [params]
    return list(params)


def clip_grad_norm_(params: Iterable, max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False) -> float:
    """Scales the gradients in place so that their total norm (the norm of all gradients as
    one vector, ``norm_type`` 2, any p >= 1 or ``inf``) is at most ``max_norm``, as PyTorch's
    ``clip_grad_norm_``: every gradient is multiplied by ``min(1, max_norm / (total + 1e-6))``.
    Returns the total norm before clipping; with ``error_if_nonfinite`` a NaN or infinite
    total raises instead of spreading NaN through every gradient.

    >>> p = nn.Parameter(np.zeros(2)); p.grad[:] = [3.0, 4.0]
    >>> clip_grad_norm_([p], 1.0), p.grad.round(3)
    (5.0, array([0.6, 0.8], dtype=float32))
    """
    max_norm = _check("clip_grad_norm_: max_norm", max_norm)
    norm_type = float(norm_type)
    if not norm_type >= 1.0:
        raise ValueError(f"clip_grad_norm_: expected norm_type >= 1 or inf, but got {norm_type}")
    params = _grad_list(params)
    if not params:
        return 0.0
    grads = [p.grad.ravel().astype(np.float64) for p in params]
    if norm_type == math.inf:
        total = max((float(np.abs(g).max()) if g.size else 0.0) for g in grads)
    elif norm_type == 2.0:
        total = math.sqrt(sum(float(np.dot(g, g)) for g in grads))
    else:
        total = sum(float(np.sum(np.abs(g) ** norm_type)) for g in grads) ** (1.0 / norm_type)
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(f"clip_grad_norm_: the total norm of order {norm_type} of the "
                           f"gradients is {total}, so they cannot be clipped; pass "
                           f"error_if_nonfinite=False to scale them anyway")
    coef = np.float32(min(max_norm / (total + 1e-6), 1.0)) if total == total else np.float32("nan")
    if coef != 1.0:
        with np.errstate(invalid="ignore"):  # inf * 0 is NaN, as in PyTorch
            for p in params:
                p.grad *= coef
    return total


def clip_max_norm(params: Iterable, max_norm: float) -> float:
    """The max-norm constraint on the gradients: ``clip_grad_norm_(params, max_norm)`` (the
    name of convkit 0.1). Returns the total L2 norm before clipping.

    >>> p = nn.Parameter(np.zeros(2)); p.grad[:] = [3.0, 4.0]
    >>> clip_max_norm([p], 1.0), p.grad.round(3)
    (5.0, array([0.6, 0.8], dtype=float32))
    """
    return clip_grad_norm_(params, max_norm)


# ---- learning-rate schedules -------------------------------------------------------------------

def _optimizer_of(name, optimizer):
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"{name}: expected a convkit optimizer, but got "
                        f"{type(optimizer).__name__}")
    return optimizer


class LRScheduler:
    """Base class of the schedules (PyTorch's protocol): construction records each group's
    ``initial_lr`` and sets epoch 0; ``step()`` (once per epoch, or per batch for
    ``OneCycleLR``, after ``optimizer.step()``) moves to the next epoch and sets the learning
    rates; ``get_last_lr()`` lists them; ``state_dict()`` / ``load_state_dict()`` save and
    restore the schedule (everything but the optimizer).

    >>> opt = SGD(nn.Linear(2, 1).parameters(), lr=0.1); sched = StepLR(opt, 1, gamma=0.5)
    >>> sched.step(); sched.get_last_lr(), sched.state_dict()["last_epoch"]
    ([0.05], 1)
    """

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1):
        name = type(self).__name__
        self.optimizer = _optimizer_of(name, optimizer)
        if last_epoch == -1:
            for g in optimizer.param_groups:
                g.setdefault("initial_lr", g["lr"])
        else:
            for i, g in enumerate(optimizer.param_groups):
                if "initial_lr" not in g:
                    raise KeyError(f"{name}: last_epoch={last_epoch} resumes a schedule, but "
                                   f"param_groups[{i}] has no 'initial_lr'; load the "
                                   f"optimizer's state_dict first")
        self.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
        self.last_epoch = int(last_epoch)
        self._initial_step()

    def get_lr(self) -> List[float]:
        raise NotImplementedError

    def step(self) -> None:
        self._step_count += 1
        self.last_epoch += 1
        self._set_lrs(self.get_lr())

    def _set_lrs(self, lrs) -> None:
        for g, lr in zip(self.optimizer.param_groups, lrs):
            g["lr"] = float(lr)
        self._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    def get_last_lr(self) -> List[float]:
        return list(self._last_lr)

    def _closed_form(self) -> Optional[List[float]]:
        """The learning rates at last_epoch from base_lrs (None: only get_lr's recursion)."""
        return None

    def _initial_step(self) -> None:
        """The construction's step (SequentialLR runs it again on its first schedule)."""
        self._step_count = 0
        self._is_initial = True
        self.step()
        self._is_initial = False

    def _jump_to(self, epoch: int) -> None:
        """Sets the learning rates of ``epoch`` (closed form where the schedule has one), as
        PyTorch's ``_update_lr(epoch)``: SequentialLR starts the next schedule at epoch 0."""
        self.last_epoch = int(epoch)
        lrs = self._closed_form()
        self._set_lrs(lrs if lrs is not None else self.get_lr())

    def state_dict(self) -> Dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        name = type(self).__name__
        missing = sorted(set(self.state_dict()) - set(state_dict))
        if missing:
            raise ValueError(f"{name}.load_state_dict: the state lacks {', '.join(missing)}; "
                             f"is it another scheduler's state?")
        self.__dict__.update(state_dict)

    def _lrs(self):
        return [g["lr"] for g in self.optimizer.param_groups]


class StepLR(LRScheduler):
    """Multiplies the learning rate by gamma every step_size epochs (PyTorch's StepLR).

    >>> opt = SGD(nn.Linear(2, 1).parameters(), lr=0.1); sched = StepLR(opt, 2, gamma=0.5)
    >>> [sched.step() or round(opt.lr, 3) for _ in range(4)]
    [0.1, 0.05, 0.05, 0.025]
    """

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1,
                 last_epoch: int = -1):
        if int(step_size) < 1:
            raise ValueError(f"StepLR: expected step_size >= 1, but got {step_size}")
        self.step_size, self.gamma = int(step_size), float(gamma)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return self._lrs()
        return [lr * self.gamma for lr in self._lrs()]

    def _closed_form(self):
        return [b * self.gamma ** (self.last_epoch // self.step_size) for b in self.base_lrs]


class MultiStepLR(LRScheduler):
    """Multiplies the learning rate by gamma at each epoch in milestones (PyTorch's).

    >>> opt = SGD(nn.Linear(2, 1).parameters(), lr=1.0); sched = MultiStepLR(opt, [1, 3], 0.5)
    >>> [sched.step() or opt.lr for _ in range(4)]
    [0.5, 0.5, 0.25, 0.25]
    """

    def __init__(self, optimizer: Optimizer, milestones: Iterable[int], gamma: float = 0.1,
                 last_epoch: int = -1):
        ms = [int(m) for m in milestones]
        if ms != sorted(ms):
            raise ValueError(f"MultiStepLR: milestones must be increasing, but got {ms}")
        self.milestones = Counter(ms)
        self.gamma = float(gamma)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self.last_epoch not in self.milestones:
            return self._lrs()
        return [lr * self.gamma ** self.milestones[self.last_epoch] for lr in self._lrs()]

    def _closed_form(self):
        passed = bisect.bisect_right(sorted(self.milestones.elements()), self.last_epoch)
        return [b * self.gamma ** passed for b in self.base_lrs]

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self.milestones = Counter({int(k): int(v) for k, v in dict(self.milestones).items()})


class ExponentialLR(LRScheduler):
    """Multiplies the learning rate by gamma every epoch (PyTorch's ExponentialLR).

    >>> opt = SGD(nn.Linear(2, 1).parameters(), lr=1.0); sched = ExponentialLR(opt, 0.5)
    >>> [sched.step() or opt.lr for _ in range(3)]
    [0.5, 0.25, 0.125]
    """

    def __init__(self, optimizer: Optimizer, gamma: float, last_epoch: int = -1):
        self.gamma = float(gamma)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self._is_initial:
            return self._lrs()
        return [lr * self.gamma for lr in self._lrs()]

    def _closed_form(self):
        return [b * self.gamma ** self.last_epoch for b in self.base_lrs]


class LinearLR(LRScheduler):
    """Scales the learning rate by a factor going linearly from start_factor to end_factor
    over total_iters epochs (a warm-up), in PyTorch's recursive form.

    >>> opt = SGD(nn.Linear(2, 1).parameters(), lr=1.0); sched = LinearLR(opt, 0.5, total_iters=2)
    >>> opt.lr, [sched.step() or opt.lr for _ in range(3)]
    (0.5, [0.75, 1.0, 1.0])
    """

    def __init__(self, optimizer: Optimizer, start_factor: float = 1.0 / 3,
                 end_factor: float = 1.0, total_iters: int = 5, last_epoch: int = -1):
        if not 0.0 < float(start_factor) <= 1.0:
            raise ValueError(f"LinearLR: expected start_factor in (0, 1], but got {start_factor}")
        if not 0.0 <= float(end_factor) <= 1.0:
            raise ValueError(f"LinearLR: expected end_factor in [0, 1], but got {end_factor}")
        self.start_factor, self.end_factor = float(start_factor), float(end_factor)
        self.total_iters = int(total_iters)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        e, a, b, n = self.last_epoch, self.start_factor, self.end_factor, self.total_iters
        if e == 0:
            return [lr * a for lr in self._lrs()]
        if self._is_initial or e > n:
            return self._lrs()
        return [lr * (1.0 + (b - a) / (n * a + (e - 1) * (b - a))) for lr in self._lrs()]

    def _closed_form(self):
        a, b, n = self.start_factor, self.end_factor, self.total_iters
        return [lr * (a + (b - a) * min(n, self.last_epoch) / n) for lr in self.base_lrs]


class LambdaLR(LRScheduler):
    """The initial learning rate times lr_lambda(epoch) (one function, or one per parameter
    group), as PyTorch's LambdaLR; state_dict keeps the state of callable objects, not plain
    functions.

    >>> opt = SGD(nn.Linear(2, 1).parameters(), lr=1.0); sched = LambdaLR(opt, lambda e: 0.9 ** e)
    >>> [round(sched.step() or opt.lr, 3) for _ in range(2)]
    [0.9, 0.81]
    """

    def __init__(self, optimizer: Optimizer, lr_lambda, last_epoch: int = -1):
        n = len(_optimizer_of("LambdaLR", optimizer).param_groups)
        if isinstance(lr_lambda, (list, tuple)):
            if len(lr_lambda) != n:
                raise ValueError(f"LambdaLR: expected {n} lr_lambdas, but got {len(lr_lambda)}")
            self.lr_lambdas = list(lr_lambda)
        else:
            self.lr_lambdas = [lr_lambda] * n
        for f in self.lr_lambdas:
            if not callable(f):
                raise TypeError(f"LambdaLR: lr_lambda must be callable, but got "
                                f"{type(f).__name__}")
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        return [b * f(self.last_epoch) for f, b in zip(self.lr_lambdas, self.base_lrs)]

    def state_dict(self) -> Dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "lr_lambdas")}
        state["lr_lambdas"] = [None if isinstance(f, types.FunctionType) else dict(f.__dict__)
                               for f in self.lr_lambdas]
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        state = dict(state_dict)
        fns = state.pop("lr_lambdas", [None] * len(self.lr_lambdas))
        super().load_state_dict({**state, "lr_lambdas": self.lr_lambdas})
        for f, d in zip(self.lr_lambdas, fns):
            if d is not None:
                f.__dict__.update(d)


class CosineAnnealingLR(LRScheduler):
    """Cosine annealing from the initial learning rate to eta_min over T_max epochs, in
    PyTorch's recursive form (so the numbers are PyTorch's, step by step).

    >>> opt = SGD(nn.Linear(2, 1).parameters(), lr=1.0); sched = CosineAnnealingLR(opt, 2)
    >>> [round(sched.step() or opt.lr, 6) for _ in range(3)]
    [0.5, 0.0, 0.5]
    """

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0,
                 last_epoch: int = -1):
        if int(T_max) < 1:
            raise ValueError(f"CosineAnnealingLR: expected T_max >= 1, but got {T_max}")
        self.T_max, self.eta_min = int(T_max), float(eta_min)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        e, T, lo = self.last_epoch, self.T_max, self.eta_min
        if self._is_initial:
            return self._lrs()
        if self._step_count == 1 and e > 0:
            return [lo + (b - lo) * (1 + math.cos(e * math.pi / T)) / 2 for b in self.base_lrs]
        if (e - 1 - T) % (2 * T) == 0:
            return [lr + (b - lo) * (1 - math.cos(math.pi / T)) / 2
                    for b, lr in zip(self.base_lrs, self._lrs())]
        return [(1 + math.cos(math.pi * e / T)) / (1 + math.cos(math.pi * (e - 1) / T))
                * (lr - lo) + lo for lr in self._lrs()]

    def _closed_form(self):
        e, T, lo = self.last_epoch, self.T_max, self.eta_min
        return [lo + (b - lo) * (1 + math.cos(math.pi * e / T)) / 2 for b in self.base_lrs]


class OneCycleLR(LRScheduler):
    """The one-cycle policy (PyTorch's OneCycleLR): the learning rate rises from
    max_lr / div_factor to max_lr over the first pct_start of total_steps, then anneals to
    initial_lr / final_div_factor ("cos" or "linear"); momentum (SGD, RMSprop) or Adam's beta1
    moves the opposite way between max_momentum and base_momentum. Step it once per batch.

    >>> opt = SGD(nn.Linear(2, 1).parameters(), lr=0.1, momentum=0.9)
    >>> sched = OneCycleLR(opt, max_lr=1.0, total_steps=10)
    >>> round(opt.lr, 6), max(sched.step() or opt.lr for _ in range(9)) == 1.0
    (0.04, True)
    """

    _per_batch = True  # training.fit steps it after every optimizer step

    def __init__(self, optimizer: Optimizer, max_lr, total_steps: Optional[int] = None,
                 epochs: Optional[int] = None, steps_per_epoch: Optional[int] = None,
                 pct_start: float = 0.3, anneal_strategy: str = "cos",
                 cycle_momentum: bool = True, base_momentum=0.85, max_momentum=0.95,
                 div_factor: float = 25.0, final_div_factor: float = 1e4,
                 three_phase: bool = False, last_epoch: int = -1):
        _optimizer_of("OneCycleLR", optimizer)
        if total_steps is not None:
            if isinstance(total_steps, bool) or not isinstance(total_steps, int) \
                    or total_steps <= 0:
                raise ValueError(f"OneCycleLR: expected a positive integer total_steps, but "
                                 f"got {total_steps!r}")
            self.total_steps = total_steps
        elif epochs is not None and steps_per_epoch is not None:
            for n, v in (("epochs", epochs), ("steps_per_epoch", steps_per_epoch)):
                if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                    raise ValueError(f"OneCycleLR: expected a positive integer {n}, but got "
                                     f"{v!r}")
            self.total_steps = epochs * steps_per_epoch
        else:
            raise ValueError("OneCycleLR: give total_steps, or epochs and steps_per_epoch")
        if not (isinstance(pct_start, float) and 0.0 <= pct_start <= 1.0):
            raise ValueError(f"OneCycleLR: expected a float pct_start in [0, 1], but got "
                             f"{pct_start!r}")
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"OneCycleLR: anneal_strategy must be 'cos' or 'linear', but got "
                             f"{anneal_strategy!r}")
        self.anneal_strategy = anneal_strategy
        n = self.total_steps
        if three_phase:
            self._phases = [
                [float(pct_start * n) - 1, "initial_lr", "max_lr", "max_momentum", "base_momentum"],
                [float(2 * pct_start * n) - 2, "max_lr", "initial_lr", "base_momentum",
                 "max_momentum"],
                [n - 1, "initial_lr", "min_lr", "max_momentum", "max_momentum"]]
        else:
            self._phases = [
                [float(pct_start * n) - 1, "initial_lr", "max_lr", "max_momentum", "base_momentum"],
                [n - 1, "max_lr", "min_lr", "base_momentum", "max_momentum"]]
        groups = optimizer.param_groups
        max_lrs = self._per_group("max_lr", max_lr, groups)
        if last_epoch == -1:
            for g, m in zip(groups, max_lrs):
                g["initial_lr"] = m / div_factor
                g["max_lr"] = m
                g["min_lr"] = g["initial_lr"] / final_div_factor
        self.cycle_momentum = bool(cycle_momentum)
        if self.cycle_momentum:
            if "momentum" not in optimizer.defaults and "betas" not in optimizer.defaults:
                raise ValueError(f"OneCycleLR: cycle_momentum needs an optimizer with momentum "
                                 f"or betas, but {type(optimizer).__name__} has neither; pass "
                                 f"cycle_momentum=False")
            self.use_beta1 = "betas" in optimizer.defaults
            if last_epoch == -1:
                for g, mm, bm in zip(groups, self._per_group("max_momentum", max_momentum, groups),
                                     self._per_group("base_momentum", base_momentum, groups)):
                    if self.use_beta1:
                        g["betas"] = (mm, *g["betas"][1:])
                    else:
                        g["momentum"] = mm
                    g["max_momentum"], g["base_momentum"] = mm, bm
        super().__init__(optimizer, last_epoch)

    @staticmethod
    def _per_group(name, value, groups):
        if isinstance(value, (list, tuple)):
            if len(value) != len(groups):
                raise ValueError(f"OneCycleLR: expected {len(groups)} values for {name}, but "
                                 f"got {len(value)}")
            return [float(v) for v in value]
        return [float(value)] * len(groups)

    def _anneal(self, start, end, pct):
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def get_lr(self):
        t = self.last_epoch
        if t > self.total_steps:
            raise ValueError(f"OneCycleLR: tried to step {t} times, but total_steps is "
                             f"{self.total_steps}")
        lrs = []
        for g in self.optimizer.param_groups:
            start = 0.0
            for i, (end, lr0, lr1, m0, m1) in enumerate(self._phases):
                if t <= end or i == len(self._phases) - 1:
                    pct = (t - start) / (end - start)
                    lr = self._anneal(g[lr0], g[lr1], pct)
                    if self.cycle_momentum:
                        m = self._anneal(g[m0], g[m1], pct)
                    break
                start = end
            lrs.append(lr)
            if self.cycle_momentum:
                if self.use_beta1:
                    g["betas"] = (m, *g["betas"][1:])
                else:
                    g["momentum"] = m
        return lrs


class SequentialLR(LRScheduler):
    """Runs schedules one after the other, switching at the epochs in milestones (PyTorch's
    SequentialLR, e.g. a LinearLR warm-up, then CosineAnnealingLR): each schedule starts at its
    own epoch 0 when its turn comes. Build the schedules on the same optimizer first.

    >>> opt = SGD(nn.Linear(2, 1).parameters(), lr=1.0)
    >>> sched = SequentialLR(opt, [LinearLR(opt, 0.5, total_iters=2), StepLR(opt, 1, 0.5)], [2])
    >>> opt.lr, [sched.step() or opt.lr for _ in range(4)]
    (0.5, [0.75, 1.0, 0.5, 0.25])
    """

    def __init__(self, optimizer: Optimizer, schedulers, milestones, last_epoch: int = -1):
        name = "SequentialLR"
        self.optimizer = _optimizer_of(name, optimizer)
        schedulers, milestones = list(schedulers), [int(m) for m in milestones]
        if not schedulers:
            raise ValueError(f"{name}: expected at least one scheduler, but got none")
        for i, sc in enumerate(schedulers):
            if not isinstance(sc, LRScheduler):
                raise TypeError(f"{name}: schedulers[{i}] is a {type(sc).__name__}, not a "
                                f"schedule with step() (ReduceLROnPlateau needs a metric)")
            if sc.optimizer is not optimizer:
                raise ValueError(f"{name}: schedulers[{i}] ({type(sc).__name__}) belongs to "
                                 f"another optimizer")
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(f"{name}: expected {len(schedulers) - 1} milestones for "
                             f"{len(schedulers)} schedulers, but got {len(milestones)}")
        self._schedulers, self._milestones = schedulers, milestones
        self.last_epoch = int(last_epoch) + 1
        for g in optimizer.param_groups:
            g["lr"] = g["initial_lr"]
        self._undo(self)
        first = schedulers[bisect.bisect_right(milestones, 0)]
        first._initial_step()
        self._last_lr = first.get_last_lr()

    @staticmethod
    def _undo(sched):
        """Takes back the construction step of every schedule inside (nested ones too)."""
        for sc in getattr(sched, "_schedulers", ()):
            if isinstance(sc, SequentialLR):
                SequentialLR._undo(sc)
            else:
                sc.last_epoch -= 1

    def step(self) -> None:
        self.last_epoch += 1
        i = bisect.bisect_right(self._milestones, self.last_epoch)
        sc = self._schedulers[i]
        if i > 0 and self._milestones[i - 1] == self.last_epoch:
            sc._jump_to(0)
        else:
            sc.step()
        self._last_lr = sc.get_last_lr()

    def state_dict(self) -> Dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "_schedulers")}
        state["_schedulers"] = [sc.state_dict() for sc in self._schedulers]
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        state = dict(state_dict)
        subs = state.pop("_schedulers", None)
        if subs is None or len(subs) != len(self._schedulers):
            raise ValueError("SequentialLR.load_state_dict: the state does not hold "
                             f"{len(self._schedulers)} schedules")
        self.__dict__.update(state)
        for sc, st in zip(self._schedulers, subs):
            sc.load_state_dict(st)


class ReduceLROnPlateau:
    """Multiplies the learning rate by factor when a metric has stopped improving for patience
    epochs (PyTorch's ReduceLROnPlateau): ``step(metric)`` once per epoch.

    >>> opt = SGD(nn.Linear(2, 1).parameters(), lr=1.0)
    >>> sched = ReduceLROnPlateau(opt, patience=1, factor=0.5)
    >>> [sched.step(v) or opt.lr for v in [1.0, 1.0, 1.0, 0.5]]
    [1.0, 1.0, 0.5, 0.5]
    """

    def __init__(self, optimizer: Optimizer, mode: str = "min", factor: float = 0.1,
                 patience: int = 10, threshold: float = 1e-4, threshold_mode: str = "rel",
                 cooldown: int = 0, min_lr=0.0, eps: float = 1e-8):
        if float(factor) >= 1.0:
            raise ValueError(f"ReduceLROnPlateau: expected factor < 1, but got {factor}")
        if mode not in ("min", "max"):
            raise ValueError(f"ReduceLROnPlateau: mode must be 'min' or 'max', but got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"ReduceLROnPlateau: threshold_mode must be 'rel' or 'abs', but got "
                             f"{threshold_mode!r}")
        self.optimizer = _optimizer_of("ReduceLROnPlateau", optimizer)
        n = len(optimizer.param_groups)
        if isinstance(min_lr, (list, tuple)):
            if len(min_lr) != n:
                raise ValueError(f"ReduceLROnPlateau: expected {n} min_lrs, but got "
                                 f"{len(min_lr)}")
            self.min_lrs = [float(v) for v in min_lr]
        else:
            self.min_lrs = [float(min_lr)] * n
        self.factor, self.patience, self.cooldown = float(factor), int(patience), int(cooldown)
        self.mode, self.threshold, self.threshold_mode = mode, float(threshold), threshold_mode
        self.eps = float(eps)
        self.last_epoch = 0
        self._last_lr = [g["lr"] for g in optimizer.param_groups]
        self.best = math.inf if mode == "min" else -math.inf
        self.cooldown_counter = 0
        self.num_bad_epochs = 0

    def _is_better(self, a, best):
        if self.mode == "min":
            return a < (best * (1.0 - self.threshold) if self.threshold_mode == "rel"
                        else best - self.threshold)
        return a > (best * (self.threshold + 1.0) if self.threshold_mode == "rel"
                    else best + self.threshold)

    def step(self, metrics) -> None:
        current = float(metrics)
        self.last_epoch += 1
        if self._is_better(current, self.best):
            self.best, self.num_bad_epochs = current, 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            for g, lo in zip(self.optimizer.param_groups, self.min_lrs):
                old = float(g["lr"])
                new = max(old * self.factor, lo)
                if old - new > self.eps:
                    g["lr"] = new
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    def get_last_lr(self) -> List[float]:
        return list(self._last_lr)

    state_dict = LRScheduler.state_dict
    load_state_dict = LRScheduler.load_state_dict
