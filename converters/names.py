"""Tensors already renamed onto the reference names -> the shared `Skeleton`, from names and shapes.

A state-dict layout (Gluon ``save_parameters``, torchvision, timm, mmcls, ...) has no graph: its
rename table (the layout's own module) maps each stored name onto a reference name such as
``layer2.0.conv1.weight``, and this module reads the network back from those names and the
tensors' shapes.  What names cannot show comes from the layout's code and is passed in as a
`LayoutConventions`: where a bottleneck strides, each BN's eps, whether the input BN's gamma is
ignored, the stem pool.  Strides follow the reference's placement (stride 2 on the first block of
every stage after the first), since a state dict has no strides of its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

from resnet_port.converters.skeleton import (
    BatchNorm,
    Block,
    Conv,
    ConvBN,
    Linear,
    Pool,
    Shortcut,
    Skeleton,
    SourceLayer,
    SourceTensor,
)
from resnet_port.errors import ConversionError

BN_PARAMS = ("weight", "bias", "running_mean", "running_var")
_BLOCK = re.compile(r"^layer(\d+)\.(\d+)\.")

# The stem pool of the ImageNet ResNets (torchvision, Gluon, timm, mmcls): 3x3/2, pad 1, floor.
MAX_POOL_3X3_2 = Pool("maxpool", "max", (3, 3), (2, 2), (1, 1, 1, 1))
GLOBAL_AVG_POOL = Pool("avgpool", "avg", global_pool=True)


@dataclass(frozen=True)
class LayoutConventions:
    """What a layout's code decides and its names cannot show."""

    layout: str  # how the report names the layout ("gluon V1 parameters", "torchvision state dict")
    residual: str  # "v1" | "v2"
    stride_in: str  # "1x1" | "3x3": the bottleneck conv that strides
    bn_eps: float
    input_bn_fix_gamma: bool = False  # the input BN's stored gamma is ignored (Gluon scale=False)
    stem_pool: Pool | None = MAX_POOL_3X3_2
    head_pool: Pool = GLOBAL_AVG_POOL
    # What follows a one-conv stem (ResNetSpec.stem_norm): the layout's code says, not its names, so
    # that a file that merely lacks bn1 is refused instead of read as a stem without one.
    stem_norm: str = "bn_relu"
    v2_shortcut_input: str = "preactivated"  # what a v2 projection reads (ResNetSpec.v2_shortcut_input)


