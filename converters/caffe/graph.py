"""The Caffe layer graph -> a `ResNetSpec` and a state_dict in the reference names.

Layers are paired with the reference modules by their place in the dataflow graph (the stem is
what consumes the input; a block is two paths from one blob that meet at an Eltwise sum; the head
is the average pool and InnerProduct after the last block), never by name or by order in the file.
The spec is inferred from what the graph holds (depth per stage, widths, where the stride sits,
pooling mode and rounding, conv biases, eps per BatchNorm, pool5's kernel), so other depths and
edited graphs convert too; a graph that is not a post-activation ResNet is refused with a message
naming the first layer that does not fit.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from resnet_port.converters.caffe.layers import Node
from resnet_port.errors import ConversionError
from resnet_port.resnet_ref import ResNetSpec


@dataclass
class ConvUnit:
    """Convolution -> BatchNorm -> Scale -> (ReLU): one reference conv + bn pair."""

    conv: Node
    bn: Node
    scale: Node | None
    relu: Node | None
    out: str  # tensor id after the unit


@dataclass
class Block:
    body: list[ConvUnit]
    shortcut: ConvUnit | None
    eltwise: Node
    relu: Node
    stride: int
    out: str


@dataclass
class ResNetGraph:
    """What the walk found, before it becomes a spec."""

    input_name: str
    input_shape: tuple[int, ...] | None
    stem: ConvUnit
    stem_pool: Node | None
    blocks: list[Block]
    head_pool: Node
    fc: Node
    ignored: list[Node] = field(default_factory=list)  # Softmax / Input: no weights, nothing to map


class _Dataflow:
    """Versioned blobs: Caffe's in-place layers (top == bottom) make a new version of the blob."""

    def __init__(self, nodes: list[Node], where: str) -> None:
        self.where = where
        self.inputs: dict[str, list[str]] = {}
        self.outputs: dict[str, list[str]] = {}
        self.consumers: dict[str, list[Node]] = {}
        self.channels: dict[str, int] = {}
        self.input_nodes: list[Node] = []
        current: dict[str, str] = {}
        for node in nodes:
            ids = []
            for bottom in node.bottoms:
                if bottom not in current:
                    raise ConversionError(f"{where}: layer {node.name!r} reads blob {bottom!r}, which no earlier layer makes")
                ids.append(current[bottom])
            self.inputs[node.name] = ids
            for tid in ids:
                self.consumers.setdefault(tid, []).append(node)
            if node.type in ("Dropout", "Split"):  # aliases: no new value
                outs = [ids[0]] * len(node.tops)
            else:
                outs = [f"{node.name}:{i}" for i in range(len(node.tops))]
            self.outputs[node.name] = outs
            for top, tid in zip(node.tops, outs):
                current[top] = tid
            if node.attrs.get("input"):
                self.input_nodes.append(node)
        # The pass-through layers are not consumers of interest: skip them in consumer lists.
        for tid, users in self.consumers.items():
            self.consumers[tid] = [n for n in users if n.type not in ("Dropout", "Split")]

    def users(self, tid: str) -> list[Node]:
        return self.consumers.get(tid, [])

    def sole_user(self, tid: str, after: Node) -> Node | None:
        users = self.users(tid)
        if len(users) > 1:
            names = ", ".join(repr(n.name) for n in users)
            raise ConversionError(f"{self.where}: the output of layer {after.name!r} feeds {names}; a ResNet feeds one layer here")
        return users[0] if users else None

    def out(self, node: Node) -> str:
        return self.outputs[node.name][0]


