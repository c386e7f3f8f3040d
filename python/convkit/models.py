"""Model builders."""
from __future__ import annotations

from . import nn

__all__ = ["lenet5"]

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "elu": nn.ELU,
                "leaky_relu": nn.LeakyReLU}
_POOLS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}


def lenet5(in_channels=1, num_classes=10, input_size=28, activation="relu", pool="max"):
    """LeNet-5: conv 6@5x5 -> act -> pool 2 -> conv 16@5x5 -> act -> pool 2 -> flatten ->
    linear 120 -> act -> linear 84 -> act -> linear num_classes.

    28x28 inputs get padding 2 on the first convolution (so both 28 and 32 give 16x5x5 features);
    activation="tanh", pool="avg" is the 1998 flavour; in_channels=3, input_size=32 fits CIFAR-10.
    61,706 parameters for the defaults.
    """
    if activation not in _ACTIVATIONS:
        raise ValueError(f"lenet5: expected activation in {sorted(_ACTIVATIONS)}, but got {activation!r}")
    if pool not in _POOLS:
        raise ValueError(f"lenet5: expected pool in {sorted(_POOLS)}, but got {pool!r}")
    pad = 2 if input_size == 28 else 0
    side = ((input_size + 2 * pad - 4) // 2 - 4) // 2
    if side < 1:
        raise ValueError(f"lenet5: input_size {input_size} is too small (at least 14 is needed)")
    act, pool_cls = _ACTIVATIONS[activation], _POOLS[pool]
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=pad), act(), pool_cls(2),
        nn.Conv2d(6, 16, 5), act(), pool_cls(2),
        nn.Flatten(),
        nn.Linear(16 * side * side, 120), act(),
        nn.Linear(120, 84), act(),
        nn.Linear(84, num_classes),
    )
