"""Helpers shared by the SGD tests: gradients at given weights, and the distance between weight sets."""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F


def grads_at(net, weights: dict[str, np.ndarray], batch) -> dict[str, np.ndarray]:
    """d loss / d w evaluated at ``weights`` (a private copy of the net; nothing shared)."""
    model = copy.deepcopy(net)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.from_numpy(weights[name]))
    model.zero_grad()
    x, y = batch
    F.cross_entropy(model(x), y).backward()
    return {name: p.grad.numpy().copy() for name, p in model.named_parameters()}


def max_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)
