"""What the Caffe walk found -> the shared `Skeleton` (and back: which blob each module's output is).

Caffe's conventions are stated here, once, on the skeleton's records: a BatchNorm layer holds only
the statistics (stored as running sums with a scale-factor blob, divided out by `layers`) and its
gamma/beta live in the Scale layer after it, so one skeleton BatchNorm is read from both layers;
a BatchNorm with no Scale after it (its Scale folded elsewhere, or a net without one) runs with
gamma 1 and beta 0.  A pre-activation block's BNs are the ones *before* its convs; the first block
after the stem may have none (its input is the stem's ReLU output, >= 0): its bn1 is then the
identity BN (mean 0, variance 1 - eps, gamma 1, beta 0), under which relu(bn1(x)) = x exactly as
the graph computes.  Everything the spec needs is then decided by `converters.build`.
"""

from __future__ import annotations

import numpy as np

from resnet_port.converters.caffe.graph import ConvUnit, PreAct, PreActBlock, ResNetGraph, weighted_nodes
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


FOLDED = "folded into the conv (its bias carries the shift)"
STATS_FOLDED = "no BatchNorm: its statistics folded into the Scale after the conv (mean 0, variance 1 - eps)"


def _affine_parts(scale: Node | None, bias: Node | None) -> tuple[list[SourceLayer], SourceTensor | None, SourceTensor | None]:
    """(layers, gamma, beta) of a Scale and/or Bias pair.  Scale(bias_term: false) + Bias is
    Scale(bias_term: true); a Scale with its own bias and a Bias layer add up."""
    layers = [SourceLayer(n.name, n.type) for n in (scale, bias) if n is not None]
    beta = _tensor(scale, "bias") if scale is not None else None
    if bias is not None:
        added = _tensor(bias, "bias")
        beta = added if beta is None else SourceTensor(
            (beta.array.astype(np.float32) + added.array.astype(np.float32)).astype(np.float32), f"{beta.ref} + {added.ref}"
        )
    return layers, (_tensor(scale, "weight") if scale is not None else None), beta


def _bn(unit: ConvUnit | PreAct) -> BatchNorm:
    bn, scale, bias = unit.bn, unit.scale, unit.bias
    if bn is None and scale is None and bias is None:  # a merge-BN pass folded the BatchNorm into the conv
        conv = unit.conv
        return BatchNorm.identity(f"the BatchNorm after layer {conv.name!r}", conv.attrs["out"], 1e-5, FOLDED)
    layers, gamma, beta = _affine_parts(scale, bias)
    if bn is None:  # the statistics folded into the Scale / Bias after the conv: zero mean, unit variance
        stats = BatchNorm.identity("", unit.conv.attrs["out"], 1e-5, STATS_FOLDED)
        return BatchNorm(
            label=_label(scale or bias), layers=layers, eps=stats.eps, running_mean=stats.running_mean,
            running_var=stats.running_var, gamma=gamma, beta=beta, absent=STATS_FOLDED,
        )
    if scale is None and bias is None:
        absent = "no Scale layer follows (its scale folded elsewhere)"
    elif scale is None:
        absent = f"no Scale layer between {bn.name} and {bias.name}"
    else:
        absent = f"{scale.name} has no bias_term"
    return BatchNorm(
        label=_label(bn),
        layers=[SourceLayer(bn.name, bn.type), *layers],
        eps=bn.attrs["eps"],
        running_mean=_tensor(bn, "running_mean"),
        running_var=_tensor(bn, "running_var"),
        gamma=gamma,
        beta=beta,
        statistics="caffe_scaled_sums",
        absent=absent,
    )


