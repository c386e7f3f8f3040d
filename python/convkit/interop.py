"""PyTorch models in and out: ``from_torch(module)`` builds the convkit model with the same
structure and weights, ``to_torch(model)`` the reverse (both need PyTorch installed).

Supported: ``Sequential`` (nested to any depth), ``Conv2d`` (every argument), ``ConvTranspose2d``,
``MaxPool2d``, ``AvgPool2d``, ``MaxUnpool2d``, ``AdaptiveAvgPool2d``, ``AdaptiveMaxPool2d``,
``BatchNorm2d``, ``BatchNorm1d``, ``ReLU``, ``LeakyReLU``, ``Sigmoid``, ``Tanh``, ``ELU``,
``Upsample``, ``Softmax``, ``LogSoftmax``, ``Dropout``, ``Flatten``, ``Linear``, ``Identity``, and residual
blocks written as convkit's ``Residual``: a module whose only children are ``body`` and
``shortcut`` (``shortcut`` may be ``None``) and whose output is ``body(x) + shortcut(x)`` (or
``+ x``).
``to_torch`` writes residual blocks as ``TorchResidual``, such a module.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Dict

import numpy as np

from . import nn

__all__ = ["from_torch", "to_torch"]


def _torch():
    try:
        import torch
    except ImportError:
        raise ImportError("convkit.interop needs PyTorch: pip install torch") from None
    return torch


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


# ---- torch -> convkit ------------------------------------------------------------------------

def _conv(m):
    padding = m.padding if isinstance(m.padding, str) else _pair(m.padding)
    return nn.Conv2d(m.in_channels, m.out_channels, _pair(m.kernel_size), stride=_pair(m.stride),
                     padding=padding, dilation=_pair(m.dilation), groups=m.groups,
                     bias=m.bias is not None, padding_mode=m.padding_mode)


def _conv_t(m, path):
    if m.padding_mode != "zeros":
        raise ValueError(f"from_torch: {path} ({type(m).__name__}) uses padding_mode="
                         f"{m.padding_mode!r}; PyTorch itself only runs 'zeros' here")
    return nn.ConvTranspose2d(m.in_channels, m.out_channels, _pair(m.kernel_size),
                              stride=_pair(m.stride), padding=_pair(m.padding),
                              output_padding=_pair(m.output_padding), groups=m.groups,
                              bias=m.bias is not None, dilation=_pair(m.dilation))


def _bn(cls):
    return lambda m, path: cls(m.num_features, eps=m.eps, momentum=m.momentum, affine=m.affine,
                               track_running_stats=m.track_running_stats)




_FROM: Dict[str, Callable[..., Any]] = {
    "Conv2d": lambda m, p: _conv(m),
    "ConvTranspose2d": _conv_t,
    "MaxPool2d": lambda m, p: nn.MaxPool2d(m.kernel_size, m.stride, m.padding, m.dilation,
                                           m.return_indices, m.ceil_mode),
    "AvgPool2d": lambda m, p: nn.AvgPool2d(m.kernel_size, m.stride, m.padding, m.ceil_mode,
                                           m.count_include_pad, m.divisor_override),
    "MaxUnpool2d": lambda m, p: nn.MaxUnpool2d(m.kernel_size, m.stride, m.padding),
    "AdaptiveAvgPool2d": lambda m, p: nn.AdaptiveAvgPool2d(m.output_size),
    "AdaptiveMaxPool2d": lambda m, p: nn.AdaptiveMaxPool2d(m.output_size, m.return_indices),
    "BatchNorm2d": _bn(nn.BatchNorm2d),
    "BatchNorm1d": _bn(nn.BatchNorm1d),
    "ReLU": lambda m, p: nn.ReLU(m.inplace),
    "LeakyReLU": lambda m, p: nn.LeakyReLU(m.negative_slope, m.inplace),
    "Sigmoid": lambda m, p: nn.Sigmoid(),
    "Tanh": lambda m, p: nn.Tanh(),
    "ELU": lambda m, p: nn.ELU(m.alpha, m.inplace),
    "Upsample": lambda m, p: nn.Upsample(m.size, m.scale_factor, m.mode, m.align_corners,
                                         m.recompute_scale_factor),
    "Softmax": lambda m, p: nn.Softmax(m.dim),
    "LogSoftmax": lambda m, p: nn.LogSoftmax(m.dim),
    "Dropout": lambda m, p: nn.Dropout(m.p, m.inplace),
    "Flatten": lambda m, p: nn.Flatten(m.start_dim, m.end_dim),
    "Linear": lambda m, p: nn.Linear(m.in_features, m.out_features, bias=m.bias is not None),
    "Identity": lambda m, p: nn.Identity(),
}


def _is_residual(m) -> bool:
    kids = set(n for n, _ in m.named_children())
    return "body" in kids and kids <= {"body", "shortcut"} and hasattr(m, "shortcut")


def _convert(m, path: str):
    torch = _torch()
    name = type(m).__name__
    if isinstance(m, torch.nn.Sequential):
        out = nn.Sequential(OrderedDict((n, _convert(c, f"{path}.{n}" if path else n))
                                        for n, c in m.named_children()))
        out.training = m.training  # this container only: each child carries its own mode
        return out
    if hasattr(m, "body") and _is_residual(m):
        sc = getattr(m, "shortcut", None)
        out = nn.Residual(_convert(m.body, f"{path}.body" if path else "body"),
                          None if sc is None else
                          _convert(sc, f"{path}.shortcut" if path else "shortcut"))
        out.training = m.training
        return out
    make = _FROM.get(name) if type(m).__module__.startswith("torch.nn") else None
    if make is None:
        where = f"at {path!r}" if path else "at the top"
        raise ValueError(f"from_torch: the module {where} is a {type(m).__module__}.{name}, "
                         f"which convkit cannot convert; supported are Sequential, residual "
                         f"blocks with 'body' and 'shortcut', and {', '.join(sorted(_FROM))}")
    layer = make(m, path or "the top")
    own = {k: v for k, v in m.state_dict().items() if "." not in k}
    layer.load_state_dict(own)
    layer.train(m.training)
    return layer


def from_torch(module) -> nn.Module:
    """The convkit model with the structure, weights, buffers and train/eval mode of a
    ``torch.nn`` module built from the layers convkit has (see the module docstring). An
    unsupported module raises ``ValueError`` naming it and its path in the model.

    >>> import torch
    >>> t = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten()).float()
    >>> m = from_torch(t)
    >>> x = np.ones((2, 1, 5, 5), np.float32)
    >>> bool(np.allclose(m(x), t(torch.from_numpy(x)).detach().numpy(), atol=1e-6))
    True
    """
    return _convert(module, "")


# ---- convkit -> torch ------------------------------------------------------------------------

_residual_cls = None


def _residual_class():
    global _residual_cls
    if _residual_cls is None:
        torch = _torch()

        class TorchResidual(torch.nn.Module):
            """``body(x) + shortcut(x)``, or ``body(x) + x`` without a shortcut."""

            def __init__(self, body, shortcut=None):
                super().__init__()
                self.body, self.shortcut = body, shortcut

            def forward(self, x):
                return self.body(x) + (x if self.shortcut is None else self.shortcut(x))

        TorchResidual.__module__ = __name__
        _residual_cls = TorchResidual
    return _residual_cls


def __getattr__(name):  # TorchResidual is made on first use, so that torch stays optional
    if name == "TorchResidual":
        return _residual_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _to(m, path):
    torch = _torch()
    T = torch.nn
    name = type(m).__name__
    if isinstance(m, nn.Sequential):
        t = T.Sequential(OrderedDict((n, _to(c, f"{path}.{n}" if path else n))
                                     for n, c in zip(m._names, m)))
        t.training = m.training  # this container only: each child carries its own mode
        return t
    if isinstance(m, nn.Residual):
        t = _residual_class()(_to(m.body, f"{path}.body" if path else "body"),
                              None if m.shortcut is None else
                              _to(m.shortcut, f"{path}.shortcut" if path else "shortcut"))
        t.training = m.training
        return t
    if isinstance(m, nn.Conv2d):
        t = T.Conv2d(m.in_channels, m.out_channels, m.kernel_size, stride=m.stride,
                     padding=m.padding, dilation=m.dilation, groups=m.groups,
                     bias=m.bias is not None, padding_mode=m.padding_mode)
    elif isinstance(m, nn.ConvTranspose2d):
        t = T.ConvTranspose2d(m.in_channels, m.out_channels, m.kernel_size, stride=m.stride,
                              padding=m.padding, output_padding=m.output_padding,
                              groups=m.groups, bias=m.bias is not None, dilation=m.dilation)
    elif isinstance(m, nn.MaxPool2d):
        t = T.MaxPool2d(m.kernel_size, m.stride, m.padding, m.dilation, m.return_indices,
                        m.ceil_mode)
    elif isinstance(m, nn.AvgPool2d):
        t = T.AvgPool2d(m.kernel_size, m.stride, m.padding, m.ceil_mode, m.count_include_pad,
                        m.divisor_override)
    elif isinstance(m, nn.MaxUnpool2d):
        t = T.MaxUnpool2d(m.kernel_size, m.stride, m.padding)
    elif isinstance(m, nn.AdaptiveAvgPool2d):
        t = T.AdaptiveAvgPool2d(m.output_size)
    elif isinstance(m, nn.AdaptiveMaxPool2d):
        t = T.AdaptiveMaxPool2d(m.output_size, m.return_indices)
    elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
        cls = T.BatchNorm2d if isinstance(m, nn.BatchNorm2d) else T.BatchNorm1d
        t = cls(m.num_features, eps=m.eps, momentum=m.momentum, affine=m.affine,
                track_running_stats=m.track_running_stats)
    elif isinstance(m, nn.LeakyReLU):
        t = T.LeakyReLU(m.negative_slope, m.inplace)
    elif isinstance(m, nn.ELU):
        t = T.ELU(m.alpha, m.inplace)
    elif isinstance(m, nn.ReLU):
        t = T.ReLU(m.inplace)
    elif isinstance(m, nn.Flatten):
        t = T.Flatten(m.start_dim, m.end_dim)
    elif isinstance(m, (nn.Sigmoid, nn.Tanh, nn.Identity)):
        t = getattr(T, name)()
    elif isinstance(m, nn.Upsample):
        t = T.Upsample(m.size, m.scale_factor, m.mode, m.align_corners, m.recompute_scale_factor)
    elif isinstance(m, nn.Softmax):  # (and LogSoftmax)
        t = getattr(T, name)(dim=m.dim)
    elif isinstance(m, nn.Dropout):
        t = T.Dropout(m.p, m.inplace)
    elif isinstance(m, nn.Linear):
        t = T.Linear(m.in_features, m.out_features, bias=m.bias is not None)
    else:
        where = f"at {path!r}" if path else "at the top"
        raise ValueError(f"to_torch: the module {where} is a {type(m).__module__}.{name}, "
                         f"which has no PyTorch counterpart here")
    own = {k: torch.from_numpy(np.array(v)) for k, v in m.state_dict().items()}
    t.load_state_dict(own)
    t.train(m.training)
    return t


def to_torch(model: nn.Module):
    """The ``torch.nn`` model with the structure, weights, buffers and train/eval mode of a
    convkit model (residual blocks become ``TorchResidual`` modules, same state_dict names).

    >>> import torch
    >>> m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten())
    >>> t = to_torch(m)
    >>> x = np.ones((2, 1, 5, 5), np.float32)
    >>> bool(np.allclose(m(x), t(torch.from_numpy(x)).detach().numpy(), atol=1e-6))
    True
    """
    return _to(model, "").float()  # float32 whatever torch's default dtype
