"""Small ResNet builders written independently of `resnet_ref`, producing the state-dict layouts of
torchvision and mmcls (and computing their forward passes), so that loading their state dicts into
the reference model is checked against something other than the reference model itself.

Written from the published architecture descriptions (torchvision's ResNet v1.5, mmcls ResNetV1d),
functionally: a dict of tensors and a forward function, no nn.Module classes shared with resnet_ref.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EXPANSION = {"basic": 1, "bottleneck": 4}
DEPTHS = {18: ("basic", [2, 2, 2, 2]), 34: ("basic", [3, 4, 6, 3]), 50: ("bottleneck", [3, 4, 6, 3]), 101: ("bottleneck", [3, 4, 23, 3])}


def _bn(sd: dict, prefix: str, c: int, g: torch.Generator) -> None:
    sd[f"{prefix}.weight"] = torch.rand(c, generator=g) + 0.5
    sd[f"{prefix}.bias"] = torch.rand(c, generator=g) * 0.2 - 0.1
    sd[f"{prefix}.running_mean"] = torch.rand(c, generator=g) * 0.2 - 0.1
    sd[f"{prefix}.running_var"] = torch.rand(c, generator=g) + 0.5
    sd[f"{prefix}.num_batches_tracked"] = torch.tensor(0)


def _conv(sd: dict, key: str, cout: int, cin: int, k: int, g: torch.Generator) -> None:
    sd[key] = torch.randn(cout, cin, k, k, generator=g) * (2.0 / (cin * k * k)) ** 0.5


def torchvision_state_dict(depth: int, num_classes: int = 1000, seed: int = 0, width_per_group: int = 64) -> dict:
    """A torchvision-layout ResNet state_dict with random but well-scaled weights."""
    g = torch.Generator().manual_seed(seed)
    block, layers = DEPTHS[depth]
    sd: dict[str, torch.Tensor] = {}
    _conv(sd, "conv1.weight", 64, 3, 7, g)
    _bn(sd, "bn1", 64, g)
    cin = 64
    for stage, (planes, n) in enumerate(zip([64, 128, 256, 512], layers)):
        for b in range(n):
            p = f"layer{stage + 1}.{b}"
            stride = 2 if stage > 0 and b == 0 else 1
            out = planes * EXPANSION[block]
            if block == "basic":
                _conv(sd, f"{p}.conv1.weight", planes, cin, 3, g)
                _bn(sd, f"{p}.bn1", planes, g)
                _conv(sd, f"{p}.conv2.weight", planes, planes, 3, g)
                _bn(sd, f"{p}.bn2", planes, g)
            else:
                width = planes * width_per_group // 64
                _conv(sd, f"{p}.conv1.weight", width, cin, 1, g)
                _bn(sd, f"{p}.bn1", width, g)
                _conv(sd, f"{p}.conv2.weight", width, width, 3, g)
                _bn(sd, f"{p}.bn2", width, g)
                _conv(sd, f"{p}.conv3.weight", out, width, 1, g)
                _bn(sd, f"{p}.bn3", out, g)
            if stride != 1 or cin != out:
                _conv(sd, f"{p}.downsample.0.weight", out, cin, 1, g)
                _bn(sd, f"{p}.downsample.1", out, g)
            cin = out
    sd["fc.weight"] = torch.randn(num_classes, cin, generator=g) * cin**-0.5
    sd["fc.bias"] = torch.randn(num_classes, generator=g) * 0.1
    return sd


def _apply_bn(sd: dict, prefix: str, x: torch.Tensor) -> torch.Tensor:
    return F.batch_norm(
        x, sd[f"{prefix}.running_mean"], sd[f"{prefix}.running_var"], sd[f"{prefix}.weight"], sd[f"{prefix}.bias"], False, 0.0, 1e-5
    )


def torchvision_forward(sd: dict, depth: int, x: torch.Tensor, cifar_stem: bool = False) -> torch.Tensor:
    """torchvision's ResNet forward (v1.5: the bottleneck's stride in its 3x3), from the state_dict;
    ``cifar_stem``: the CIFAR nets' 3x3/1 conv and no max pool instead of the 7x7/2 conv and pool."""
    block, layers = DEPTHS[depth]
    if cifar_stem:
        x = F.relu(_apply_bn(sd, "bn1", F.conv2d(x, sd["conv1.weight"], stride=1, padding=1)))
    else:
        x = F.relu(_apply_bn(sd, "bn1", F.conv2d(x, sd["conv1.weight"], stride=2, padding=3)))
        x = F.max_pool2d(x, 3, 2, padding=1)
    for stage, n in enumerate(layers):
        for b in range(n):
            p = f"layer{stage + 1}.{b}"
            stride = 2 if stage > 0 and b == 0 else 1
            identity = x
            if f"{p}.downsample.0.weight" in sd:
                identity = _apply_bn(sd, f"{p}.downsample.1", F.conv2d(x, sd[f"{p}.downsample.0.weight"], stride=stride))
            if block == "basic":
                out = F.relu(_apply_bn(sd, f"{p}.bn1", F.conv2d(x, sd[f"{p}.conv1.weight"], stride=stride, padding=1)))
                out = _apply_bn(sd, f"{p}.bn2", F.conv2d(out, sd[f"{p}.conv2.weight"], padding=1))
            else:
                out = F.relu(_apply_bn(sd, f"{p}.bn1", F.conv2d(x, sd[f"{p}.conv1.weight"])))
                out = F.relu(_apply_bn(sd, f"{p}.bn2", F.conv2d(out, sd[f"{p}.conv2.weight"], stride=stride, padding=1)))
                out = _apply_bn(sd, f"{p}.bn3", F.conv2d(out, sd[f"{p}.conv3.weight"]))
            x = F.relu(out + identity)
    x = x.mean(dim=(2, 3))
    return F.linear(x, sd["fc.weight"], sd["fc.bias"])