def _identity_bn(conv: Node, channels: int) -> BatchNorm:
    """bn1 of a pre-activation block whose first conv reads the stem's (non-negative) output directly."""
    eps = 1e-5
    var = np.float32(1.0 - eps)
    why = f"{conv.name} reads the stem's ReLU output directly (no pre-activation in the graph): identity BN"
    return BatchNorm(
        label=f"the missing pre-activation of layer {conv.name!r}",
        layers=[],
        eps=eps,
        running_mean=SourceTensor(np.zeros(channels, np.float32), f"zeros ({why})"),
        running_var=SourceTensor(np.full(channels, var, np.float32), f"1 - eps ({why})"),
        absent=why,
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


def _v1_block(block, cin: int, where: str) -> tuple[Block, int]:
    feeding = cin
    for unit in block.body:
        _check_in_channels(unit, feeding, where)
        feeding = unit.conv.attrs["out"]
    shortcut = Shortcut()
    if block.shortcut is not None:
        _check_in_channels(block.shortcut, cin, where)
        conv = _conv(block.shortcut.conv)
        shortcut = Shortcut("conv", conv, _bn(block.shortcut), conv.stride[0])
    body = [ConvBN(_conv(u.conv), _bn(u)) for u in block.body]
    return Block(label=f"block ending at {block.eltwise.name!r}", residual="v1", body=body, shortcut=shortcut), feeding


def _v2_block(block: PreActBlock, cin: int, where: str) -> tuple[Block, int]:
    feeding = cin
    body = []
    for pre, conv in zip(block.pre, block.body):
        _check_conv_in(conv, feeding, where)
        bn = _bn(pre) if pre is not None else _identity_bn(conv, feeding)
        body.append(ConvBN(_conv(conv), bn))
        feeding = conv.attrs["out"]
    shortcut = Shortcut()
    if block.shortcut is not None:
        _check_conv_in(block.shortcut, cin, where)
        conv = _conv(block.shortcut)
        shortcut = Shortcut("conv", conv, None, conv.stride[0])
    return Block(label=f"block ending at {block.eltwise.name!r}", residual="v2", body=body, shortcut=shortcut), feeding


def _check_conv_in(conv: Node, channels: int, where: str) -> None:
    weight = conv.tensors["weight"]
    if weight.shape[1] * conv.attrs["group"] != channels:
        raise ConversionError(
            f"{where}: layer {conv.name!r} blob 0 has shape {list(weight.shape)}: {weight.shape[1]} input channels, "
            f"but its input has {channels}"
        )


def to_skeleton(graph: ResNetGraph, where: str) -> Skeleton:
    """The walk's stem, blocks and head as skeleton records; the dataflow's channels checked."""
    cin = graph.stem[-1].conv.attrs["out"]
    blocks = []
    for block in graph.blocks:
        made, cin = (_v2_block if isinstance(block, PreActBlock) else _v1_block)(block, cin, where)
        blocks.append(made)
    fc = graph.fc
    if fc.attrs["in"] != cin:
        if cin and fc.attrs["in"] % cin == 0 and fc.attrs["in"] > cin:
            positions = fc.attrs["in"] // cin
            raise ConversionError(
                f"{where}: classifier {fc.name!r} takes {fc.attrs['in']} inputs = {cin} channels x {positions} positions: "
                f"{graph.head_pool.name!r} leaves a spatial map that the InnerProduct reads position by position, which "
                "the reference ResNet's classifier (one weight per pooled channel) cannot hold; not converted"
            )
        raise ConversionError(f"{where}: classifier {fc.name!r} takes {fc.attrs['in']} inputs, the last block makes {cin} channels")
    return Skeleton(
        where=where,
        stem=[ConvBN(_conv(unit.conv), _bn(unit)) for unit in graph.stem],
        stem_pool=_pool(graph.stem_pool) if graph.stem_pool is not None else None,
        blocks=blocks,
        head_pool=_pool(graph.head_pool),
        classifier=Linear(_label(fc), SourceLayer(fc.name, fc.type), _tensor(fc, "weight"), _tensor(fc, "bias")),
        input_bn=_bn(graph.input_bn) if graph.input_bn is not None else None,
        final_bn=_bn(graph.final_bn) if graph.final_bn is not None else None,
    )


def consumed(graph: ResNetGraph) -> set[str]:
    """Every ``layer.blobs[i]`` the walk's layers account for."""
    out: set[str] = set()
    for node in weighted_nodes(graph):
        out.update(node.consumed)
    return out


def blob_modules(graph: ResNetGraph, block_names: list[str]) -> dict[str, str]:
    """Which reference module's output each named Caffe blob equals after a full forward."""
    last = graph.stem[-1]
    out = {last.relu.tops[0] if last.relu else last.conv.tops[0]: "relu(bn1(conv1))"}
    if graph.stem_pool is not None:
        out[graph.stem_pool.tops[0]] = "maxpool"
    # A v2 block's sum may be overwritten in place by the next pre-activation (when nothing else reads it).
    rewritten = {p.bn.tops[0] for p in [graph.final_bn, *(q for b in graph.blocks if isinstance(b, PreActBlock) for q in b.pre)]
                 if p is not None and p.bn.tops[0] in p.bn.bottoms}
    for block, name in zip(graph.blocks, block_names):
        top = (block.eltwise if isinstance(block, PreActBlock) else block.relu).tops[0]
        if top not in rewritten:
            out[top] = name
    out[graph.head_pool.tops[0]] = "avgpool"
    out[graph.fc.tops[0]] = "fc"
    return out


__all__ = ["blob_modules", "consumed", "to_skeleton"]
