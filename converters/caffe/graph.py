"""The walk of a Caffe layer graph: which layers form the stem, each block and the head.

Layers are found by their place in the dataflow graph (the stem is what consumes the input; a block
is two paths from one blob that meet at an Eltwise sum; the head is the average pool and
InnerProduct after the last block), never by name or by order in the file.  Both residual forms
are read:

- **post-activation (v1)**: conv -> BN -> (Scale) -> ReLU units; the sum is followed by a ReLU.
- **pre-activation (v2)**: each body conv is preceded by BN -> (Scale) -> ReLU; the sum is the
  block's output (no ReLU); a final BN -> (Scale) -> ReLU precedes the head pool.  The projection
  reads the block's *pre-activated* blob (MXNet / Gluon ports) or, in the first block after the
  stem that has no pre-activation of its own (fb.resnet.torch's ``'first'`` block), the stem's
  output, which the stem's ReLU already made non-negative.  A projection that reads the raw sum of
  the previous block while the body reads its pre-activation has no reference form and is refused.

The stem is one conv unit (7x7/2, or 3x3/1 in CIFAR nets) or a chain of them (the deep stem of
ResNet-C/D ports: 3x3/2, 3x3, 3x3, each with BN -> Scale -> ReLU).  A unit whose output feeds one
Convolution and nothing else continues the stem: a block's input always has two readers (the body
and the shortcut or the sum), so the chain cannot swallow a block.

A BatchNorm (+ Scale) on the raw input (``data_bn``) is read before the stem.  The walk only finds
the structure and refuses a graph that is not such a ResNet, naming the first layer that
does not fit; `recognise` turns what it found into the shared skeleton, and `converters.build`
decides the spec (depth per stage, widths, stride placement, pooling, biases, eps).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from resnet_port.converters.caffe.layers import Node
from resnet_port.errors import ConversionError


@dataclass
class ConvUnit:
    """Convolution -> BatchNorm -> (Scale) -> (Bias) -> (ReLU): one reference conv + bn pair.
    ``bn`` None: the BatchNorm was folded into the conv (its bias carries the shift), as deployment
    tools' merge-BN passes and PyTorch-to-Caffe converters write post-activation nets."""

    conv: Node
    bn: Node | None
    scale: Node | None
    relu: Node | None
    out: str  # tensor id after the unit
    bias: Node | None = None  # a Bias layer after a bias-less Scale (or after the BatchNorm)


@dataclass
class PreAct:
    """BatchNorm -> (Scale) -> (Bias) -> (ReLU) *before* a conv (v2's pre-activation, the final BN, the input BN)."""

    bn: Node
    scale: Node | None
    relu: Node | None
    out: str
    bias: Node | None = None


@dataclass
class PreActBlock:
    """A v2 block.  ``pre[i]`` is the pre-activation in front of ``body[i]``; ``pre[0]`` is None when
    the first conv reads the block's input directly (only after the stem's ReLU, see the module
    docstring).  ``shortcut`` is the projection conv (no BN), None for an identity."""

    pre: list[PreAct | None]
    body: list[Node]
    shortcut: Node | None
    eltwise: Node
    stride: int
    out: str


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
    stem: list[ConvUnit]  # one unit, or the deep stem's chain; the last one's output feeds the pool / blocks
    stem_pool: Node | None
    blocks: list[Block | PreActBlock]
    head_pool: Node
    fc: Node
    ignored: list[Node] = field(default_factory=list)  # Softmax / Input: no weights, nothing to map
    input_bn: PreAct | None = None
    final_bn: PreAct | None = None


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
    if bn is not None and bn.type in ("Scale", "Bias"):
        # The BatchNorm's statistics folded into the Scale (and Bias) after the conv: an affine-only BN.
        scale, bias, relu, tid = _affine_relu(flow, conv)
        return ConvUnit(conv, None, scale, relu, tid, bias)
    if bn is not None and bn.type in ("ReLU", "Eltwise") and "bias" in conv.tensors:
        # A BatchNorm folded into the conv: conv (with bias) -> ReLU, or straight into the sum.
        tid, relu = flow.out(conv), None
        if bn.type == "ReLU":
            relu = _relu_ok(flow, bn)
            tid = flow.out(relu)
        return ConvUnit(conv, None, None, relu, tid)
    if bn is None or bn.type != "BatchNorm":
        found = "nothing" if bn is None else f"{bn.name!r} ({bn.type})"
        raise ConversionError(f"{where}: Convolution {conv.name!r} is followed by {found}; a ResNet follows it with BatchNorm")
    if bn.attrs["channels"] != conv.attrs["out"]:
        raise ConversionError(
            f"{where}: BatchNorm {bn.name!r} has {bn.attrs['channels']} channels, Convolution {conv.name!r} makes {conv.attrs['out']}"
        )
    flow.sole_user(flow.out(bn), bn)
    scale, bias, relu, tid = _affine_relu(flow, bn)
    return ConvUnit(conv, bn, scale, relu, tid, bias)


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