def mmcls_v1d_state_dict(depth: int = 50, num_classes: int = 1000, seed: int = 0) -> dict:
    """mmcls ResNetV1d as an ImageClassifier checkpoint: backbone.stem.N.{conv,bn}, layerN with the
    avg-pool shortcut (downsample.0 pool only where strided: so layer1's conv is downsample.0), head.fc."""
    g = torch.Generator().manual_seed(seed)
    block, layers = DEPTHS[depth]
    assert block == "bottleneck"
    sd: dict[str, torch.Tensor] = {}
    for i, (cin, cout) in enumerate([(3, 32), (32, 32), (32, 64)]):
        _conv(sd, f"backbone.stem.{i}.conv.weight", cout, cin, 3, g)
        _bn(sd, f"backbone.stem.{i}.bn", cout, g)
    cin = 64
    for stage, (planes, n) in enumerate(zip([64, 128, 256, 512], layers)):
        for b in range(n):
            p = f"backbone.layer{stage + 1}.{b}"
            stride = 2 if stage > 0 and b == 0 else 1
            out = planes * 4
            _conv(sd, f"{p}.conv1.weight", planes, cin, 1, g)
            _bn(sd, f"{p}.bn1", planes, g)
            _conv(sd, f"{p}.conv2.weight", planes, planes, 3, g)
            _bn(sd, f"{p}.bn2", planes, g)
            _conv(sd, f"{p}.conv3.weight", out, planes, 1, g)
            _bn(sd, f"{p}.bn3", out, g)
            if stride != 1 or cin != out:
                first = 1 if stride != 1 else 0  # mmcls: the AvgPool2d occupies index 0 only when strided
                _conv(sd, f"{p}.downsample.{first}.weight", out, cin, 1, g)
                _bn(sd, f"{p}.downsample.{first + 1}", out, g)
            cin = out
    sd["head.fc.weight"] = torch.randn(num_classes, cin, generator=g) * cin**-0.5
    sd["head.fc.bias"] = torch.randn(num_classes, generator=g) * 0.1
    return sd


def mmcls_v1d_forward(sd: dict, depth: int, x: torch.Tensor) -> torch.Tensor:
    _, layers = DEPTHS[depth]
    b_ = "backbone."
    for i in range(3):
        x = F.conv2d(x, sd[f"{b_}stem.{i}.conv.weight"], stride=2 if i == 0 else 1, padding=1)
        x = F.relu(_apply_bn(sd, f"{b_}stem.{i}.bn", x))
    x = F.max_pool2d(x, 3, 2, padding=1)
    for stage, n in enumerate(layers):
        for b in range(n):
            p = f"{b_}layer{stage + 1}.{b}"
            stride = 2 if stage > 0 and b == 0 else 1
            identity = x
            if stride != 1:
                pooled = F.avg_pool2d(x, stride, stride, ceil_mode=True, count_include_pad=False)
                identity = _apply_bn(sd, f"{p}.downsample.2", F.conv2d(pooled, sd[f"{p}.downsample.1.weight"]))
            elif f"{p}.downsample.0.weight" in sd:
                identity = _apply_bn(sd, f"{p}.downsample.1", F.conv2d(x, sd[f"{p}.downsample.0.weight"]))
            out = F.relu(_apply_bn(sd, f"{p}.bn1", F.conv2d(x, sd[f"{p}.conv1.weight"])))
            out = F.relu(_apply_bn(sd, f"{p}.bn2", F.conv2d(out, sd[f"{p}.conv2.weight"], stride=stride, padding=1)))
            out = _apply_bn(sd, f"{p}.bn3", F.conv2d(out, sd[f"{p}.conv3.weight"]))
            x = F.relu(out + identity)
    return F.linear(x.mean(dim=(2, 3)), sd["head.fc.weight"], sd["head.fc.bias"])
