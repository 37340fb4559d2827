"""What the Caffe walk found -> the shared `Skeleton` (and back: which blob each module's output is).

Caffe's conventions are stated here, once, on the skeleton's records: a BatchNorm layer holds only
the statistics (stored as running sums with a scale-factor blob, divided out by `layers`) and its
gamma/beta live in the Scale layer after it, so one skeleton BatchNorm is read from both layers;
a BatchNorm with no Scale after it runs with gamma 1 and beta 0.  Everything the spec needs is then
decided by `converters.build`.
"""

from __future__ import annotations

from resnet_port.converters.caffe.graph import ConvUnit, ResNetGraph, units
from resnet_port.converters.caffe.layers import Node
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


def _tensor(node: Node, key: str) -> SourceTensor | None:
    return SourceTensor(node.tensors[key], node.sources[key]) if key in node.tensors else None


def _label(node: Node) -> str:
    return f"layer {node.name!r} ({node.type})"


def _conv(node: Node) -> Conv:
    a = node.attrs
    (ph, pw) = a["pad"]
    return Conv(
        label=_label(node),
        layer=SourceLayer(node.name, node.type),
        weight=_tensor(node, "weight"),
        bias=_tensor(node, "bias"),
        stride=tuple(a["stride"]),
        pad=(ph, pw, ph, pw),
        dilation=tuple(a["dilation"]),
        groups=int(a["group"]),
    )


def _bn(unit: ConvUnit) -> BatchNorm:
    bn, scale = unit.bn, unit.scale
    layers = [SourceLayer(bn.name, bn.type)]
    absent = "no Scale layer follows"
    if scale is not None:
        layers.append(SourceLayer(scale.name, scale.type))
        absent = f"{scale.name} has no bias_term"
    return BatchNorm(
        label=_label(bn),
        layers=layers,
        eps=bn.attrs["eps"],
        running_mean=_tensor(bn, "running_mean"),
        running_var=_tensor(bn, "running_var"),
        gamma=_tensor(scale, "weight") if scale is not None else None,
        beta=_tensor(scale, "bias") if scale is not None else None,
        statistics="caffe_scaled_sums",
        absent=absent,
    )


def _pool(node: Node) -> Pool:
    a = node.attrs
    (ph, pw) = a["pad"]
    return Pool(
        label=_label(node),
        kind="avg" if a["method"] == "ave" else a["method"],
        kernel=tuple(a.get("kernel", (1, 1))),
        stride=tuple(a["stride"]),
        pad=(ph, pw, ph, pw),
        ceil=bool(a["ceil"]),
        global_pool=bool(a["global"]),
    )


def _check_in_channels(unit: ConvUnit, channels: int, where: str) -> None:
    """What feeds a conv in the graph has the channels its weight takes (named as Caffe's blobs)."""
    weight = unit.conv.tensors["weight"]
    if weight.shape[1] * unit.conv.attrs["group"] != channels:
        raise ConversionError(
            f"{where}: layer {unit.conv.name!r} blob 0 has shape {list(weight.shape)}: {weight.shape[1]} input channels, "
            f"but its input has {channels}"
        )


def to_skeleton(graph: ResNetGraph, where: str) -> Skeleton:
    """The walk's stem, blocks and head as skeleton records; the dataflow's channels checked."""
    cin = graph.stem.conv.attrs["out"]
    blocks = []
    for block in graph.blocks:
        feeding = cin
        for unit in block.body:
            _check_in_channels(unit, feeding, where)
            feeding = unit.conv.attrs["out"]
        shortcut = Shortcut()
        if block.shortcut is not None:
            _check_in_channels(block.shortcut, cin, where)
            conv = _conv(block.shortcut.conv)
            shortcut = Shortcut("conv", conv, _bn(block.shortcut), conv.stride[0])
        blocks.append(
            Block(
                label=f"block ending at {block.eltwise.name!r}",
                residual="v1",
                body=[ConvBN(_conv(u.conv), _bn(u)) for u in block.body],
                shortcut=shortcut,
            )
        )
        cin = feeding
    fc = graph.fc
    if fc.attrs["in"] != cin:
        raise ConversionError(f"{where}: classifier {fc.name!r} takes {fc.attrs['in']} inputs, the last block makes {cin} channels")
    return Skeleton(
        where=where,
        stem=[ConvBN(_conv(graph.stem.conv), _bn(graph.stem))],
        stem_pool=_pool(graph.stem_pool) if graph.stem_pool is not None else None,
        blocks=blocks,
        head_pool=_pool(graph.head_pool),
        classifier=Linear(_label(fc), SourceLayer(fc.name, fc.type), _tensor(fc, "weight"), _tensor(fc, "bias")),
    )


def consumed(graph: ResNetGraph) -> set[str]:
    """Every ``layer.blobs[i]`` the walk's layers account for."""
    out: set[str] = set(graph.fc.consumed)
    for unit in units(graph):
        for node in (unit.conv, unit.bn, unit.scale):
            if node is not None:
                out.update(node.consumed)
    return out


def blob_modules(graph: ResNetGraph, block_names: list[str]) -> dict[str, str]:
    """Which reference module's output each named Caffe blob equals after a full forward."""
    out = {graph.stem.relu.tops[0] if graph.stem.relu else graph.stem.conv.tops[0]: "relu(bn1(conv1))"}
    if graph.stem_pool is not None:
        out[graph.stem_pool.tops[0]] = "maxpool"
    for block, name in zip(graph.blocks, block_names):
        out[block.relu.tops[0]] = name
    out[graph.head_pool.tops[0]] = "avgpool"
    out[graph.fc.tops[0]] = "fc"
    return out


__all__ = ["blob_modules", "consumed", "to_skeleton"]