def _relu_ok(flow: _Dataflow, node: Node) -> Node:
    if node.attrs["negative_slope"] != 0.0:
        raise ConversionError(f"{flow.where}: ReLU {node.name!r} has negative_slope {node.attrs['negative_slope']}; the reference ResNet uses 0")
    return node


def _affine(flow: _Dataflow, bn: Node) -> tuple[Node | None, Node | None, str]:
    """The Scale and/or Bias layer after a BatchNorm (or after a Convolution whose BN statistics were
    folded into them), each taken when it is the sole reader of the blob before it, and the blob
    after them.  A bias-less Scale + Bias is how some converters write Scale(bias_term); a Bias alone
    is gamma 1 with a beta."""
    tid = flow.out(bn)
    channels = bn.attrs["out"] if bn.type == "Convolution" else bn.attrs["channels"]
    found: dict[str, Node] = {}
    for kind in ("Scale", "Bias"):
        users = flow.users(tid)
        if len(users) == 1 and users[0].type == kind:
            node = users[0]
            if node.attrs["channels"] != channels:
                raise ConversionError(
                    f"{flow.where}: {kind} {node.name!r} has {node.attrs['channels']} channels, {bn.type} {bn.name!r} {channels}"
                )
            found[kind] = node
            tid = flow.out(node)
    return found.get("Scale"), found.get("Bias"), tid


def _affine_relu(flow: _Dataflow, node: Node) -> tuple[Node | None, Node | None, Node | None, str]:
    """(Scale, Bias, ReLU, the blob after them) after ``node``; the ReLU only when it is the sole reader."""
    scale, bias, tid = _affine(flow, node)
    users = flow.users(tid)
    relu = None
    if len(users) == 1 and users[0].type == "ReLU":
        relu = _relu_ok(flow, users[0])
        tid = flow.out(relu)
    return scale, bias, relu, tid


def _preact(flow: _Dataflow, bn: Node) -> PreAct:
    """BatchNorm -> (Scale) -> (Bias) -> (ReLU) from ``bn``."""
    scale, bias, relu, tid = _affine_relu(flow, bn)
    return PreAct(bn, scale, relu, tid, bias)


def _meets_sum_after_conv(flow: _Dataflow, start: Node) -> bool:
    """True when the single-reader chain from ``start`` reaches an Eltwise straight from a
    Convolution (a pre-activation body: its last conv has no BN of its own) and no ReLU follows
    the sum.  A post-activation sum is rectified: there a conv meeting the sum directly had its
    BatchNorm folded into it."""
    node, previous = start, None
    for _ in range(64):
        if node.type == "Eltwise":
            rectified = any(u.type == "ReLU" for u in flow.users(flow.out(node)))
            return previous is not None and previous.type == "Convolution" and not rectified
        users = flow.users(flow.outputs[node.name][0]) if flow.outputs.get(node.name) else []
        if len(users) != 1:
            return False
        previous, node = node, users[0]
    return False


def _v2_path(flow: _Dataflow, conv: Node) -> tuple[list[PreAct], list[Node], Node]:
    """conv -> (BN -> Scale -> ReLU -> conv)* -> Eltwise: the pre-activations between the convs,
    the convs and the Eltwise."""
    where = flow.where
    convs, pres = [conv], []
    while True:
        last = convs[-1]
        if last.type != "Convolution":
            raise ConversionError(f"{where}: layer {last.name!r} ({last.type}) does not fit a pre-activation ResNet: expected a Convolution here")
        users = flow.users(flow.out(last))
        if len(users) != 1:
            names = ", ".join(repr(n.name) for n in users) or "no layer"
            raise ConversionError(f"{where}: the output of Convolution {last.name!r} feeds {names}; a ResNet branch feeds one layer")
        nxt = users[0]
        if nxt.type == "Eltwise":
            return pres, convs, nxt
        if nxt.type != "BatchNorm":
            raise ConversionError(
                f"{where}: Convolution {last.name!r} is followed by {nxt.name!r} ({nxt.type}); a pre-activation ResNet follows "
                "it with the next conv's BatchNorm or with the Eltwise sum"
            )
        pre = _preact(flow, nxt)
        if pre.relu is None:
            raise ConversionError(f"{where}: the pre-activation {nxt.name!r} has no ReLU before the next convolution")
        following = flow.users(pre.out)
        if len(following) != 1 or following[0].type != "Convolution":
            names = ", ".join(f"{n.name!r} ({n.type})" for n in following) or "nothing"
            raise ConversionError(f"{where}: the pre-activation {nxt.name!r} feeds {names}; expected one Convolution")
        pres.append(pre)
        convs.append(following[0])