class _Reader:
    def __init__(self, tensors: Mapping[str, SourceTensor], where: str, conventions: LayoutConventions) -> None:
        self.tensors = tensors
        self.where = where
        self.conv = conventions
        self.used: set[str] = set()

    def fail(self, message: str) -> ConversionError:
        return ConversionError(f"{self.where}: {message}")

    def take(self, key: str) -> SourceTensor | None:
        tensor = self.tensors.get(key)
        if tensor is not None:
            self.used.add(key)
        return tensor

    def need(self, key: str, what: str) -> SourceTensor:
        tensor = self.take(key)
        if tensor is None:
            raise self.fail(f"a {self.conv.layout} file needs {key} ({what}); not found")
        return tensor

    def layer(self, module: str) -> SourceLayer:
        sources = sorted({t.ref.rsplit(".", 1)[0] for k, t in self.tensors.items() if k.startswith(module + ".")})
        return SourceLayer(", ".join(sources) or module, self.conv.layout)

    def label(self, module: str, param: str) -> str:
        tensor = self.tensors.get(f"{module}.{param}")
        return f"{module}.{param} ({tensor.ref})" if tensor is not None and tensor.ref != f"{module}.{param}" else f"{module}.{param}"

    def conv_at(self, module: str, stride: int, what: str) -> Conv:
        weight = self.need(f"{module}.weight", what)
        if weight.array.ndim != 4:
            raise self.fail(f"{self.label(module, 'weight')} has shape {tuple(weight.array.shape)}; a conv weight has 4 axes")
        k = int(weight.array.shape[2])
        return Conv(
            label=self.label(module, "weight"),
            layer=self.layer(module),
            weight=weight,
            bias=self.take(f"{module}.bias"),
            stride=(stride, stride),
            pad=(k // 2,) * 4,
        )

    def bn_at(self, module: str, what: str, fix_gamma: bool = False) -> BatchNorm:
        mean = self.need(f"{module}.running_mean", what)
        var = self.need(f"{module}.running_var", what)
        gamma, beta = self.take(f"{module}.weight"), self.take(f"{module}.bias")
        self.take(f"{module}.num_batches_tracked")
        return BatchNorm(
            label=self.label(module, "running_mean").replace(".running_mean", ""),
            layers=[self.layer(module)],
            eps=self.conv.bn_eps,
            running_mean=mean,
            running_var=var,
            gamma=gamma,
            beta=beta,
            fix_gamma=fix_gamma and gamma is not None,
            absent="the layout stores no gamma/beta here",
        )


def _stage_blocks(reader: _Reader) -> list[list[int]]:
    """Block indices per stage, checked to be numbered from 1 (stages) and 0 (blocks) without gaps."""
    seen: dict[int, set[int]] = {}
    for key in reader.tensors:
        m = _BLOCK.match(key)
        if m:
            seen.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    if not seen:
        raise reader.fail(f"a {reader.conv.layout} file needs the residual stages (layer1.0.*); not found")
    stages = sorted(seen)
    if stages != list(range(1, len(stages) + 1)):
        raise reader.fail(f"the file holds stages {stages}; expected them numbered from 1 without gaps")
    out = []
    for stage in stages:
        blocks = sorted(seen[stage])
        if blocks != list(range(len(blocks))):
            raise reader.fail(f"stage {stage} holds blocks {blocks}; expected 0..{len(blocks) - 1}")
        out.append(blocks)
    return out


def skeleton_from_names(tensors: Mapping[str, SourceTensor], where: str, conventions: LayoutConventions) -> Skeleton:
    """Read the skeleton from reference-named tensors; every tensor must find its place."""
    reader = _Reader(tensors, where, conventions)
    residual = conventions.residual
    input_bn = None
    if "data_bn.running_mean" in tensors:
        input_bn = reader.bn_at("data_bn", "the input BatchNorm", fix_gamma=conventions.input_bn_fix_gamma)
    if "conv1.0.weight" in tensors:  # the deep stem: conv1.0/.1, conv1.3/.4, conv1.6 + bn1
        stem = [
            ConvBN(reader.conv_at("conv1.0", 2, "the deep stem"), reader.bn_at("conv1.1", "the deep stem")),
            ConvBN(reader.conv_at("conv1.3", 1, "the deep stem"), reader.bn_at("conv1.4", "the deep stem")),
            ConvBN(
                reader.conv_at("conv1.6", 1, "the deep stem"),
                reader.bn_at("bn1", "the stem BatchNorm") if conventions.stem_norm != "none" else None,
            ),
        ]
    else:
        weight = reader.need("conv1.weight", "the stem conv")
        stride = 2 if weight.array.ndim == 4 and weight.array.shape[2] == 7 else 1
        stem_bn = reader.bn_at("bn1", "the stem BatchNorm") if conventions.stem_norm != "none" else None
        stem = [ConvBN(reader.conv_at("conv1", stride, "the stem conv"), stem_bn)]
    fc_weight = reader.need("fc.weight", "the classifier")
    blocks = []
    for s, indices in enumerate(_stage_blocks(reader), 1):
        for b in indices:
            prefix = f"layer{s}.{b}"
            stride = 2 if s > 1 and b == 0 else 1
            bottleneck = f"{prefix}.conv3.weight" in tensors
            if bottleneck:
                strides = (stride, 1, 1) if conventions.stride_in == "1x1" else (1, stride, 1)
            else:
                strides = (stride, 1)
            body = []
            for i, conv_stride in enumerate(strides, 1):
                # convK and bnK: the BN after the conv in v1, before it (pre-activation) in v2.
                conv = reader.conv_at(f"{prefix}.conv{i}", conv_stride, f"body conv {i} of block {prefix}")
                body.append(ConvBN(conv, reader.bn_at(f"{prefix}.bn{i}", f"the BatchNorm of conv{i} of block {prefix}")))
            shortcut = Shortcut()
            if f"{prefix}.downsample.2.running_mean" in tensors:  # pool slot, conv, BN ("avg down")
                conv = reader.conv_at(f"{prefix}.downsample.1", 1, f"the projection of block {prefix}")
                shortcut = Shortcut("avgpool_conv", conv, reader.bn_at(f"{prefix}.downsample.2", "the projection BatchNorm"), stride)
            elif residual == "v2" and f"{prefix}.downsample.1.weight" in tensors:  # pool slot, bare conv
                conv = reader.conv_at(f"{prefix}.downsample.1", 1, f"the projection of block {prefix}")
                shortcut = Shortcut("avgpool_conv", conv, None, stride, reads=conventions.v2_shortcut_input)
            elif f"{prefix}.downsample.0.weight" in tensors:
                conv = reader.conv_at(f"{prefix}.downsample.0", stride, f"the projection of block {prefix}")
                bn = reader.bn_at(f"{prefix}.downsample.1", "the projection BatchNorm") if residual == "v1" else None
                shortcut = Shortcut("conv", conv, bn, stride, reads=conventions.v2_shortcut_input)
            blocks.append(Block(f"block {prefix}", residual, body, shortcut))
    final_bn = reader.bn_at("final_bn", "v2's final BatchNorm") if residual == "v2" else None
    classifier = Linear(reader.label("fc", "weight"), reader.layer("fc"), fc_weight, reader.take("fc.bias"))
    unused = sorted(set(tensors) - reader.used)
    if unused:
        shown = ", ".join(f"{k} ({tensors[k].ref})" if tensors[k].ref != k else k for k in unused[:5])
        more = f" (+{len(unused) - 5} more)" if len(unused) > 5 else ""
        raise reader.fail(f"tensor(s) {shown}{more} have no place in a {conventions.residual} ResNet of this layout")
    return Skeleton(
        where=where,
        input_bn=input_bn,
        stem=stem,
        stem_pool=conventions.stem_pool,
        blocks=blocks,
        final_bn=final_bn,
        head_pool=conventions.head_pool,
        classifier=classifier,
        stem_relu=conventions.stem_norm == "bn_relu",
    )


__all__ = ["GLOBAL_AVG_POOL", "MAX_POOL_3X3_2", "LayoutConventions", "skeleton_from_names"]