def _unit(flow: _Dataflow, conv: Node) -> ConvUnit:
    where = flow.where
    if conv.type != "Convolution":
        raise ConversionError(f"{where}: layer {conv.name!r} ({conv.type}) does not fit a ResNet: expected a Convolution here")
    bn = flow.sole_user(flow.out(conv), conv)
    if bn is None or bn.type != "BatchNorm":
        found = "nothing" if bn is None else f"{bn.name!r} ({bn.type})"
        raise ConversionError(f"{where}: Convolution {conv.name!r} is followed by {found}; a ResNet follows it with BatchNorm")
    if bn.attrs["channels"] != conv.attrs["out"]:
        raise ConversionError(
            f"{where}: BatchNorm {bn.name!r} has {bn.attrs['channels']} channels, Convolution {conv.name!r} makes {conv.attrs['out']}"
        )
    tid = flow.out(bn)
    nxt = flow.sole_user(tid, bn)
    scale = None
    if nxt is not None and nxt.type == "Scale":
        scale = nxt
        if scale.attrs["channels"] != bn.attrs["channels"]:
            raise ConversionError(
                f"{where}: Scale {scale.name!r} has {scale.attrs['channels']} channels, BatchNorm {bn.name!r} {bn.attrs['channels']}"
            )
        tid = flow.out(scale)
        users = flow.users(tid)
        nxt = users[0] if len(users) == 1 else None
    relu = None
    if nxt is not None and nxt.type == "ReLU":
        if nxt.attrs["negative_slope"] != 0.0:
            raise ConversionError(f"{where}: ReLU {nxt.name!r} has negative_slope {nxt.attrs['negative_slope']}; the reference ResNet uses 0")
        relu = nxt
        tid = flow.out(relu)
    return ConvUnit(conv, bn, scale, relu, tid)


def _path_to_eltwise(flow: _Dataflow, start: Node) -> tuple[list[ConvUnit], Node]:
    """Follow conv units from ``start`` until an Eltwise; return the units and the Eltwise."""
    units = [_unit(flow, start)]
    while True:
        users = flow.users(units[-1].out)
        if not users:
            raise ConversionError(
                f"{flow.where}: the output of Convolution {units[-1].conv.name!r} is used by no layer; "
                "a ResNet branch ends at an Eltwise sum"
            )
        if len(users) != 1:
            names = ", ".join(repr(n.name) for n in users)
            raise ConversionError(f"{flow.where}: the output of Convolution {units[-1].conv.name!r} feeds {names}; a ResNet branch feeds one layer")
        nxt = users[0]
        if nxt.type == "Eltwise":
            return units, nxt
        if units[-1].relu is None:
            raise ConversionError(f"{flow.where}: layer {nxt.name!r} follows {units[-1].bn.name!r} without a ReLU; not a ResNet branch")
        units.append(_unit(flow, nxt))


def _stride(unit: ConvUnit) -> int:
    sh, sw = unit.conv.attrs["stride"]
    if sh != sw:
        raise ConversionError(f"layer {unit.conv.name!r} has stride {sh}x{sw}; the reference ResNet needs equal strides")
    return sh


def _block(flow: _Dataflow, tid: str) -> Block:
    where = flow.where
    users = flow.users(tid)
    paths: list[tuple[list[ConvUnit], Node]] = []
    identity_into: Node | None = None
    for user in users:
        if user.type == "Eltwise":
            identity_into = user
        else:
            paths.append(_path_to_eltwise(flow, user))
    if identity_into is not None and len(paths) == 1 and paths[0][1] is identity_into:
        body, eltwise = paths[0]
        shortcut = None
    elif identity_into is None and len(paths) == 2 and paths[0][1] is paths[1][1]:
        (a, eltwise), (b, _) = paths
        body, short = (a, b) if len(a) > len(b) else (b, a)
        if len(short) != 1 or len(body) < 2:
            raise ConversionError(
                f"{where}: Eltwise {eltwise.name!r} joins paths of {len(a)} and {len(b)} convolutions; a ResNet block joins "
                "a body of 2 or 3 with an identity or one projection"
            )
        shortcut = short[0]
        if shortcut.relu is not None:
            raise ConversionError(f"{where}: the projection {shortcut.conv.name!r} has a ReLU ({shortcut.relu.name!r}) before the sum")
    else:
        names = ", ".join(repr(u.name) for u in users) or "nothing"
        raise ConversionError(f"{where}: the blob after the previous block feeds {names}; expected a residual block (two paths meeting at an Eltwise sum)")
    if eltwise.attrs["operation"] != "sum" or any(c != 1.0 for c in eltwise.attrs["coeff"]) or len(eltwise.bottoms) != 2:
        raise ConversionError(f"{where}: Eltwise {eltwise.name!r} is not a plain sum of two blobs")
    if body[-1].relu is not None:
        raise ConversionError(f"{where}: the last body convolution {body[-1].conv.name!r} has a ReLU before the sum; this is not a post-activation ResNet")
    relu = flow.sole_user(flow.out(eltwise), eltwise)
    if relu is None or relu.type != "ReLU":
        raise ConversionError(f"{where}: Eltwise {eltwise.name!r} is not followed by a ReLU")
    strides = [_stride(u) for u in body]
    stride = int(np.prod(strides))
    if sorted(strides)[:-1] != [1] * (len(strides) - 1):
        raise ConversionError(f"{where}: block ending at {eltwise.name!r} strides more than one body convolution: {strides}")
    if shortcut is not None and _stride(shortcut) != stride:
        raise ConversionError(f"{where}: projection {shortcut.conv.name!r} has stride {_stride(shortcut)}, the body {stride}")
    return Block(body, shortcut, eltwise, relu, stride, flow.out(relu))