def _block_v2(flow: _Dataflow, tid: str, blob: str, after_stem: bool) -> PreActBlock:
    """A pre-activation block reading blob id ``tid`` (named ``blob`` in errors)."""
    where = flow.where
    users = flow.users(tid)
    bns = [u for u in users if u.type == "BatchNorm"]
    identity_into = [u for u in users if u.type == "Eltwise"]
    raw_convs = [u for u in users if u.type == "Convolution"]
    strays = [u for u in users if u.type not in ("BatchNorm", "Eltwise", "Convolution")]
    if strays or len(bns) > 1 or len(identity_into) > 1:
        names = ", ".join(f"{u.name!r} ({u.type})" for u in users)
        raise ConversionError(f"{where}: blob {blob!r} feeds {names}; expected a pre-activation block (BatchNorm, and the sum or a projection)")
    pre0 = None
    if bns:
        pre0 = _preact(flow, bns[0])
        if pre0.relu is None:
            raise ConversionError(f"{where}: the pre-activation {bns[0].name!r} has no ReLU before the convolution")
        if raw_convs:
            raise ConversionError(
                f"{where}: the projection {raw_convs[0].name!r} reads the block's raw input {blob!r} while the body reads its "
                f"pre-activation ({bns[0].name!r}); the reference pre-activation block projects the pre-activated input, "
                "so this net has no exact reference form"
            )
        starts = flow.users(pre0.out)
        if not starts or any(u.type != "Convolution" for u in starts):
            names = ", ".join(f"{u.name!r} ({u.type})" for u in starts) or "nothing"
            raise ConversionError(f"{where}: the pre-activation {bns[0].name!r} feeds {names}; expected the body's first Convolution (and a projection)")
    else:
        if not after_stem:
            raise ConversionError(
                f"{where}: the block reading {blob!r} has no pre-activation BatchNorm; only the first block after the stem's "
                "ReLU may omit it"
            )
        starts = raw_convs
    paths = [_v2_path(flow, conv) for conv in starts]
    if len(paths) == 1 and identity_into and paths[0][2] is identity_into[0]:
        (pres, body, eltwise), shortcut = paths[0], None
    elif len(paths) == 2 and not identity_into and paths[0][2] is paths[1][2]:
        long, short = sorted(paths, key=lambda p: len(p[1]), reverse=True)
        pres, body, eltwise = long
        if len(short[1]) != 1 or len(body) < 2:
            raise ConversionError(
                f"{where}: Eltwise {eltwise.name!r} joins paths of {len(long[1])} and {len(short[1])} convolutions; a ResNet block "
                "joins a body of 2 or 3 with an identity or one projection"
            )
        shortcut = short[1][0]
    else:
        names = ", ".join(f"{u.name!r} ({u.type})" for u in users)
        raise ConversionError(f"{where}: blob {blob!r} feeds {names}; expected a residual block (two paths meeting at an Eltwise sum)")
    if eltwise.attrs["operation"] != "sum" or any(c != 1.0 for c in eltwise.attrs["coeff"]) or len(eltwise.bottoms) != 2:
        raise ConversionError(f"{where}: Eltwise {eltwise.name!r} is not a plain sum of two blobs")
    after = flow.users(flow.out(eltwise))
    if any(u.type == "ReLU" for u in after):
        raise ConversionError(
            f"{where}: Eltwise {eltwise.name!r} of a pre-activation block is followed by a ReLU; neither a pre-activation "
            "nor a post-activation ResNet block"
        )
    strides = [int(conv.attrs["stride"][0]) for conv in body]
    if any(conv.attrs["stride"][0] != conv.attrs["stride"][1] for conv in body):
        raise ConversionError(f"{where}: block ending at {eltwise.name!r} has a convolution with unequal strides")
    if sorted(strides)[:-1] != [1] * (len(strides) - 1):
        raise ConversionError(f"{where}: block ending at {eltwise.name!r} strides more than one body convolution: {strides}")
    stride = int(np.prod(strides))
    if shortcut is not None and tuple(shortcut.attrs["stride"]) != (stride, stride):
        raise ConversionError(f"{where}: projection {shortcut.name!r} has stride {shortcut.attrs['stride'][0]}, the body {stride}")
    return PreActBlock([pre0, *pres], body, shortcut, eltwise, stride, flow.out(eltwise))


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
    input_bn = None
    if users[0].type == "BatchNorm":  # data_bn (+ Scale) on the raw input
        input_bn = _preact(flow, users[0])
        if input_bn.relu is not None:
            raise ConversionError(
                f"{where}: the input BatchNorm {input_bn.bn.name!r} is followed by ReLU {input_bn.relu.name!r}; the reference "
                "ResNet's input BN feeds the stem convolution directly"
            )
        tid = input_bn.out
        users = flow.users(tid)
        if len(users) != 1:
            names = ", ".join(repr(u.name) for u in users) or "nothing"
            raise ConversionError(f"{where}: the input BatchNorm {input_bn.bn.name!r} feeds {names}; a ResNet feeds one convolution")
    stem = [_unit(flow, users[0])]
    while True:
        if stem[-1].relu is None:
            raise ConversionError(f"{where}: the stem {stem[-1].conv.name!r} has no ReLU")
        nxt = flow.users(stem[-1].out)
        if len(nxt) != 1 or nxt[0].type != "Convolution":
            break
        stem.append(_unit(flow, nxt[0]))  # the deep stem: the next conv reads this one alone
    tid = stem[-1].out
    stem_pool = None
    nxt = flow.users(tid)
    if len(nxt) == 1 and nxt[0].type == "Pooling":
        stem_pool = nxt[0]
        tid = flow.out(stem_pool)
    blocks: list[Block | PreActBlock] = []
    final_bn = None
    last_name = (stem_pool or stem[-1].relu).tops[0]
    while True:
        users = flow.users(tid)
        if len(users) == 1 and users[0].type == "Pooling":
            break
        if not users:
            raise ConversionError(f"{where}: the net ends after {last_name!r} without a pool and classifier")
        if len(users) == 1 and users[0].type == "BatchNorm":
            pre = _preact(flow, users[0])
            head = flow.users(pre.out)
            if len(head) == 1 and head[0].type == "Pooling":  # v2's final BN-ReLU before the head
                if pre.relu is None:
                    raise ConversionError(
                        f"{where}: the final BatchNorm {pre.bn.name!r} is not followed by a ReLU before {head[0].name!r}; the "
                        "reference pre-activation ResNet applies BN-ReLU there"
                    )
                final_bn, tid, users = pre, pre.out, head
                break
        after_stem = not blocks
        if any(u.type == "BatchNorm" for u in users) or any(
            u.type == "Convolution" and _meets_sum_after_conv(flow, u) for u in users
        ):
            blocks.append(_block_v2(flow, tid, last_name, after_stem))
            last_name = blocks[-1].eltwise.tops[0]
        else:
            blocks.append(_block(flow, tid))
            last_name = blocks[-1].relu.tops[0]
        tid = blocks[-1].out
    if not blocks:
        raise ConversionError(f"{where}: no residual block found after the stem {stem[-1].conv.name!r}")
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
    graph = ResNetGraph(input_node.tops[0], shapes[0], stem, stem_pool, blocks, head_pool, fc, ignored, input_bn, final_bn)
    _check_all_visited(nodes, graph, where)
    return graph


