"""Named architectures: each a small preset over `ResNetSpec`, named as its source names it.

A user porting a file can guess the name: torchvision's ``resnet50`` and ``wide_resnet50_2``, Gluon's
``resnet50_v1`` / ``resnet50_v2``, mmcls's ``resnet50_v1c`` / ``resnet50_v1d``, and ``caffe_resnet50``,
``mxnet_resnet50`` (the classic symbolic one), ``cifar_resnet18`` for the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch

from torch import nn

from resnet_port.errors import SpecError
from resnet_port.resnet_ref.model import ResNet
from resnet_port.resnet_ref.spec import BASIC_LAYERS, BOTTLENECK_LAYERS, ResNetSpec, layers_for_depth


@dataclass(frozen=True)
class ArchInfo:
    """A registered architecture: its spec (1000 classes; 10 for the CIFAR-10 nets), where it comes from, and
    why it differs."""

    name: str
    spec: ResNetSpec
    family: str  # torchvision, mmcls, gluon, gluoncv, mxnet, caffe, cifar
    note: str


_ARCHS: dict[str, ArchInfo] = {}


def register_arch(name: str, spec: ResNetSpec, family: str, note: str) -> None:
    if name in _ARCHS:
        raise SpecError(f"architecture {name!r} is registered twice")
    _ARCHS[name] = ArchInfo(name, spec, family, note)


def _standard(depth: int, **changes) -> ResNetSpec:
    block, layers = layers_for_depth(depth)
    return ResNetSpec(block=block, layers=layers, **changes)


ALL_DEPTHS = sorted(BASIC_LAYERS) + sorted(BOTTLENECK_LAYERS)

for _d in ALL_DEPTHS:
    # torchvision / timm / mmcls "pytorch" style: stride in the 3x3 ("ResNet v1.5").
    register_arch(f"resnet{_d}", _standard(_d), "torchvision", "torchvision/mmcls layout; bottleneck stride in the 3x3 (v1.5)")

for _d in (50, 101):
    register_arch(
        f"wide_resnet{_d}_2",
        _standard(_d, base_width=128),
        "torchvision",
        "bottleneck inner width doubled (Zagoruyko & Komodakis); stride in the 3x3",
    )

for _d in (50, 101, 152):
    # mmcls ResNetV1c: deep stem of three 3x3 convs; V1d adds the avg-pool shortcut.
    register_arch(f"resnet{_d}_v1c", _standard(_d, stem="deep"), "mmcls", "deep 3x3 stem (32-32-64), stride in the 3x3")
    register_arch(
        f"resnet{_d}_v1d",
        _standard(_d, stem="deep", shortcut="avgpool_conv"),
        "mmcls",
        "deep 3x3 stem and average-pool-then-1x1 shortcut ('avg down')",
    )

for _d in (18, 34, 50, 101, 152):
    # Gluon BottleneckV1 strides the first 1x1 and gives both 1x1 body convs a bias.
    _bias = ("conv1", "conv3") if _d >= 50 else ()
    register_arch(
        f"resnet{_d}_v1",
        _standard(_d, stride_in="1x1", conv_bias=_bias),
        "gluon",
        "Gluon model zoo V1 (and ONNX zoo v1): stride in the first 1x1, biases on the 1x1 body convs",
    )
    register_arch(
        f"resnet{_d}_v2",
        _standard(_d, residual="v2", input_bn="affine_free"),
        "gluon",
        "Gluon model zoo V2 (and ONNX zoo v2): pre-activation, affine-free input BN, final BN-ReLU",
    )

for _d in (18, 34, 50, 101, 152):
    # Gluon's get_resnet(version, depth, thumbnail=True): the 7x7 stem, its BN-ReLU and max pool become one
    # bare 3x3/1 conv (for small inputs); everything else is resnetN_v1 / resnetN_v2.
    for _v in ("v1", "v2"):
        register_arch(
            f"resnet{_d}_{_v}_thumbnail",
            _ARCHS[f"resnet{_d}_{_v}"].spec.replace(stem="3x3", stem_norm="none", stem_pool="none"),
            "gluon",
            f"Gluon model zoo {_v.upper()} with thumbnail=True: a bare 3x3/1 stem conv, no BN-ReLU, no max pool",
        )

for _d in (18, 34, 50, 101, 152):
    # GluonCV ResNetV1b is torchvision's layout (stride in the 3x3, no biases): an alias.
    register_arch(f"resnet{_d}_v1b", _standard(_d), "gluoncv", f"GluonCV ResNetV1b: the same network as resnet{_d}")

for _d in (50, 101, 152):
    # GluonCV's v1c / v1d are mmcls's (deep stem 32-32-64; v1d avg-down); v1s / v1e widen the stem.
    register_arch(
        f"resnet{_d}_v1s", _standard(_d, stem="deep", stem_width=128), "gluoncv",
        "GluonCV ResNetV1s: deep 3x3 stem 64-64-128, stride in the 3x3",
    )
    register_arch(
        f"resnet{_d}_v1e", _standard(_d, stem="deep", stem_width=128, shortcut="avgpool_conv"), "gluoncv",
        "GluonCV ResNetV1e: deep 3x3 stem 64-64-128 and the average-pool shortcut ('avg down')",
    )

for _d in ALL_DEPTHS:
    # The old MXNet model zoo's symbolic resnet-N: pre-activation, eps 2e-5 everywhere, a data BN
    # with fix_gamma=True, and a projection on the first unit of every stage.
    register_arch(
        f"mxnet_resnet{_d}",
        _standard(_d, residual="v2", input_bn="fixed_gamma", bn_eps=2e-5, projection="first_of_stage"),
        "mxnet",
        "MXNet symbolic resnet-N: pre-activation, data BN (fix_gamma), eps 2e-5, takes 0-255 RGB",
    )

for _d in (50, 101, 152):
    register_arch(
        f"caffe_resnet{_d}",
        _standard(
            _d,
            stride_in="1x1",
            stem_pool="max_ceil",
            head_pool="fixed",
            conv_bias=("stem",) if _d == 50 else (),
        ),
        "caffe",
        "Kaiming He's Caffe release: stride in the 1x1, ceil-mode pool1, 7x7/1 pool5"
        + (", conv1 with bias" if _d == 50 else ""),
    )

for _d in (20, 56, 110):
    # GluonCV's CIFAR-10 ResNets (gluoncv/model_zoo/cifarresnet.py): basic blocks, (d - 2) / 6 per stage,
    # widths 16-32-64 after a 3x3/1 stem of 16.  V1's stem is conv-BN with no ReLU; V2 starts with an
    # affine-free input BN and a bare conv, and its projections read the raw block input.
    _n = (_d - 2) // 6
    _cifar = dict(block="basic", layers=(_n,) * 3, widths=(16, 32, 64), stem="3x3", stem_width=16, stem_pool="none",
                  num_classes=10)
    register_arch(
        f"cifar_resnet{_d}_v1", ResNetSpec(**_cifar, stride_in="1x1", stem_norm="bn"), "gluoncv",
        "GluonCV CIFARResNetV1: 3x3/1 stem of 16 with BN and no ReLU, widths 16-32-64, 10 classes",
    )
    register_arch(
        f"cifar_resnet{_d}_v2",
        ResNetSpec(**_cifar, residual="v2", input_bn="affine_free", stem_norm="none", v2_shortcut_input="block_input"),
        "gluoncv",
        "GluonCV CIFARResNetV2: affine-free input BN, bare 3x3/1 stem conv, projections of the raw block input, "
        "widths 16-32-64, 10 classes",
    )

for _d in (18, 34, 50, 101, 152):
    register_arch(f"cifar_resnet{_d}", _standard(_d, stem="3x3", stem_pool="none"), "cifar", "3x3/1 stem, no max pool (mmcls ResNet_CIFAR)")


# timm's ResNets whose spec no name above has (resnet50c/d, 101c/d, 152c/d equal mmcls V1c/V1d,
# resnet18..200 and wide_resnet*_2 torchvision's): layers, block, deep stem output width, the
# tiered first two widths, avg-down.  timm's "s" nets have a 64-64-128 deep stem; its "t" nets the
# tiered 24-32-64 one with avg-down (timm resnet.py: stem_type 'deep' / 'deep_tiered', avg_down).
_TIMM = {
    "resnet10t": ("basic", (1, 1, 1, 1), 64, (24, 32), True),
    "resnet14t": ("bottleneck", (1, 1, 1, 1), 64, (24, 32), True),
    "resnet18d": ("basic", (2, 2, 2, 2), 64, (), True),
    "resnet26": ("bottleneck", (2, 2, 2, 2), None, (), False),
    "resnet26d": ("bottleneck", (2, 2, 2, 2), 64, (), True),
    "resnet26t": ("bottleneck", (2, 2, 2, 2), 64, (24, 32), True),
    "resnet34d": ("basic", (3, 4, 6, 3), 64, (), True),
    "resnet50s": ("bottleneck", (3, 4, 6, 3), 128, (), False),
    "resnet50t": ("bottleneck", (3, 4, 6, 3), 64, (24, 32), True),
    "resnet101s": ("bottleneck", (3, 4, 23, 3), 128, (), False),
    "resnet152s": ("bottleneck", (3, 8, 36, 3), 128, (), False),
    "resnet200d": ("bottleneck", (3, 24, 36, 3), 64, (), True),
}
for _name, (_block, _layers, _deep, _tiers, _avg) in _TIMM.items():
    _spec = ResNetSpec(
        block=_block,
        layers=_layers,
        stem="deep" if _deep else "7x7",
        stem_width=_deep or 64,
        stem_widths=_tiers,
        shortcut="avgpool_conv" if _avg else "conv",
    )
    _stem = "7x7 stem" if not _deep else f"deep stem {'-'.join(map(str, _spec.deep_stem_widths))}"
    register_arch(
        _name, _spec, "timm",
        f"timm resnet.py: {_stem}{', avg-pool shortcut' if _avg else ''}, stride in the 3x3",
    )


# timm's ResNetV2 (resnetv2.py, the BatchNorm ones): pre-activation blocks, bottleneck stride in the
# 3x3, a stem with no BN of its own (7x7 + max pool; or deep / tiered, ending at the bare third conv)
# and, with the deep stems, the avg-pool shortcut.  BiT (GroupNorm, weight standardisation), EvoNorm
# and FRN variants have no reference form.
for _d in (18, 34, 50, 101, 152):
    for _suffix, _stem_kw in (("", {}), ("d", {"stem": "deep", "shortcut": "avgpool_conv"})):
        register_arch(
            f"resnetv2_{_d}{_suffix}", _standard(_d, residual="v2", stem_norm="none", **_stem_kw), "timm",
            f"timm resnetv2.py: pre-activation, stride in the 3x3, {'deep stem + avg-pool shortcut' if _suffix else '7x7 stem'} "
            "without a BN of its own",
        )
register_arch(
    "resnetv2_50t",
    _standard(50, residual="v2", stem_norm="none", stem="deep", stem_widths=(24, 32), shortcut="avgpool_conv"),
    "timm",
    "timm resnetv2.py: pre-activation, tiered deep stem 24-32-64 without a BN of its own, avg-pool shortcut",
)


def list_archs(family: str | None = None) -> list[str]:
    """Registered arch names, optionally of one family, in registration order."""
    return [name for name, info in _ARCHS.items() if family is None or info.family == family]


def arch_info(name: str) -> ArchInfo:
    try:
        return _ARCHS[name]
    except KeyError:
        close = [n for n in _ARCHS if name.lower().replace("-", "") in n]
        hint = f"; did you mean {', '.join(close[:5])}?" if close else "; `resnet-port archs` lists them"
        raise SpecError(f"unknown architecture {name!r}{hint}") from None


def get_spec(name: str, num_classes: int | None = None) -> ResNetSpec:
    """The registered spec; ``num_classes`` None keeps its own (1000, or 10 for GluonCV's CIFAR nets)."""
    spec = arch_info(name).spec
    return spec if num_classes in (None, spec.num_classes) else spec.replace(num_classes=num_classes)


def create_model(name: str, num_classes: int | None = None) -> nn.Module:
    """Build a registered architecture with freshly initialised weights (``num_classes`` as `get_spec`)."""
    return ResNet(get_spec(name, num_classes))


def build_model(spec: ResNetSpec) -> ResNet:
    """Build the model a spec describes (converters hand specs over; they never build models)."""
    return ResNet(spec)


def find_arch(spec: ResNetSpec) -> str | None:
    """The registered name whose spec equals ``spec`` apart from the class count, if any."""
    for name, info in _ARCHS.items():
        if info.spec == spec.replace(num_classes=info.spec.num_classes):
            return name
    return None


def state_dict_problems(spec: ResNetSpec, state_dict: Mapping[str, "torch.Tensor"]) -> str:
    """'' when ``state_dict`` fills every parameter and buffer of ``spec`` with the right shapes;
    otherwise one line listing what is missing, unexpected, or of the wrong shape.
    (``num_batches_tracked`` may be absent: no source framework has it.)"""
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in ResNet(spec).state_dict().items()}
    missing = [k for k in expected if k not in state_dict and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [
        f"{k} {tuple(state_dict[k].shape)} (expected {shape})"
        for k, shape in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != shape
    ]
    # Weights and statistics are real numbers: an integer or complex tensor would be cast silently (the
    # imaginary part or the fraction dropped); a NaN or infinity (a diverged run, a damaged file) or a
    # negative variance (sqrt(var + eps) is NaN) makes every output NaN.  None of them is a network.
    not_real: list[str] = []
    not_finite: list[str] = []
    negative: list[str] = []
    for k in expected:
        value = state_dict.get(k)
        if value is None or k.endswith("num_batches_tracked"):
            continue
        if not value.is_floating_point():
            not_real.append(f"{k} ({str(value.dtype).removeprefix('torch.')})")
        elif bad := int((~torch.isfinite(value)).sum()):
            not_finite.append(f"{k} ({bad} of {value.numel()} values)")
        elif k.endswith("running_var") and bool((value < 0).any()):
            negative.append(f"{k} ({int((value < 0).sum())} of {value.numel()} values)")
    parts = []
    for label, items in (
        ("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong), ("not floating-point", not_real),
        ("not finite (NaN or infinity)", not_finite), ("negative BatchNorm variance", negative),
    ):
        if items:
            more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
            parts.append(f"{label}: {', '.join(items[:5])}{more}")
    return "; ".join(parts)
