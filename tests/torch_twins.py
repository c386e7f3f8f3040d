"""PyTorch twins of convkit's models with the same module tree (so the same state_dict names),
for the equivalence tests and the benchmarks."""
import torch
from torch import nn


class Residual(nn.Module):
    """y = body(x) + (shortcut(x) if shortcut else x): convkit.nn.Residual's nesting."""

    def __init__(self, body, shortcut=None):
        super().__init__()
        self.body, self.shortcut = body, shortcut

    def forward(self, x):
        return self.body(x) + (x if self.shortcut is None else self.shortcut(x))


def _block(c_in, c, stride):
    body = nn.Sequential(nn.Conv2d(c_in, c, 3, stride, 1, bias=False), nn.BatchNorm2d(c),
                         nn.ReLU(), nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c))
    shortcut = None
    if stride != 1 or c_in != c:
        shortcut = nn.Sequential(nn.Conv2d(c_in, c, 1, stride, bias=False), nn.BatchNorm2d(c))
    return nn.Sequential(Residual(body, shortcut), nn.ReLU())


def resnet20(num_classes=10, in_channels=3):
    layers = [nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
    c_in = 16
    for c in (16, 32, 64):
        for i in range(3):
            layers.append(_block(c_in, c, 2 if i == 0 and c != 16 else 1))
            c_in = c
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes)]
    return nn.Sequential(*layers)