def walk(nodes: list[Node], where: str) -> ResNetGraph:
    """Find the stem, the blocks and the head of a post-activation ResNet in ``nodes``."""
    flow = _Dataflow(nodes, where)
    if len(flow.input_nodes) != 1 or not flow.input_nodes[0].tops:
        raise ConversionError(f"{where}: the net must have exactly one input layer (Input, input: header, or one data layer)")
    input_node = flow.input_nodes[0]
    shapes = input_node.attrs.get("shapes") or [None]
    tid = flow.out(input_node)
    users = flow.users(tid)
    if len(users) != 1:
        raise ConversionError(f"{where}: the input {input_node.tops[0]!r} feeds {len(users)} layers; a ResNet feeds one convolution")
    stem = _unit(flow, users[0])
    if stem.relu is None:
        raise ConversionError(f"{where}: the stem {stem.conv.name!r} has no ReLU")
    tid = stem.out
    stem_pool = None
    nxt = flow.users(tid)
    if len(nxt) == 1 and nxt[0].type == "Pooling":
        stem_pool = nxt[0]
        tid = flow.out(stem_pool)
    blocks: list[Block] = []
    while True:
        users = flow.users(tid)
        if len(users) == 1 and users[0].type == "Pooling":
            break
        if not users:
            raise ConversionError(f"{where}: the net ends after {(blocks[-1].relu if blocks else stem.conv).name!r} without a pool and classifier")
        blocks.append(_block(flow, tid))
        tid = blocks[-1].out
    if not blocks:
        raise ConversionError(f"{where}: no residual block found after the stem {stem.conv.name!r}")
    head_pool = users[0]
    fc = flow.sole_user(flow.out(head_pool), head_pool)
    if fc is None or fc.type != "InnerProduct":
        found = "nothing" if fc is None else f"{fc.name!r} ({fc.type})"
        raise ConversionError(f"{where}: pool {head_pool.name!r} is followed by {found}; expected the InnerProduct classifier")
    ignored = [input_node]
    for user in flow.users(flow.out(fc)):
        if user.attrs.get("terminal"):
            ignored.append(user)  # a loss or accuracy head of a training net
            continue
        if user.type != "Softmax":
            raise ConversionError(f"{where}: layer {user.name!r} ({user.type}) after the classifier does not fit a ResNet")
        ignored.append(user)
        if flow.users(flow.out(user)):
            raise ConversionError(f"{where}: layer {flow.users(flow.out(user))[0].name!r} after the Softmax does not fit a ResNet")
    for extra in input_node.tops[1:]:  # labels: read only by the loss and accuracy heads
        for user in flow.users(flow.outputs[input_node.name][input_node.tops.index(extra)]):
            if not user.attrs.get("terminal"):
                raise ConversionError(f"{where}: layer {user.name!r} reads the labels {extra!r}; only loss and accuracy layers may")
    graph = ResNetGraph(input_node.tops[0], shapes[0], stem, stem_pool, blocks, head_pool, fc, ignored)
    _check_all_visited(nodes, graph, where)
    return graph


def _units(graph: ResNetGraph) -> list[ConvUnit]:
    out = [graph.stem]
    for block in graph.blocks:
        out.extend(block.body)
        if block.shortcut is not None:
            out.append(block.shortcut)
    return out


