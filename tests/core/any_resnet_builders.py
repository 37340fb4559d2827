"""ResNets of any block type, depth, stem and shortcut in the state-dict layouts of timm, torchvision
and mmcls, with their forward passes, written independently of `resnet_ref` (functional: a dict of
tensors and a forward function), from the layouts' published code:

- timm ``resnet.py``: 7x7 stem ``conv1``/``bn1``, or the deep stem ``conv1.0/.1/.3/.4/.6`` + ``bn1``
  (``stem_type='deep'`` w/2-w/2-w, ``'deep_tiered'`` 3w/8-w/2-w); avg-down shortcut
  ``downsample.0`` pool (an Identity without parameters where the stride is 1), ``.1`` conv,
  ``.2`` BN; classifier ``fc``.
- torchvision: 7x7 stem, conv shortcut ``downsample.0/.1``, ``fc``.
- mmcls / mmpretrain ``ImageClassifier``: everything under ``backbone.``; deep stem
  ``stem.N.conv`` / ``stem.N.bn``; avg-down puts its AvgPool2d at ``downsample.0`` only where the
  stride is not 1 (the conv is then ``downsample.1``, else ``downsample.0``); ``head.fc``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Net:
    block: str = "bottleneck"  # "basic" | "bottleneck"
    layers: tuple[int, ...] = (3, 4, 6, 3)
    stem: tuple[int, ...] = ()  # () = 7x7 stem of 64; else the three deep-stem widths
    avg_down: bool = False
    base_width: int = 64
    classes: int = 10

    @property
    def expansion(self) -> int:
        return 4 if self.block == "bottleneck" else 1


def _bn(sd: dict, prefix: str, c: int, g: torch.Generator) -> None:
    sd[f"{prefix}.weight"] = torch.rand(c, generator=g, dtype=torch.float64) + 0.5
    sd[f"{prefix}.bias"] = torch.rand(c, generator=g, dtype=torch.float64) * 0.2 - 0.1
    sd[f"{prefix}.running_mean"] = torch.rand(c, generator=g, dtype=torch.float64) * 0.2 - 0.1
    sd[f"{prefix}.running_var"] = torch.rand(c, generator=g, dtype=torch.float64) + 0.5
    sd[f"{prefix}.num_batches_tracked"] = torch.tensor(7)


def _conv(sd: dict, key: str, cout: int, cin: int, k: int, g: torch.Generator) -> None:
    sd[key] = torch.randn(cout, cin, k, k, generator=g, dtype=torch.float64) * (2.0 / (cin * k * k)) ** 0.5


def _downsample_names(layout: str, avg_down: bool, stride: int) -> tuple[str, str]:
    if not avg_down:
        return "downsample.0", "downsample.1"
    if layout == "mmcls" and stride == 1:
        return "downsample.0", "downsample.1"
    return "downsample.1", "downsample.2"


def state_dict(net: Net, layout: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A float32 state dict of ``net`` in ``layout`` ("timm", "torchvision", "mmcls")."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    if net.stem:
        assert layout != "torchvision", "torchvision has no deep stem"
        names = (
            [("conv1.0", "conv1.1"), ("conv1.3", "conv1.4"), ("conv1.6", "bn1")]
            if layout == "timm"
            else [(f"stem.{i}.conv", f"stem.{i}.bn") for i in range(3)]
        )
        cin = 3
        for (conv, bn), width in zip(names, net.stem):
            _conv(sd, f"{conv}.weight", width, cin, 3, g)
            _bn(sd, bn, width, g)
            cin = width
    else:
        _conv(sd, "conv1.weight", 64, 3, 7, g)
        _bn(sd, "bn1", 64, g)
        cin = 64
    for s, n in enumerate(net.layers):
        planes = 64 * 2**s
        for b in range(n):
            p = f"layer{s + 1}.{b}"
            stride = 2 if s > 0 and b == 0 else 1
            out = planes * net.expansion
            if net.block == "basic":
                _conv(sd, f"{p}.conv1.weight", planes, cin, 3, g)
                _bn(sd, f"{p}.bn1", planes, g)
                _conv(sd, f"{p}.conv2.weight", planes, planes, 3, g)
                _bn(sd, f"{p}.bn2", planes, g)
            else:
                width = planes * net.base_width // 64
                _conv(sd, f"{p}.conv1.weight", width, cin, 1, g)
                _bn(sd, f"{p}.bn1", width, g)
                _conv(sd, f"{p}.conv2.weight", width, width, 3, g)
                _bn(sd, f"{p}.bn2", width, g)
                _conv(sd, f"{p}.conv3.weight", out, width, 1, g)
                _bn(sd, f"{p}.bn3", out, g)
            if stride != 1 or cin != out:
                conv, bn = _downsample_names(layout, net.avg_down, stride)
                _conv(sd, f"{p}.{conv}.weight", out, cin, 1, g)
                _bn(sd, f"{p}.{bn}", out, g)
            cin = out
    sd["fc.weight"] = torch.randn(net.classes, cin, generator=g, dtype=torch.float64) * cin**-0.5
    sd["fc.bias"] = torch.randn(net.classes, generator=g, dtype=torch.float64) * 0.1
    sd = {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}
    if layout == "mmcls":
        sd = {(f"head.{k}" if k.startswith("fc.") else f"backbone.{k}"): v for k, v in sd.items()}
    return sd


def _apply_bn(sd: dict, prefix: str, x: torch.Tensor) -> torch.Tensor:
    return F.batch_norm(
        x, sd[f"{prefix}.running_mean"].double(), sd[f"{prefix}.running_var"].double(),
        sd[f"{prefix}.weight"].double(), sd[f"{prefix}.bias"].double(), False, 0.0, 1e-5,
    )


def forward(sd: dict, net: Net, layout: str, x: torch.Tensor) -> torch.Tensor:
    """The layout's forward in float64: stride in the bottleneck's 3x3, max pool 3x3/2 pad 1, the
    avg-down shortcut as AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False) then conv + BN."""
    if layout == "mmcls":
        sd = {k.removeprefix("backbone.").removeprefix("head."): v for k, v in sd.items()}
    w = lambda key: sd[key].double()  # noqa: E731
    x = x.double()
    if net.stem:
        names = (
            [("conv1.0", "conv1.1"), ("conv1.3", "conv1.4"), ("conv1.6", "bn1")]
            if layout == "timm"
            else [(f"stem.{i}.conv", f"stem.{i}.bn") for i in range(3)]
        )
        for i, (conv, bn) in enumerate(names):
            x = F.relu(_apply_bn(sd, bn, F.conv2d(x, w(f"{conv}.weight"), stride=2 if i == 0 else 1, padding=1)))
    else:
        x = F.relu(_apply_bn(sd, "bn1", F.conv2d(x, w("conv1.weight"), stride=2, padding=3)))
    x = F.max_pool2d(x, 3, 2, padding=1)
    for s, n in enumerate(net.layers):
        for b in range(n):
            p = f"layer{s + 1}.{b}"
            stride = 2 if s > 0 and b == 0 else 1
            identity = x
            conv, bn = _downsample_names(layout, net.avg_down, stride)
            if f"{p}.{conv}.weight" in sd:
                short = x
                if net.avg_down:
                    if stride != 1:
                        short = F.avg_pool2d(x, 2, stride, ceil_mode=True, count_include_pad=False)
                    identity = _apply_bn(sd, f"{p}.{bn}", F.conv2d(short, w(f"{p}.{conv}.weight")))
                else:
                    identity = _apply_bn(sd, f"{p}.{bn}", F.conv2d(x, w(f"{p}.{conv}.weight"), stride=stride))
            if net.block == "basic":
                out = F.relu(_apply_bn(sd, f"{p}.bn1", F.conv2d(x, w(f"{p}.conv1.weight"), stride=stride, padding=1)))
                out = _apply_bn(sd, f"{p}.bn2", F.conv2d(out, w(f"{p}.conv2.weight"), padding=1))
            else:
                out = F.relu(_apply_bn(sd, f"{p}.bn1", F.conv2d(x, w(f"{p}.conv1.weight"))))
                out = F.relu(_apply_bn(sd, f"{p}.bn2", F.conv2d(out, w(f"{p}.conv2.weight"), stride=stride, padding=1)))
                out = _apply_bn(sd, f"{p}.bn3", F.conv2d(out, w(f"{p}.conv3.weight")))
            x = F.relu(out + identity)
    return F.linear(x.mean(dim=(2, 3)), w("fc.weight"), w("fc.bias"))