def units(graph: ResNetGraph) -> list[ConvUnit]:
    """The post-activation conv units (the stem and v1 blocks)."""
    out = list(graph.stem)
    for block in graph.blocks:
        if isinstance(block, Block):
            out.extend(block.body)
            if block.shortcut is not None:
                out.append(block.shortcut)
    return out


def weighted_nodes(graph: ResNetGraph) -> list[Node]:
    """Every layer of the walk that holds blobs (convs, BatchNorms, Scales, the classifier)."""
    out: list[Node] = []
    for unit in units(graph):
        out.extend(n for n in (unit.conv, unit.bn, unit.scale, unit.bias) if n is not None)
    pres = [graph.input_bn, graph.final_bn]
    for block in graph.blocks:
        if isinstance(block, PreActBlock):
            out.extend(block.body)
            if block.shortcut is not None:
                out.append(block.shortcut)
            pres.extend(block.pre)
    for pre in pres:
        if pre is not None:
            out.extend(n for n in (pre.bn, pre.scale, pre.bias) if n is not None)
    out.append(graph.fc)
    return out


def _check_all_visited(nodes: list[Node], graph: ResNetGraph, where: str) -> None:
    seen: set[str] = {n.name for n in graph.ignored}
    seen.update(n.name for n in weighted_nodes(graph))
    for unit in units(graph):
        if unit.relu is not None:
            seen.add(unit.relu.name)
    for pre in [graph.input_bn, graph.final_bn, *(p for b in graph.blocks if isinstance(b, PreActBlock) for p in b.pre)]:
        if pre is not None and pre.relu is not None:
            seen.add(pre.relu.name)
    for block in graph.blocks:
        seen.add(block.eltwise.name)
        if isinstance(block, Block):
            seen.add(block.relu.name)
    seen.update(n.name for n in (graph.stem_pool, graph.head_pool, graph.fc) if n is not None)
    for node in nodes:
        if node.name not in seen and node.type not in ("Dropout", "Split"):
            raise ConversionError(f"{where}: layer {node.name!r} ({node.type}) is not part of the ResNet the graph forms")


__all__ = ["Block", "ConvUnit", "PreAct", "PreActBlock", "ResNetGraph", "units", "walk", "weighted_nodes"]
