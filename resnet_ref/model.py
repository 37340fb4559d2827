"""The reference ResNet: one `nn.Module` family, built from a `ResNetSpec`.

State-dict key names are public API.  They follow torchvision (``conv1``, ``bn1``,
``layerN.M.convK``, ``downsample.0/1``, ``fc``) so that a torchvision or mmcls state_dict loads as
is; where torchvision has no such module, timm's names are used (the deep stem is
``conv1.0/1/3/4/6`` + ``bn1``, the avg-down shortcut ``downsample.0`` pool, ``.1`` conv, ``.2`` BN).
Three modules exist only in pre-activation and MXNet-style nets: ``data_bn`` (BatchNorm on the raw
input), ``final_bn`` (v2's BN before the last ReLU) and, in v2 blocks, ``bn1`` sits *before*
``conv1``.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from resnet_port.errors import SpecError
from resnet_port.resnet_ref.spec import ResNetSpec


class FixedGammaBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose scale is 1 whatever the stored ``weight`` holds (MXNet ``fix_gamma=True``).

    The ``weight`` parameter is kept (frozen) only so that state dicts carry the same names as the
    source; the forward pass never reads it, exactly as MXNet ignores a stored gamma.
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__(num_features, eps=eps, affine=True)
        self.weight.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        use_batch_stats = self.training or self.running_mean is None
        return F.batch_norm(
            x,
            self.running_mean,
            self.running_var,
            None,  # gamma fixed at 1
            self.bias,
            use_batch_stats,
            self.momentum if self.momentum is not None else 0.0,
            self.eps,
        )


class FixedAvgPool2d(nn.Module):
    """Caffe's pool5: average pool of a fixed kernel with stride 1 (no padding).

    At 224 input it equals global pooling (a 7x7 map); at larger inputs it leaves a map of
    positions.  A kernel larger than the map is clipped to it (Caffe would refuse such an input).
    """

    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        self.kernel_size = int(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kh = min(self.kernel_size, x.shape[-2])
        kw = min(self.kernel_size, x.shape[-1])
        return F.avg_pool2d(x, (kh, kw), stride=1)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride=1"


def _conv(cin: int, cout: int, k: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=k, stride=stride, padding=k // 2, bias=bias)


class BasicBlock(nn.Module):
    """Two 3x3 convs; the stride sits in the first.  ``pre_act`` selects the v2 ordering."""

    expansion = 1

    def __init__(
        self,
        cin: int,
        planes: int,
        stride: int,
        downsample: nn.Module | None,
        spec: ResNetSpec,
        norm: Callable[[int], nn.Module],
    ) -> None:
        super().__init__()
        self.pre_act = spec.residual == "v2"
        self.shortcut_reads_input = spec.v2_shortcut_input == "block_input"
        bias = spec.conv_bias
        self.bn1 = norm(cin if self.pre_act else planes)
        self.conv1 = _conv(cin, planes, 3, stride, bias="conv1" in bias)
        self.bn2 = norm(planes)
        self.conv2 = _conv(planes, planes, 3, 1, bias="conv2" in bias)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre_act:
            shortcut = x
            x = self.relu(self.bn1(x))
            if self.downsample is not None:
                # v2: the projection sees the pre-activated input (GluonCV CIFAR: the raw one)
                shortcut = self.downsample(shortcut if self.shortcut_reads_input else x)
            x = self.conv1(x)
            x = self.conv2(self.relu(self.bn2(x)))
            return x + shortcut
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    """1x1, 3x3, 1x1 with expansion 4; the stride sits where ``spec.stride_in`` says."""

    expansion = 4

    def __init__(
        self,
        cin: int,
        planes: int,
        stride: int,
        downsample: nn.Module | None,
        spec: ResNetSpec,
        norm: Callable[[int], nn.Module],
    ) -> None:
        super().__init__()
        self.pre_act = spec.residual == "v2"
        self.shortcut_reads_input = spec.v2_shortcut_input == "block_input"
        width = int(planes * (spec.base_width / 64.0))
        out = planes * self.expansion
        bias = spec.conv_bias
        # The paper and Kaiming He's release stride the first 1x1; torchvision ("v1.5") the 3x3.
        s1, s2 = (stride, 1) if spec.stride_in == "1x1" else (1, stride)
        if self.pre_act:
            self.bn1 = norm(cin)
        self.conv1 = _conv(cin, width, 1, s1, bias="conv1" in bias)
        if self.pre_act:
            self.bn2 = norm(width)
        else:
            self.bn1 = norm(width)
        self.conv2 = _conv(width, width, 3, s2, bias="conv2" in bias)
        if self.pre_act:
            self.bn3 = norm(width)
        else:
            self.bn2 = norm(width)
        self.conv3 = _conv(width, out, 1, 1, bias="conv3" in bias)
        if not self.pre_act:
            self.bn3 = norm(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre_act:
            shortcut = x
            x = self.relu(self.bn1(x))
            if self.downsample is not None:
                shortcut = self.downsample(shortcut if self.shortcut_reads_input else x)
            x = self.conv1(x)
            x = self.conv2(self.relu(self.bn2(x)))
            x = self.conv3(self.relu(self.bn3(x)))
            return x + shortcut
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


class ResNet(nn.Module):
    """Every ResNet of `ResNetSpec`.  Build with `resnet_ref.create_model` or `ResNet(spec)`.

    ``forward_features`` returns the last stage's map (after v2's final BN-ReLU);
    ``forward_head`` pools and classifies.  ``spec`` is kept on the module.
    """

    def __init__(self, spec: ResNetSpec) -> None:
        super().__init__()
        if not isinstance(spec, ResNetSpec):
            raise SpecError(f"ResNet needs a ResNetSpec, got {type(spec).__name__}")
        self.spec = spec
        norm = lambda c: nn.BatchNorm2d(c, eps=spec.bn_eps)  # noqa: E731 - eps overrides applied below
        stem_bias = "stem" in spec.conv_bias

        if spec.input_bn == "affine_free":
            self.data_bn = nn.BatchNorm2d(spec.in_chans, eps=spec.bn_eps, affine=False)
        elif spec.input_bn == "fixed_gamma":
            self.data_bn = FixedGammaBatchNorm2d(spec.in_chans, eps=spec.bn_eps)

        if spec.stem == "7x7":
            self.conv1 = nn.Conv2d(spec.in_chans, spec.stem_width, 7, 2, 3, bias=stem_bias)
        elif spec.stem == "3x3":
            self.conv1 = nn.Conv2d(spec.in_chans, spec.stem_width, 3, 1, 1, bias=stem_bias)
        else:  # deep stem; timm's indices, kept for weight compatibility
            # w/2, w/2, w, or the tiered widths of spec.stem_widths (timm resnet*t: 24, 32, 64)
            first, second, _ = spec.deep_stem_widths
            self.conv1 = nn.Sequential(
                nn.Conv2d(spec.in_chans, first, 3, 2, 1, bias=stem_bias),
                norm(first),
                nn.ReLU(inplace=True),
                nn.Conv2d(first, second, 3, 1, 1, bias=stem_bias),
                norm(second),
                nn.ReLU(inplace=True),
                nn.Conv2d(second, spec.stem_width, 3, 1, 1, bias=stem_bias),
            )
        if spec.stem_norm != "none":
            self.bn1 = norm(spec.stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.stem_relu = spec.stem_norm == "bn_relu"
        if spec.stem_pool == "max":
            self.maxpool = nn.MaxPool2d(3, 2, padding=1)
        elif spec.stem_pool == "max_ceil":
            # Caffe rounds pooled sizes up and pads nothing: 112 -> 56 (floor would give 55).
            self.maxpool = nn.MaxPool2d(3, 2, padding=0, ceil_mode=True)
        else:
            self.maxpool = nn.Identity()

        block_cls = Bottleneck if spec.block == "bottleneck" else BasicBlock
        cin = spec.stem_width
        for index, (planes, count) in enumerate(zip(spec.widths, spec.layers)):
            stride = 1 if index == 0 else 2
            blocks = []
            for b in range(count):
                s = stride if b == 0 else 1
                out = planes * block_cls.expansion
                needs = s != 1 or cin != out or (b == 0 and spec.projection == "first_of_stage")
                downsample = self._shortcut(cin, out, s, norm) if needs else None
                blocks.append(block_cls(cin, planes, s, downsample, spec, norm))
                cin = out
            self.add_module(f"layer{index + 1}", nn.Sequential(*blocks))

        if spec.residual == "v2":
            self.final_bn = norm(cin)
        self.avgpool = (
            nn.AdaptiveAvgPool2d(1) if spec.head_pool == "global" else FixedAvgPool2d(spec.head_pool_size)
        )
        self.fc = nn.Linear(cin, spec.num_classes)

        self._apply_eps_overrides()
        self._init_weights()

    def _shortcut(self, cin: int, cout: int, stride: int, norm: Callable[[int], nn.Module]) -> nn.Module:
        spec = self.spec
        bias = "downsample" in spec.conv_bias
        if spec.residual == "v2":
            # Pre-activation nets project with a bare conv: the BN is in the next block's bn1.  With
            # avg-down (timm resnetv2_*d) the pool strides and the conv follows it, as in v1.
            if spec.shortcut == "avgpool_conv":
                pool = nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False) if stride != 1 else nn.Identity()
                return nn.Sequential(pool, nn.Conv2d(cin, cout, 1, 1, bias=bias))
            return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=bias))
        if spec.shortcut == "avgpool_conv" and stride != 1:
            return nn.Sequential(
                nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False),
                nn.Conv2d(cin, cout, 1, 1, bias=bias),
                norm(cout),
            )
        if spec.shortcut == "avgpool_conv":
            # timm keeps the pool slot as Identity so that names do not depend on the stride.
            return nn.Sequential(nn.Identity(), nn.Conv2d(cin, cout, 1, 1, bias=bias), norm(cout))
        return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=bias), norm(cout))

    def _apply_eps_overrides(self) -> None:
        modules = dict(self.named_modules())
        for name, eps in self.spec.bn_eps_overrides:
            module = modules.get(name)
            if not isinstance(module, nn.modules.batchnorm._BatchNorm):
                raise SpecError(
                    f"ResNetSpec.bn_eps_overrides names {name!r}, which is not a BatchNorm of this architecture"
                )
            module.eps = eps

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d) and module.affine:
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "data_bn"):
            x = self.data_bn(x)
        x = self.conv1(x)
        if hasattr(self, "bn1"):
            x = self.bn1(x)
        if self.stem_relu:
            x = self.relu(x)
        x = self.maxpool(x)
        for index in range(len(self.spec.layers)):
            x = getattr(self, f"layer{index + 1}")(x)
        if hasattr(self, "final_bn"):
            x = self.relu(self.final_bn(x))
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(x)
        # A fixed pool5 can leave several positions: classify each and average (fc is affine,
        # so this equals classifying the averaged features).
        x = x.mean(dim=(2, 3)) if x.shape[-1] * x.shape[-2] > 1 else torch.flatten(x, 1)
        return self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