def _check_all_visited(nodes: list[Node], graph: ResNetGraph, where: str) -> None:
    seen: set[str] = {n.name for n in graph.ignored}
    for unit in _units(graph):
        seen.update(n.name for n in (unit.conv, unit.bn, unit.scale, unit.relu) if n is not None)
    for block in graph.blocks:
        seen.update((block.eltwise.name, block.relu.name))
    seen.update(n.name for n in (graph.stem_pool, graph.head_pool, graph.fc) if n is not None)
    for node in nodes:
        if node.name not in seen and node.type not in ("Dropout", "Split"):
            raise ConversionError(f"{where}: layer {node.name!r} ({node.type}) is not part of the ResNet the graph forms")


# -- spec --------------------------------------------------------------------------------------


def _conv_geometry(unit: ConvUnit, kernel: int, pad: int, where: str, role: str) -> None:
    a = unit.conv.attrs
    if a["kernel"] != (kernel, kernel) or a["pad"] != (pad, pad) or a["dilation"] != (1, 1) or a["group"] != 1:
        raise ConversionError(
            f"{where}: layer {unit.conv.name!r} ({role}) is kernel {a['kernel']}, pad {a['pad']}, dilation {a['dilation']}, "
            f"group {a['group']}; the reference ResNet's {role} is {kernel}x{kernel}, pad {pad}, dilation 1, group 1"
        )


def _check_in_channels(unit: ConvUnit, channels: int, where: str) -> None:
    weight = unit.conv.tensors["weight"]
    if weight.shape[1] != channels:
        raise ConversionError(
            f"{where}: layer {unit.conv.name!r} blob 0 has shape {list(weight.shape)}: {weight.shape[1]} input channels, "
            f"but its input has {channels}"
        )


def _stem_pool(node: Node | None, where: str) -> str:
    if node is None:
        return "none"
    a = node.attrs
    if a["method"] == "max" and not a["global"] and a["kernel"] == (3, 3) and a["stride"] == (2, 2):
        # Caffe: no padding, sizes rounded up (112 -> 56).  With round_mode FLOOR and pad 1 it is
        # torchvision's pool.  Anything else has no reference module.
        if a["pad"] == (0, 0) and a["ceil"]:
            return "max_ceil"
        if a["pad"] == (1, 1) and not a["ceil"]:
            return "max"
    raise ConversionError(
        f"{where}: pool {node.name!r} ({a['method']}, kernel {a.get('kernel')}, stride {a['stride']}, pad {a['pad']}, "
        f"{'ceil' if a['ceil'] else 'floor'}) is neither Caffe's 3x3/2 ceil pool nor the 3x3/2 pad-1 floor pool"
    )


def _head_pool(node: Node, where: str) -> tuple[str, int]:
    a = node.attrs
    if a["method"] == "ave" and a["global"]:
        return "global", 7
    if a["method"] == "ave" and a["stride"] == (1, 1) and a["pad"] == (0, 0) and a["kernel"][0] == a["kernel"][1]:
        return "fixed", a["kernel"][0]
    raise ConversionError(
        f"{where}: pool {node.name!r} ({a['method']}, kernel {a.get('kernel')}, stride {a['stride']}, pad {a['pad']}) "
        "is not an average pool of stride 1 (or global)"
    )


@dataclass
class Mapped:
    spec: ResNetSpec
    state_dict: dict[str, torch.Tensor]
    mapped: dict[str, str]  # target key -> source description
    layers: list[dict[str, Any]]  # {"name", "type", "targets"}
    consumed: set[str]
    blob_modules: dict[str, str]  # Caffe blob name (top) -> reference module whose output it equals
    notes: list[str]


