"""Parameter and FLOP counts, counted the way the published model cards count them.

mmcls's tables come from mmcv's FLOPs counter, which counts multiply-accumulates of convolutions and
linear layers (plus their bias adds), two operations per element for an affine BatchNorm, one per
element for ReLU and for pooling inputs.  Counting the same way lets the tests check architectures
against the printed figures: FLOPs depend on where the stride sits, parameters do not.
"""

from __future__ import annotations

import torch
from torch import nn

from resnet_port.resnet_ref.model import FixedAvgPool2d


def count_params(model: nn.Module) -> int:
    """Parameters, as model cards count them (buffers such as BN statistics excluded)."""
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, input_size: int | tuple[int, int] = 224, in_chans: int = 3) -> int:
    """Operations of one forward pass on one image of ``input_size``, counted as mmcv counts them."""
    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    total = 0

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        x = inputs[0]
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * (module.in_channels // module.groups)
            total += output.numel() * k + (output.numel() if module.bias is not None else 0)
        elif isinstance(module, nn.Linear):
            total += x.numel() * module.out_features + (module.out_features if module.bias is not None else 0)
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            total += x.numel() * (2 if module.affine else 1)
        elif isinstance(module, nn.ReLU):
            total += output.numel()
        elif isinstance(module, (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, FixedAvgPool2d)):
            total += x.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            device = next(model.parameters()).device
            model(torch.zeros(1, in_chans, h, w, device=device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return total
