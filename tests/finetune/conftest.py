"""Fixtures of the fine-tuning tests: a tiny conv net with every kind of parameter, fixed data."""

from __future__ import annotations

import pytest
import torch
from torch import nn


class TinyNet(nn.Module):
    """conv (with bias) -> BN -> ReLU -> pool -> fc: weights, biases and BN affine parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=True)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x)))
        return self.fc(x.mean(dim=(2, 3)))


# Caffe-style multipliers: biases learn twice as fast without decay, BN affine without decay, fc 10x.
GROUP_MULTS = {
    "conv.weight": (1.0, 1.0),
    "conv.bias": (2.0, 0.0),
    "bn.weight": (1.0, 0.0),
    "bn.bias": (1.0, 0.0),
    "fc.weight": (10.0, 1.0),
    "fc.bias": (2.0, 0.0),
}


@pytest.fixture
def tiny_net() -> TinyNet:
    torch.manual_seed(0)
    net = TinyNet().double()
    with torch.no_grad():
        net.bn.weight.uniform_(0.5, 1.5)
        net.bn.bias.uniform_(-0.5, 0.5)
    return net


@pytest.fixture
def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A fixed stream of (images, labels), one per backward pass."""
    gen = torch.Generator().manual_seed(1)
    return [
        (torch.randn(6, 3, 8, 8, generator=gen, dtype=torch.float64), torch.randint(0, 5, (6,), generator=gen))
        for _ in range(8)
    ]