def to_spec(graph: ResNetGraph, where: str) -> tuple[ResNetSpec, list[tuple[str, ConvUnit]]]:
    """The spec the graph describes, and each conv unit with its reference prefix (conv name, bn name)."""
    stem = graph.stem
    if stem.conv.attrs["kernel"] == (7, 7):
        _conv_geometry(stem, 7, 3, where, "7x7 stem")
        stem_kind = "7x7"
        if _stride(stem) != 2:
            raise ConversionError(f"{where}: the 7x7 stem {stem.conv.name!r} has stride {_stride(stem)}, expected 2")
    elif stem.conv.attrs["kernel"] == (3, 3):
        _conv_geometry(stem, 3, 1, where, "3x3 stem")
        stem_kind = "3x3"
        if _stride(stem) != 1:
            raise ConversionError(f"{where}: the 3x3 stem {stem.conv.name!r} has stride {_stride(stem)}, expected 1")
    else:
        raise ConversionError(f"{where}: the stem {stem.conv.name!r} has kernel {stem.conv.attrs['kernel']}; expected 7x7 or 3x3")

    kinds = {len(b.body) for b in graph.blocks}
    if kinds not in ({3}, {2}):
        first = next(b for b in graph.blocks if len(b.body) != len(graph.blocks[0].body))
        raise ConversionError(f"{where}: block ending at {first.eltwise.name!r} has {len(first.body)} body convolutions, others {len(graph.blocks[0].body)}")
    bottleneck = kinds == {3}
    stages: list[list[Block]] = []
    for i, block in enumerate(graph.blocks):
        if i == 0:
            if block.stride != 1:
                raise ConversionError(f"{where}: the first block (ending at {block.eltwise.name!r}) has stride {block.stride}; the reference ResNet's first stage has stride 1")
            stages.append([block])
        elif block.stride == 2:
            stages.append([block])
        elif block.stride == 1:
            stages[-1].append(block)
        else:
            raise ConversionError(f"{where}: block ending at {block.eltwise.name!r} has stride {block.stride}; expected 1 or 2")

    stride_in: set[str] = set()
    widths: list[int] = []
    base_widths: set[float] = set()
    cin = stem.conv.attrs["out"]
    units: list[tuple[str, ConvUnit]] = [("conv1|bn1", stem)]
    for s, stage in enumerate(stages):
        out = stage[0].body[-1].conv.attrs["out"]
        planes = out // 4 if bottleneck else out
        if bottleneck and out % 4:
            raise ConversionError(f"{where}: {stage[0].body[-1].conv.name!r} makes {out} channels, not a multiple of 4 (bottleneck expansion)")
        widths.append(planes)
        for b, block in enumerate(stage):
            prefix = f"layer{s + 1}.{b}"
            kernels = [1, 3, 1] if bottleneck else [3, 3]
            feeding = cin
            for k, (unit, kernel) in enumerate(zip(block.body, kernels)):
                _conv_geometry(unit, kernel, kernel // 2, where, f"{kernel}x{kernel} body convolution")
                _check_in_channels(unit, feeding, where)
                feeding = unit.conv.attrs["out"]
                units.append((f"{prefix}.conv{k + 1}|{prefix}.bn{k + 1}", unit))
            if block.body[-1].conv.attrs["out"] != out:
                raise ConversionError(f"{where}: block ending at {block.eltwise.name!r} makes {block.body[-1].conv.attrs['out']} channels, its stage {out}")
            if bottleneck:
                inner = block.body[0].conv.attrs["out"]
                if block.body[1].conv.attrs["out"] != inner:
                    raise ConversionError(f"{where}: {block.body[1].conv.name!r} makes {block.body[1].conv.attrs['out']} channels, {block.body[0].conv.name!r} {inner}")
                base_widths.add(inner * 64 / planes)
                if block.stride == 2:
                    stride_in.add("1x1" if _stride(block.body[0]) == 2 else "3x3")
            elif _stride(block.body[0]) != block.stride:
                raise ConversionError(f"{where}: basic block {block.eltwise.name!r} strides its second 3x3; the reference strides the first")
            needs = block.stride != 1 or cin != out
            if block.shortcut is None and needs:
                raise ConversionError(
                    f"{where}: block ending at {block.eltwise.name!r} changes the shape ({cin}->{out} channels, stride {block.stride}) "
                    "but has an identity shortcut"
                )
            if block.shortcut is not None:
                _conv_geometry(block.shortcut, 1, 0, where, "1x1 projection")
                _check_in_channels(block.shortcut, cin, where)
                if block.shortcut.conv.attrs["out"] != out:
                    raise ConversionError(f"{where}: projection {block.shortcut.conv.name!r} makes {block.shortcut.conv.attrs['out']} channels, the body {out}")
                units.append((f"{prefix}.downsample.0|{prefix}.downsample.1", block.shortcut))
                if not needs and b != 0:
                    raise ConversionError(f"{where}: projection {block.shortcut.conv.name!r} sits where no projection is needed and not on a stage's first block")
            cin = out
    if len(stride_in) > 1:
        raise ConversionError(f"{where}: some bottlenecks stride the first 1x1, others the 3x3")
    if len(base_widths) > 1 or any(w != int(w) for w in base_widths):
        raise ConversionError(f"{where}: bottleneck inner widths are not one multiple of the stage widths: {sorted(base_widths)}")
    # MXNet-style nets project on every stage's first block even where an identity would fit.
    projection = "first_of_stage" if _needs_none_somewhere(stages, stem.conv.attrs["out"]) else "when_needed"
    if projection == "first_of_stage" and any(stage[0].shortcut is None for stage in stages):
        first = next(stage[0] for stage in stages if stage[0].shortcut is None)
        raise ConversionError(f"{where}: some stages project on their first block where no projection is needed, but {first.eltwise.name!r} does not")

    eps = Counter()
    for _, unit in units:
        eps[unit.bn.attrs["eps"]] += 1
    bn_eps = eps.most_common(1)[0][0]
    overrides = tuple(
        (names.split("|")[1], unit.bn.attrs["eps"]) for names, unit in units if unit.bn.attrs["eps"] != bn_eps
    )
    conv_bias: set[str] = set()
    for names, unit in units:
        if "bias" in unit.conv.tensors:
            conv_name = names.split("|")[0]
            role = "stem" if conv_name == "conv1" else ("downsample" if "downsample" in conv_name else conv_name.rsplit(".", 1)[1])
            conv_bias.add(role)
    head_pool, head_size = _head_pool(graph.head_pool, where)
    fc = graph.fc
    if fc.attrs["in"] != cin:
        raise ConversionError(f"{where}: classifier {fc.name!r} takes {fc.attrs['in']} inputs, the last block makes {cin} channels")
    spec = ResNetSpec(
        block="bottleneck" if bottleneck else "basic",
        layers=tuple(len(stage) for stage in stages),
        residual="v1",
        stride_in=(stride_in.pop() if stride_in else "1x1"),
        stem=stem_kind,
        stem_width=stem.conv.attrs["out"],
        stem_pool=_stem_pool(graph.stem_pool, where),
        shortcut="conv",
        projection=projection,
        widths=tuple(widths),
        base_width=int(base_widths.pop()) if base_widths else 64,
        input_bn="none",
        conv_bias=tuple(sorted(conv_bias)),
        bn_eps=bn_eps,
        bn_eps_overrides=overrides,
        head_pool=head_pool,
        head_pool_size=head_size,
        num_classes=fc.attrs["out"],
        in_chans=stem.conv.tensors["weight"].shape[1],
    )
    return spec, units


def _needs_none_somewhere(stages: list[list[Block]], stem_width: int) -> bool:
    """True when some stage's first block has a projection that the shapes do not need."""
    cin = stem_width
    for stage in stages:
        first = stage[0]
        out = first.body[-1].conv.attrs["out"]
        if first.shortcut is not None and first.stride == 1 and cin == out:
            return True
        cin = out
    return False


def to_state_dict(graph: ResNetGraph, spec: ResNetSpec, units: list[tuple[str, ConvUnit]], where: str) -> Mapped:
    """Fill every parameter and buffer of ``spec`` from the graph's tensors (float32)."""
    sd: dict[str, torch.Tensor] = {}
    mapped: dict[str, str] = {}
    layers: list[dict[str, Any]] = []
    consumed: set[str] = set()
    notes: list[str] = []

    def put(key: str, array: np.ndarray, source: str) -> None:
        if key in sd:
            raise ConversionError(f"{where}: {key} would be filled twice ({mapped[key]} and {source})")
        sd[key] = torch.from_numpy(np.array(array, dtype=np.float32, copy=True))
        mapped[key] = source

    roles_with_bias = set(spec.conv_bias)
    for names, unit in units:
        conv_name, bn_name = names.split("|")
        conv = unit.conv
        put(f"{conv_name}.weight", conv.tensors["weight"], conv.sources["weight"])
        targets = [f"{conv_name}.weight"]
        role = "stem" if conv_name == "conv1" else ("downsample" if "downsample" in conv_name else conv_name.rsplit(".", 1)[1])
        if "bias" in conv.tensors:
            put(f"{conv_name}.bias", conv.tensors["bias"], conv.sources["bias"])
            targets.append(f"{conv_name}.bias")
        elif role in roles_with_bias:
            # Another conv of this role has a bias; a zero bias is this one's exact equivalent.
            put(f"{conv_name}.bias", np.zeros(conv.attrs["out"], np.float32), f"zeros ({conv.name} has no bias)")
            notes.append(f"{conv.name}: no bias; {conv_name}.bias set to zeros")
            targets.append(f"{conv_name}.bias")
        consumed.update(conv.consumed)
        layers.append({"name": conv.name, "type": "Convolution", "targets": targets})
        bn = unit.bn
        put(f"{bn_name}.running_mean", bn.tensors["running_mean"], bn.sources["running_mean"])
        put(f"{bn_name}.running_var", bn.tensors["running_var"], bn.sources["running_var"])
        consumed.update(bn.consumed)
        layers.append({"name": bn.name, "type": "BatchNorm", "targets": [f"{bn_name}.running_mean", f"{bn_name}.running_var"]})
        channels = bn.attrs["channels"]
        # Caffe's BatchNorm only normalises; gamma and beta live in the Scale layer after it.
        if unit.scale is not None:
            put(f"{bn_name}.weight", unit.scale.tensors["weight"], unit.scale.sources["weight"])
            if "bias" in unit.scale.tensors:
                put(f"{bn_name}.bias", unit.scale.tensors["bias"], unit.scale.sources["bias"])
            else:
                put(f"{bn_name}.bias", np.zeros(channels, np.float32), f"zeros ({unit.scale.name} has no bias_term)")
            consumed.update(unit.scale.consumed)
            layers.append({"name": unit.scale.name, "type": "Scale", "targets": [f"{bn_name}.weight", f"{bn_name}.bias"]})
        else:
            put(f"{bn_name}.weight", np.ones(channels, np.float32), f"ones ({bn.name} has no Scale layer)")
            put(f"{bn_name}.bias", np.zeros(channels, np.float32), f"zeros ({bn.name} has no Scale layer)")
            notes.append(f"{bn.name}: no Scale layer follows; gamma 1, beta 0")
    fc = graph.fc
    put("fc.weight", fc.tensors["weight"], fc.sources["weight"])
    if "bias" in fc.tensors:
        put("fc.bias", fc.tensors["bias"], fc.sources["bias"])
    else:
        put("fc.bias", np.zeros(fc.attrs["out"], np.float32), f"zeros ({fc.name} has no bias_term)")
    consumed.update(fc.consumed)
    layers.append({"name": fc.name, "type": "InnerProduct", "targets": ["fc.weight", "fc.bias"]})
    return Mapped(spec, sd, mapped, layers, consumed, _blob_modules(graph, spec), notes)


def _blob_modules(graph: ResNetGraph, spec: ResNetSpec) -> dict[str, str]:
    """Which reference module's output each named Caffe blob equals after a full forward."""
    out = {graph.stem.relu.tops[0] if graph.stem.relu else graph.stem.conv.tops[0]: "relu(bn1(conv1))"}
    if graph.stem_pool is not None:
        out[graph.stem_pool.tops[0]] = "maxpool"
    index = 0
    for s, count in enumerate(spec.layers):
        for b in range(count):
            out[graph.blocks[index].relu.tops[0]] = f"layer{s + 1}.{b}"
            index += 1
    out[graph.head_pool.tops[0]] = "avgpool"
    out[graph.fc.tops[0]] = "fc"
    return out


__all__ = ["Mapped", "ResNetGraph", "to_spec", "to_state_dict", "walk"]
