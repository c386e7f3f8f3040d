"""Model builders."""
from __future__ import annotations

from . import nn

__all__ = ["lenet5", "LeNet5", "resnet20"]

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "elu": nn.ELU,
                "leaky_relu": nn.LeakyReLU}
_POOLS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}


class LeNet5(nn.Sequential):
    """The Sequential that ``lenet5()`` builds (state names "0.weight" ... "11.bias"), checking
    that its input is the image batch it was built for.

    >>> lenet5(input_size=32)(np.zeros((1, 1, 32, 32), np.float32)).shape
    (1, 10)
    """

    def __init__(self, in_channels, input_size, *layers):
        super().__init__(*layers)
        self.in_channels, self.input_size = in_channels, input_size

    def forward(self, x):
        shape = getattr(x, "shape", None)
        want = (self.in_channels, self.input_size, self.input_size)
        if shape is not None and (len(shape) != 4 or tuple(shape[1:]) != want):
            hint = ""
            if len(shape) == 4 and shape[1] == shape[2] and shape[3] == self.in_channels:
                hint = "; the batch looks channels-last (N, H, W, C): use x.transpose(0, 3, 1, 2)"
            elif len(shape) == 4 and shape[1] == self.in_channels and shape[2] == shape[3]:
                hint = (f"; for {shape[2]}x{shape[3]} images build "
                        f"lenet5(in_channels={self.in_channels}, input_size={shape[2]})")
            elif len(shape) == 4 and shape[2] == shape[3] == self.input_size:
                hint = f"; for {shape[1]}-channel images build lenet5(in_channels={shape[1]})"
            raise ValueError(f"lenet5: expected input of shape (N, {want[0]}, {want[1]}, "
                             f"{want[2]}), but got {tuple(shape)}{hint}")
        return super().forward(x)


def lenet5(in_channels: int = 1, num_classes: int = 10, input_size: int = 28,
           activation: str = "relu", pool: str = "max") -> "LeNet5":
    """LeNet-5: conv 6@5x5 -> act -> pool 2 -> conv 16@5x5 -> act -> pool 2 -> flatten ->
    linear 120 -> act -> linear 84 -> act -> linear num_classes.

    28x28 inputs get padding 2 on the first convolution (so both 28 and 32 give 16x5x5 features);
    activation="tanh", pool="avg" is the 1998 flavour; in_channels=3, input_size=32 fits CIFAR-10.
    61,706 parameters for the defaults. Input (N, in_channels, input_size, input_size) ->
    logits (N, num_classes).

    >>> model = lenet5()
    >>> model(np.zeros((2, 1, 28, 28), np.float32)).shape
    (2, 10)
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
    return LeNet5(
        in_channels, input_size,
        nn.Conv2d(in_channels, 6, 5, padding=pad), act(), pool_cls(2),
        nn.Conv2d(6, 16, 5), act(), pool_cls(2),
        nn.Flatten(),
        nn.Linear(16 * side * side, 120), act(),
        nn.Linear(120, 84), act(),
        nn.Linear(84, num_classes),
    )


def _basic_block(c_in: int, c: int, stride: int) -> nn.Sequential:
    """Residual(conv3x3-BN-ReLU-conv3x3-BN, shortcut) followed by ReLU; the shortcut is a strided
    1x1 convolution with batch norm where the shape changes, else the identity."""
    body = nn.Sequential(nn.Conv2d(c_in, c, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(c), nn.ReLU(),
                         nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
    shortcut = None
    if stride != 1 or c_in != c:
        shortcut = nn.Sequential(nn.Conv2d(c_in, c, 1, stride=stride, bias=False),
                                 nn.BatchNorm2d(c))
    return nn.Sequential(nn.Residual(body, shortcut), nn.ReLU())


def resnet20(num_classes: int = 10, in_channels: int = 3) -> nn.Sequential:
    """The CIFAR ResNet-20 of He et al. (2016): conv 16@3x3 -> BN -> ReLU -> 9 basic blocks
    (16, 16, 16, 32, 32, 32, 64, 64, 64 channels; stride 2 with a 1x1 projection shortcut at
    blocks 4 and 7) -> global average pooling -> linear 64 -> num_classes. 272,474 parameters
    for the defaults; any input size from 8x8 up (28x28 Fashion-MNIST with in_channels=1).
    State names match the same tree written in PyTorch, e.g. ``3.0.body.0.weight``.

    >>> model = resnet20()
    >>> model(np.zeros((2, 3, 32, 32), np.float32)).shape, sum(p.data.size for p in model.parameters())
    ((2, 10), 272474)
    """
    if int(in_channels) < 1 or int(num_classes) < 1:
        raise ValueError(f"resnet20: expected in_channels and num_classes >= 1, but got "
                         f"({in_channels}, {num_classes})")
    layers = [nn.Conv2d(in_channels, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
    c_in = 16
    for c in (16, 32, 64):
        for i in range(3):
            stride = 2 if i == 0 and c != 16 else 1
            layers.append(_basic_block(c_in, c, stride))
            c_in = c
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes)]
    return nn.Sequential(*layers)
