"""Recognise a ResNet in an ONNX graph from its topology and shapes, never from tensor names.

The walk follows the data from the input: an optional input BatchNorm, the stem (conv, BN, ReLU,
max pool), then residual blocks one after another, then the head (pool, flatten, linear).  A block
is found where a tensor forks and the two paths meet again at an ``Add``: the longer path is the
body, the shorter one the shortcut (nothing for an identity, a 1x1 conv [+ BN] for a projection).
Post-activation (v1) blocks end with a ReLU after the sum; pre-activation (v2) blocks start with
BN-ReLU, and their projection reads the pre-activated tensor.  Every node must be visited exactly
once; the first one that does not fit the pattern is named in the error.

A BatchNorm that follows a conv may be missing: ``torch.onnx.export`` in eval mode (both exporters)
and onnx-simplifier fold it into the conv's weights and bias.  Such a slot is recognised as an
absent BN (None) and becomes an identity BN in the skeleton (`skeleton.BatchNorm.identity`), so the fused graph
maps exactly onto the reference (the conv keeps the bias the fold gave it).  The BNs that read a
block's input (v2's pre-activation, the input BN) and v2's final BN cannot be folded and stay
required.
"""

from __future__ import annotations

from dataclasses import dataclass

from resnet_port.converters.onnx.graph import Node, OnnxGraph
from resnet_port.converters.onnx.ops import (
    AddLayer,
    AvgPoolLayer,
    BatchNormLayer,
    ConvLayer,
    FlattenLayer,
    Layer,
    LinearLayer,
    MaxPoolLayer,
    PassLayer,
    ReluLayer,
    SoftmaxLayer,
    parse_node,
)
from resnet_port.converters.skeleton import BatchNorm, Block as SkeletonBlock, Conv, ConvBN, Linear, Pool, Shortcut, Skeleton, SourceLayer, SourceTensor
from resnet_port.errors import ConversionError

# Body patterns after the block input (v1) or after the pre-activation (v2).
V1_BODIES = {
    "basic": (ConvLayer, BatchNormLayer, ReluLayer, ConvLayer, BatchNormLayer),
    "bottleneck": (
        ConvLayer,
        BatchNormLayer,
        ReluLayer,
        ConvLayer,
        BatchNormLayer,
        ReluLayer,
        ConvLayer,
        BatchNormLayer,
    ),
}
V2_BODIES = {
    "basic": (ConvLayer, BatchNormLayer, ReluLayer, ConvLayer),
    "bottleneck": (ConvLayer, BatchNormLayer, ReluLayer, ConvLayer, BatchNormLayer, ReluLayer, ConvLayer),
}
MAX_CHAIN = 12  # longer than any block body: a walk that runs on is not in a block


@dataclass
class Block:
    """One residual block as found: its convs and BNs in the reference's order."""

    residual: str  # "v1" | "v2"
    kind: str  # "basic" | "bottleneck"
    convs: list[ConvLayer]
    # v1: one BN after each conv; v2: the pre-activation BN, then one after each conv but the last.
    # None: a BN the exporter folded into the conv before it.
    bns: list[BatchNormLayer | None]
    shortcut_conv: ConvLayer | None
    shortcut_bn: BatchNormLayer | None  # None also where a v1 projection's BN was folded into its conv
    first: Node  # the node errors about this block name
    shortcut_pool: AvgPoolLayer | None = None  # the avg-down shortcut's pool before its conv
    shortcut_reads: str = "preactivated"  # v2: what the projection reads ("block_input": GluonCV CIFAR)

    @property
    def in_channels(self) -> int:
        return self.convs[0].in_channels

    @property
    def out_channels(self) -> int:
        return self.convs[-1].out_channels

    @property
    def stride(self) -> int:
        strides = [c.stride[0] for c in self.convs]
        return max(strides)


@dataclass
class Recognised:
    """The ResNet found in the graph, layer by layer, before it becomes a spec."""

    input_bn: BatchNormLayer | None
    stem: list[tuple[ConvLayer, BatchNormLayer | None]]  # one conv, or three (the deep stem); BN None: folded
    stem_relu: bool  # False: the stem ends at its BN (or, BN None, at its conv: no BN to fold there)
    stem_pool: MaxPoolLayer | None
    blocks: list[Block]
    final_bn: BatchNormLayer | None
    head_pool: AvgPoolLayer
    head_nodes: list[Node]  # flatten / reshape / identity nodes between pool and linear
    linear: LinearLayer
    bias_add: AddLayer | None
    softmax: SoftmaxLayer | None = None  # a Softmax after the logits, dropped: the port returns the logits


class _Walker:
    """Follows the data through the graph; knows who produces and who consumes each tensor."""

    def __init__(self, graph: OnnxGraph) -> None:
        self.graph = graph
        self.layers = [parse_node(node, graph) for node in graph.nodes]
        self.alias: dict[str, str] = {}  # Identity / Dropout output -> its input
        self.pass_nodes: list[Node] = []
        for layer in self.layers:
            if isinstance(layer, PassLayer):
                self.alias[layer.output] = self.resolve(layer.data[0])
                self.pass_nodes.append(layer.node)
        self.consumers: dict[str, list[Layer]] = {}
        producers: dict[str, Node] = {}
        for layer in self.layers:
            for out in layer.node.outputs:
                if out in producers:
                    raise ConversionError(
                        f"{graph.where(layer.node)}: output '{out}' is also produced by {producers[out].label}"
                    )
                producers[out] = layer.node
            if isinstance(layer, PassLayer):
                continue
            for name in layer.data:
                self.consumers.setdefault(self.resolve(name), []).append(layer)
        self.producers = producers
        self.visited: set[int] = set()

    def resolve(self, tensor: str) -> str:
        while tensor in self.alias:
            tensor = self.alias[tensor]
        return tensor

    def fail(self, node: Node | None, message: str) -> ConversionError:
        where = self.graph.where(node) if node is not None else str(self.graph.path)
        return ConversionError(f"{where}: not a ResNet the reference can hold: {message}")

    def users(self, tensor: str) -> list[Layer]:
        return self.consumers.get(self.resolve(tensor), [])

    def producer(self, tensor: str) -> Node | None:
        return self.producers.get(self.resolve(tensor))

    def visit(self, layer: Layer) -> Layer:
        if layer.node.index in self.visited:
            raise self.fail(layer.node, "reached twice while following the data")
        self.visited.add(layer.node.index)
        return layer

    def only_user(self, tensor: str, kind: type | tuple[type, ...], what: str) -> Layer:
        """The single consumer of ``tensor``, which must be of ``kind``."""
        users = self.users(tensor)
        if not users:
            raise self.fail(self.producer(tensor), f"its output '{tensor}' goes nowhere, expected {what} after it")
        if len(users) > 1:
            raise self.fail(users[1].node, f"a second reader of '{tensor}' where only {what} fits")
        layer = users[0]
        if not isinstance(layer, kind):
            raise self.fail(layer.node, f"expected {what} here")
        return self.visit(layer)


def _expect(walker: _Walker, ok: bool, node: Node, message: str) -> None:
    if not ok:
        raise walker.fail(node, message)


def _check_conv(walker: _Walker, conv: ConvLayer, kernel: int, stride: int | None, what: str) -> None:
    """Kernel, padding k//2, no dilation, no groups: the only convs the reference has."""
    pad = kernel // 2
    _expect(
        walker,
        conv.kernel == (kernel, kernel),
        conv.node,
        f"{what} should be {kernel}x{kernel}, found {conv.kernel[0]}x{conv.kernel[1]}",
    )
    _expect(
        walker,
        conv.pads == (pad,) * 4,
        conv.node,
        f"{what} should pad {pad} on every side, found pads {list(conv.pads)}",
    )
    _expect(walker, conv.dilation == (1, 1), conv.node, f"{what} is dilated {conv.dilation}, expected 1")
    _expect(walker, conv.group == 1, conv.node, f"{what} is grouped (group={conv.group}), expected 1")
    _expect(walker, conv.stride[0] == conv.stride[1], conv.node, f"{what} has unequal strides {conv.stride}")
    if stride is not None:
        _expect(
            walker, conv.stride[0] == stride, conv.node, f"{what} should have stride {stride}, found {conv.stride[0]}"
        )


def _check_bn(walker: _Walker, bn: BatchNormLayer, channels: int, what: str) -> None:
    _expect(walker, bn.channels == channels, bn.node, f"{what} has {bn.channels} channels, expected {channels}")


def _chain(walker: _Walker, tensor: str) -> tuple[list[Layer], AddLayer | None, Layer | None]:
    """Follow single-reader Conv/BN/ReLU layers from ``tensor`` until an Add (not visited)."""
    chain: list[Layer] = []
    users = walker.users(tensor)
    for _ in range(MAX_CHAIN):
        if len(users) != 1:
            return chain, None, users[1] if len(users) > 1 else None
        layer = users[0]
        if isinstance(layer, AddLayer):
            return chain, layer, None
        if not isinstance(layer, (ConvLayer, BatchNormLayer, ReluLayer)):
            return chain, None, layer
        chain.append(layer)
        users = walker.users(layer.output)
    return chain, None, chain[-1]


def _fit(chain: list[Layer], pattern: tuple) -> tuple[list[Layer | None], int]:
    """Lay ``chain`` onto ``pattern``, where a BatchNorm slot may be missing (folded into its conv).
    Returns the slots (None for a missing BN) and how many layers of the chain fitted."""
    slots: list[Layer | None] = []
    i = 0
    for kind in pattern:
        if i < len(chain) and isinstance(chain[i], kind):
            slots.append(chain[i])
            i += 1
        elif kind is BatchNormLayer:
            slots.append(None)
        else:
            break
    return slots, i


def _match_body(
    walker: _Walker, chain: list[Layer], bodies: dict, stop: Layer | None, add: AddLayer | None
) -> tuple[str, list[Layer | None]]:
    """The block kind whose pattern ``chain`` follows, with its slots (None: a BN folded into its conv),
    or an error naming the first layer off it."""
    for kind, pattern in bodies.items():
        slots, used = _fit(chain, pattern)
        if used == len(chain) and len(slots) == len(pattern):
            if add is None:
                node = stop.node if stop is not None else chain[-1].node
                raise walker.fail(node, "expected the residual Add, the one reader of the block body's output")
            return kind, slots
    longest = max(bodies.values(), key=len)
    slots, used = _fit(chain, longest)
    if used < len(chain):
        if len(slots) < len(longest):
            raise walker.fail(chain[used].node, f"expected {longest[len(slots)].__name__[:-5]} in a residual block body")
        raise walker.fail(chain[used].node, "the block body runs on past its last conv")
    node = stop.node if stop is not None else (add.node if add is not None else chain[-1].node if chain else None)
    raise walker.fail(node, "a residual block body should be conv-BN-ReLU-conv-BN (basic) or three convs (bottleneck)")


def _avg_down_pool(walker: _Walker, users: list[Layer]) -> tuple[AvgPoolLayer | None, list[Layer]]:
    """The avg-down shortcut's pool among a block input's readers (timm ``*d``, mmcls V1d), and the
    conv it feeds.  It must be the reference's AvgPool2d(k, k, ceil_mode=True, count_include_pad=False):
    kernel = stride, no padding, sizes rounded up (with no padding, count_include_pad changes nothing)."""
    pools = [u for u in users if isinstance(u, AvgPoolLayer)]
    if not pools:
        return None, []
    pool = pools[0]
    if len(pools) > 1:
        raise walker.fail(pools[1].node, "a second average pool reads the block input")
    ok = pool.kernel is not None and pool.kernel == pool.stride and pool.kernel[0] == pool.kernel[1]
    ok = ok and pool.pads == (0, 0, 0, 0) and (pool.ceil_mode or pool.kernel == (1, 1))
    if not ok:
        raise walker.fail(
            pool.node,
            "the avg-down shortcut's pool should be kernel = stride, no padding, ceil_mode=1 (the reference's "
            f"AvgPool2d(ceil_mode=True, count_include_pad=False)); found kernel {pool.kernel}, strides {pool.stride}, "
            f"pads {list(pool.pads)}, ceil_mode {int(pool.ceil_mode)}",
        )
    readers = walker.users(pool.output)
    if len(readers) != 1 or not isinstance(readers[0], ConvLayer):
        raise walker.fail((readers or [pool])[0].node, "the avg-down shortcut's pool should feed one 1x1 conv")
    return pool, readers


def _block_v1(walker: _Walker, x: str) -> tuple[Block, str]:
    users = walker.users(x)
    pool, pooled = _avg_down_pool(walker, users)
    convs = [u for u in users if isinstance(u, ConvLayer)] + pooled
    others = [u for u in users if not isinstance(u, (ConvLayer, AddLayer, AvgPoolLayer))]
    if others:
        raise walker.fail(others[0].node, "expected a conv (block body or projection) or the residual Add here")
    identity_adds = [u for u in users if isinstance(u, AddLayer)]
    if not convs:
        raise walker.fail(users[0].node if users else walker.producer(x), "expected a residual block (conv) here")
    # The body is the longest path out of the block input; a projection is conv + BN.
    paths = sorted((_chain_from(walker, conv) for conv in convs), key=lambda p: len(p[0]), reverse=True)
    body, add, stop = paths[0]
    kind, slots = _match_body(walker, body, V1_BODIES, stop, add)
    shortcut_conv = shortcut_bn = None
    if len(paths) > 2:
        raise walker.fail(paths[2][0][0].node, "a third path out of a block input")
    if len(paths) == 2:
        short, short_add, short_stop = paths[1]
        # conv + BN, or a conv alone whose BN the exporter folded into it
        if short_add is not add or [type(layer) for layer in short] not in ([ConvLayer, BatchNormLayer], [ConvLayer]):
            off = [layer for layer, k in zip(short, (ConvLayer, BatchNormLayer)) if not isinstance(layer, k)]
            node = (off or short[2:] or [short_stop or short_add or short[-1]])[0].node
            raise walker.fail(node, "a projection shortcut should be a 1x1 conv + BN meeting the body at its Add")
        shortcut_conv = short[0]
        shortcut_bn = short[1] if len(short) == 2 else None
        if identity_adds:
            raise walker.fail(identity_adds[0].node, "a block with a projection also adds its raw input")
        other = short[-1].output
    else:
        _expect(walker, identity_adds == [add], add.node, "the residual Add should sum the block input and the body")
        other = x
    if pool is not None and shortcut_conv is not pooled[0]:
        raise walker.fail(pool.node, "the avg-down pool should feed the projection, not the block body")
    projection = [layer for layer in (pool, shortcut_conv, shortcut_bn) if layer is not None]
    _close_block(walker, add, body, other, projection)
    walker.visit(add)
    relu = walker.only_user(add.output, ReluLayer, "the ReLU after the residual sum (post-activation block)")
    bodies_convs = [layer for layer in body if isinstance(layer, ConvLayer)]
    # one BN slot after each conv; None where it was folded into the conv
    bns = [slot for slot, k in zip(slots, V1_BODIES[kind]) if k is BatchNormLayer]
    block = Block("v1", kind, bodies_convs, bns, shortcut_conv, shortcut_bn, body[0].node, pool)
    return block, relu.output


def _close_block(walker, add, body: list, other, shortcut: list) -> None:
    """The checks every residual block ends with: its Add sums the body's output and the shortcut
    (nothing stored), and every layer of the block is marked as visited."""
    _expect(
        walker,
        _sums(walker, add, body[-1].output, other),
        add.node,
        "the residual Add should sum the body and the shortcut",
    )
    _expect(walker, add.constant is None, add.node, "the residual Add adds a stored constant")
    for layer in body + shortcut:
        walker.visit(layer)


def _sums(walker: _Walker, add: AddLayer, a: str, b: str) -> bool:
    got = sorted(walker.resolve(t) for t in add.data)
    return got == sorted((walker.resolve(a), walker.resolve(b)))


def _chain_from(walker: _Walker, first: Layer) -> tuple[list[Layer], AddLayer | None, Layer | None]:
    chain, add, stop = _chain(walker, first.output)
    return [first] + chain, add, stop


def _block_v2(walker: _Walker, x: str, first: bool = False) -> tuple[Block, str]:
    users = walker.users(x)
    if first and len(users) == 1 and isinstance(users[0], ReluLayer):
        # the first block after a bare stem conv, its pre-activation BN folded into that conv by the
        # exporter (it is the conv's only reader): the ReLU alone remains, the BN becomes the identity
        return _block_v2_after(walker, x, None, walker.visit(users[0]), [])
    bns = [u for u in users if isinstance(u, BatchNormLayer)]
    adds = [u for u in users if isinstance(u, AddLayer)]
    raw = [u for u in users if isinstance(u, ConvLayer)]  # GluonCV's CIFARBasicBlockV2 projects the raw input
    others = [u for u in users if not isinstance(u, (BatchNormLayer, AddLayer, ConvLayer))]
    if others or len(raw) > 1 or (raw and adds):
        raise walker.fail(
            (others + raw[1:] + adds)[0].node,
            "expected the pre-activation BN of a block and the residual Add (or one projection conv) here",
        )
    if len(bns) != 1 or len(adds) > 1:
        raise walker.fail(
            (bns[1:] + adds[1:] + users)[0].node,
            "a pre-activation block reads its input with one BN (and at most one Add)",
        )
    pre_bn = walker.visit(bns[0])
    pre_relu = walker.only_user(pre_bn.output, ReluLayer, "the ReLU of the pre-activation")
    return _block_v2_after(walker, x, pre_bn, pre_relu, adds, raw)


def _block_v2_after(
    walker: _Walker, x: str, pre_bn: BatchNormLayer | None, pre_relu: ReluLayer, adds: list, raw: list | None = None
) -> tuple[Block, str]:
    """The rest of a v2 block from its pre-activation's ReLU (``pre_bn`` None: folded into the stem conv)."""
    raw = raw or []
    a = pre_relu.output
    a_users = walker.users(a)
    pool, pooled = _avg_down_pool(walker, a_users)  # timm resnetv2_*d: pool, then the bare projection conv
    a_users = [u for u in a_users if u is not pool] + pooled
    convs = [u for u in a_users if isinstance(u, ConvLayer)]
    if len(convs) != len(a_users) or not convs or len(convs) > 2:
        odd = [u for u in a_users if not isinstance(u, ConvLayer)]
        raise walker.fail(
            (odd or a_users or [pre_relu])[0].node,
            "a pre-activated tensor feeds the body conv and at most a projection conv",
        )
    paths = sorted((_chain_from(walker, c) for c in convs), key=lambda p: len(p[0]), reverse=True)
    body, add, stop = paths[0]
    kind, slots = _match_body(walker, body, V2_BODIES, stop, add)
    shortcut_conv = None
    reads = "preactivated"
    if raw:
        if len(paths) == 2:
            raise walker.fail(raw[0].node, "a block that projects both its raw and its pre-activated input")
        short, short_add, short_stop = _chain_from(walker, raw[0])
        if short_add is not add or len(short) != 1:
            raise walker.fail(
                (short[1:] or [short_stop or short[0]])[0].node,
                "a projection of the raw block input should be one 1x1 conv meeting the body at its Add",
            )
        shortcut_conv, reads = short[0], "block_input"
        other = shortcut_conv.output
    elif len(paths) == 2:
        short, short_add, short_stop = paths[1]
        if short_add is not add or len(short) != 1:
            raise walker.fail(
                (short[1:] or [short_stop or short[0]])[0].node,
                "a pre-activation projection should be one 1x1 conv meeting the body at its Add",
            )
        shortcut_conv = short[0]
        _expect(
            walker, not adds, adds[0].node if adds else add.node, "a block with a projection also adds its raw input"
        )
        other = shortcut_conv.output
    if shortcut_conv is None:
        _expect(walker, adds == [add], add.node, "the residual Add should sum the block input and the body")
        other = x
    if pool is not None and shortcut_conv is not pooled[0]:
        raise walker.fail(pool.node, "the avg-down pool should feed the projection, not the block body")
    _close_block(walker, add, body, other, [layer for layer in (pool, shortcut_conv) if layer is not None])
    walker.visit(add)
    # the BN after conv K (before conv K + 1) can be folded into conv K; None where it was
    body_bns = [slot for slot, k in zip(slots, V2_BODIES[kind]) if k is BatchNormLayer]
    block = Block(
        "v2",
        kind,
        [layer for layer in body if isinstance(layer, ConvLayer)],
        [pre_bn] + body_bns,
        shortcut_conv,
        None,
        (pre_bn or pre_relu).node,
        pool,
        shortcut_reads=reads,
    )
    return block, add.output


def _next_is_head_v2(walker: _Walker, x: str) -> bool:
    """In a v2 net the final BN-ReLU looks like a block's pre-activation until the pool follows."""
    users = walker.users(x)
    if len(users) != 1 or not isinstance(users[0], BatchNormLayer):
        return False
    relu_users = walker.users(users[0].output)
    if len(relu_users) != 1 or not isinstance(relu_users[0], ReluLayer):
        return False
    after = walker.users(relu_users[0].output)
    return len(after) == 1 and isinstance(after[0], AvgPoolLayer)


def _stem(walker: _Walker, conv: ConvLayer) -> tuple[list[tuple[ConvLayer, BatchNormLayer | None]], str, bool]:
    """The stem from its first conv: (its (conv, BN) pairs, its output tensor, whether a ReLU ends it).

    conv [BN] ReLU, once (7x7/2 or 3x3/1) or three times (the deep stem of timm's ``*d``/``*s``/``*t``
    and mmcls's V1c/V1d nets: 3x3/2, 3x3, 3x3).  A stem ReLU whose one reader is another conv continues
    the stem: a block's input always has two readers (its body and its shortcut), or a max pool.  A BN
    may have been folded into its conv by the exporter.  A one-conv 3x3 stem may also stop early, where
    its output already feeds the first block's two branches: after its BN (GluonCV's CIFARResNetV1: no
    ReLU) or after the conv itself (GluonCV's CIFARResNetV2, Gluon's thumbnail nets), including where the
    conv's only reader is the first v2 block's pre-activation (`_preactivates_first_block`)."""
    units: list[tuple[ConvLayer, BatchNormLayer | None]] = []
    while True:
        if not units:
            if conv.kernel == (7, 7):
                _check_conv(walker, conv, 7, 2, "the 7x7 stem conv")
            else:
                _check_conv(walker, conv, 3, None, "the stem conv (7x7/2, 3x3/1, or the deep stem's 3x3/2)")
        else:
            _check_conv(walker, conv, 3, 1, f"deep stem conv {len(units) + 1}")
        early = not units and conv.kernel == (3, 3) and conv.stride[0] == 1
        if early and (len(walker.users(conv.output)) > 1 or _preactivates_first_block(walker, conv)):
            return [(conv, None)], conv.output, False
        readers = walker.users(conv.output)
        if (not units and conv.kernel == (7, 7) or len(units) == 2) and len(readers) == 1 and isinstance(readers[0], MaxPoolLayer):
            # a stem with no BN or ReLU of its own before the pool (timm's ResNetV2: the first block's
            # pre-activation follows the pool): the 7x7 conv, or the deep stem's bare third conv
            units.append((conv, None))
            return units, conv.output, False
        after = walker.only_user(conv.output, (BatchNormLayer, ReluLayer), "the stem BatchNorm (or its ReLU)")
        bn = after if isinstance(after, BatchNormLayer) else None  # None: folded into the stem conv
        if bn is not None:
            _check_bn(walker, bn, conv.out_channels, "the stem BatchNorm")
            if early and len(walker.users(bn.output)) > 1:
                return [(conv, bn)], bn.output, False
            relu = walker.only_user(bn.output, ReluLayer, "the stem ReLU")
        else:
            relu = after
        units.append((conv, bn))
        readers = walker.users(relu.output)
        if len(units) < 3 and len(readers) == 1 and isinstance(readers[0], ConvLayer):
            conv = walker.visit(readers[0])
            continue
        break
    first = units[0][0]
    if len(units) == 3:
        _expect(walker, first.stride[0] == 2, first.node, "the deep stem's first conv should have stride 2")
    elif len(units) == 1:
        _expect(walker, first.kernel == (7, 7) or first.stride[0] == 1, first.node, "a one-conv 3x3 stem should have stride 1")
    else:  # two convs: whatever reads the second ReLU is the first misfit
        after = walker.users(relu.output)
        raise walker.fail(
            (after or [relu])[0].node,
            "expected the deep stem's third conv, or a residual block body after a one-conv stem, here",
        )
    return units, relu.output, True


def _preactivates_first_block(walker: _Walker, conv: ConvLayer) -> bool:
    """Whether ``conv -> BN -> ReLU`` is the first v2 block's pre-activation rather than a stem BN-ReLU:
    the ReLU feeds two convs whose paths meet at one Add, the shorter a bare 1x1 conv (the projection),
    the longer ending with a conv, and no ReLU follows the Add.  A v1 block after a stem BN-ReLU ends its
    sum with a ReLU, whether or not the exporter folded its BNs."""
    readers = walker.users(conv.output)
    if len(readers) == 1 and isinstance(readers[0], ReluLayer):
        relus = readers  # the pre-activation BN folded into this conv by the exporter
    elif len(readers) == 1 and isinstance(readers[0], BatchNormLayer):
        relus = walker.users(readers[0].output)
    else:
        return False
    if len(relus) != 1 or not isinstance(relus[0], ReluLayer):
        return False
    convs = walker.users(relus[0].output)
    if len(convs) != 2 or not all(isinstance(c, ConvLayer) for c in convs):
        return False
    paths = sorted((_chain_from(walker, c) for c in convs), key=lambda p: len(p[0]))
    (short, short_add, _), (body, add, _) = paths
    if len(short) != 1 or short_add is None or short_add is not add or not isinstance(body[-1], ConvLayer):
        return False
    after = walker.users(add.output)
    return not (len(after) == 1 and isinstance(after[0], ReluLayer))


def recognise(graph: OnnxGraph) -> Recognised:
    """Walk ``graph`` from its input to its output; raise naming the first node that does not fit."""
    walker = _Walker(graph)
    x = graph.input_name

    first = walker.only_user(x, (BatchNormLayer, ConvLayer), "the stem conv (or an input BatchNorm)")
    input_bn = None
    if isinstance(first, BatchNormLayer):
        input_bn = first
        first = walker.only_user(first.output, ConvLayer, "the stem conv after the input BatchNorm")
    stem, x, stem_relu = _stem(walker, first)
    if input_bn is not None:
        _check_bn(walker, input_bn, stem[0][0].in_channels, "the input BatchNorm")
    stem_pool = None
    if any(isinstance(u, MaxPoolLayer) for u in walker.users(x)):
        stem_pool = walker.only_user(x, MaxPoolLayer, "the stem max pool")
        x = stem_pool.output

    # The residual form is read off the first block: v2 reads its input with a BN, v1 with convs.
    residual = "v2" if any(isinstance(u, BatchNormLayer) for u in walker.users(x)) else "v1"
    if not stem_relu and len(stem) == 1 and stem[0][1] is None and _preactivates_first_block(walker, stem[0][0]):
        residual = "v2"  # the first block's pre-activation BN is folded into the bare stem conv
    blocks: list[Block] = []
    final_bn = None
    while True:
        users = walker.users(x)
        if residual == "v1" and len(users) == 1 and isinstance(users[0], AvgPoolLayer):
            break
        if residual == "v2" and _next_is_head_v2(walker, x):
            final_bn = walker.only_user(x, BatchNormLayer, "the final BatchNorm")
            x = walker.only_user(final_bn.output, ReluLayer, "the ReLU after the final BatchNorm").output
            break
        if not users:
            raise walker.fail(walker.producer(x), f"its output '{x}' goes nowhere, expected another block or the head")
        block, x = _block_v1(walker, x) if residual == "v1" else _block_v2(walker, x, first=not blocks and not stem_relu)
        blocks.append(block)
    if not blocks:
        raise walker.fail(walker.users(x)[0].node, "expected residual blocks after the stem")

    head_pool = walker.only_user(x, AvgPoolLayer, "the average pool of the head")
    _expect(walker, not head_pool.ceil_mode, head_pool.node, "ceil_mode=1 average pooling in the head, expected floor rounding")
    x = head_pool.output
    head_nodes = []
    while True:
        users = walker.users(x)
        if len(users) == 1 and isinstance(users[0], FlattenLayer):
            layer = walker.visit(users[0])
            head_nodes.append(layer.node)
            x = layer.output
            continue
        break
    linear = walker.only_user(x, LinearLayer, "the classifier (Gemm, or MatMul + Add)")
    x = linear.output
    bias_add = None
    if linear.bias is None:
        users = walker.users(x)
        if len(users) == 1 and isinstance(users[0], AddLayer) and users[0].constant is not None:
            bias_add = walker.visit(users[0])
            x = bias_add.output
    softmax = None
    users = walker.users(x)
    if len(users) == 1 and isinstance(users[0], SoftmaxLayer) and walker.resolve(graph.output_name) == walker.resolve(users[0].output):
        softmax = walker.visit(users[0])
    elif walker.resolve(graph.output_name) != x:
        users = walker.users(x)
        node = users[0].node if users else walker.producer(graph.output_name)
        raise walker.fail(node, f"the graph output '{graph.output_name}' should be the classifier's logits '{x}'")
    if walker.users(x) and softmax is None:
        raise walker.fail(walker.users(x)[0].node, "reads the logits; the graph should end at the classifier")
    if softmax is not None and walker.users(softmax.output):
        raise walker.fail(walker.users(softmax.output)[0].node, "reads the probabilities; the graph should end at the Softmax")

    unvisited = [n for n in graph.nodes if n.index not in walker.visited and n not in walker.pass_nodes]
    if unvisited:
        raise walker.fail(unvisited[0], "lies off the ResNet's path from the input to the logits")
    return Recognised(
        input_bn=input_bn,
        stem=stem,
        stem_relu=stem_relu,
        stem_pool=stem_pool,
        blocks=blocks,
        final_bn=final_bn,
        head_pool=head_pool,
        head_nodes=head_nodes,
        linear=linear,
        bias_add=bias_add,
        softmax=softmax,
    )


# -- the shared skeleton -----------------------------------------------------------------------------


def _conv(graph: OnnxGraph, conv: ConvLayer) -> Conv:
    inputs = conv.node.inputs
    return Conv(
        label=conv.node.label,
        layer=SourceLayer(conv.node.label, conv.node.op_type),
        weight=SourceTensor(conv.weight, graph.source_name(inputs[1])),
        bias=SourceTensor(conv.bias, graph.source_name(inputs[2])) if conv.bias is not None else None,
        stride=tuple(conv.stride),
        pad=tuple(conv.pads),
        dilation=tuple(conv.dilation),
        groups=conv.group,
    )


FOLDED = "folded into the conv by the exporter"


def folded_eps(found: Recognised) -> float:
    """The eps an identity BN gets: the most common eps of the BNs the graph kept (so a partly fused
    graph needs no eps override), else 1e-5 (PyTorch's, whose exporter folds every BN)."""
    kept = [bn.eps for bn in _all_bns(found) if bn is not None]
    if not kept:
        return 1e-5
    return min(set(kept), key=lambda value: (-kept.count(value), value))


def _all_bns(found: Recognised) -> list[BatchNormLayer | None]:
    bns = [found.input_bn, found.final_bn] + [bn for _, bn in found.stem]
    for block in found.blocks:
        bns += list(block.bns)
        if block.residual == "v1" and block.shortcut_conv is not None:
            bns.append(block.shortcut_bn)
    return bns


def folded_count(found: Recognised) -> int:
    """How many BN slots of the reference the graph has folded into convs (identity BNs)."""
    slots = [bn for _, bn in (found.stem if found.stem_relu else found.stem[:-1])]
    slots += [bn for block in found.blocks for bn in block.bns]
    slots += [block.shortcut_bn for block in found.blocks if block.residual == "v1" and block.shortcut_conv is not None]
    return sum(bn is None for bn in slots)


def _bn_after(bn: BatchNormLayer | None, conv: Conv, eps: float) -> BatchNorm:
    """The BN after ``conv``; the identity BN where the exporter folded it into the conv."""
    if bn is not None:
        return _bn(bn)
    return BatchNorm.identity(f"the BatchNorm after {conv.label} ({FOLDED})", conv.out_channels, eps, f"{FOLDED} {conv.label}")


def _bn(bn: BatchNormLayer | None) -> BatchNorm | None:
    """ONNX BatchNormalization: gamma and beta are always stored and always applied (an exporter that
    knew the source ignored them, e.g. MXNet's fix_gamma, has already lost that fact)."""
    if bn is None:
        return None
    names = bn.node.inputs
    return BatchNorm(
        label=bn.node.label,
        layers=[SourceLayer(bn.node.label, bn.node.op_type)],
        eps=bn.eps,
        running_mean=SourceTensor(bn.mean, names[3]),
        running_var=SourceTensor(bn.var, names[4]),
        gamma=SourceTensor(bn.scale, names[1]),
        beta=SourceTensor(bn.bias, names[2]),
    )


def _pool(layer, kind: str) -> Pool:
    if kind == "max":
        return Pool(layer.node.label, "max", layer.kernel, layer.stride, layer.pads, ceil=layer.ceil_mode)
    if layer.kernel is None:
        return Pool(layer.node.label, "avg", global_pool=True)
    return Pool(layer.node.label, "avg", layer.kernel, layer.stride, layer.pads)


def to_skeleton(graph: OnnxGraph, found: Recognised) -> Skeleton:
    """What the walk found as the shared skeleton; every tensor named by its initializer (an Identity
    alias by the initializer behind it); a BN folded into its conv becomes the identity BN."""
    eps = folded_eps(found)
    blocks = []
    for block in found.blocks:
        convs = [_conv(graph, c) for c in block.convs]
        if block.residual == "v1":
            # bnK follows convK
            body = [ConvBN(conv, _bn_after(bn, conv, eps)) for conv, bn in zip(convs, block.bns)]
        else:
            # bn1 is the pre-activation (never folded); bnK (K > 1) follows conv K - 1
            first = _bn(block.bns[0]) if block.bns[0] is not None else BatchNorm.identity(
                f"the pre-activation BatchNorm of {block.first.label} ({FOLDED})", convs[0].in_channels, eps,
                f"{FOLDED} before {block.first.label}",
            )
            pre = [first] + [_bn_after(bn, conv, eps) for conv, bn in zip(convs, block.bns[1:])]
            body = [ConvBN(conv, bn) for conv, bn in zip(convs, pre)]
        shortcut = Shortcut()
        if block.shortcut_conv is not None:
            conv = _conv(graph, block.shortcut_conv)
            bn = _bn_after(block.shortcut_bn, conv, eps) if block.residual == "v1" else _bn(block.shortcut_bn)
            if block.shortcut_pool is not None:
                shortcut = Shortcut("avgpool_conv", conv, bn, block.shortcut_pool.stride[0], reads=block.shortcut_reads)
            else:
                shortcut = Shortcut("conv", conv, bn, conv.stride[0], reads=block.shortcut_reads)
        blocks.append(SkeletonBlock(label=block.first.label, residual=block.residual, body=body, shortcut=shortcut))
    linear = found.linear
    bias = SourceTensor(linear.bias, linear.bias_source) if linear.bias is not None else None
    if found.bias_add is not None:
        constant = found.bias_add.constant.reshape(-1)
        if constant.shape[0] != linear.weight.shape[0]:
            raise ConversionError(
                f"{graph.where(found.bias_add.node)}: bias of {constant.shape[0]} values for {linear.weight.shape[0]} classes"
            )
        bias = SourceTensor(constant, graph.source_name(next(n for n in found.bias_add.node.inputs if n in graph.initializers)))
    stem = []
    for conv_layer, bn_layer in found.stem:
        conv = _conv(graph, conv_layer)
        # a stem that ends without a ReLU and without a BN node is the bare conv (stem_norm "none"): a BN
        # folded into it would read the same, and the bare conv with its bias is that network exactly
        last = conv_layer is found.stem[-1][0]
        bn = _bn_after(bn_layer, conv, eps) if found.stem_relu or bn_layer is not None or not last else None
        stem.append(ConvBN(conv, bn))
    return Skeleton(
        where=str(graph.path),
        input_bn=_bn(found.input_bn),
        stem=stem,
        stem_relu=found.stem_relu,
        stem_pool=_pool(found.stem_pool, "max") if found.stem_pool is not None else None,
        blocks=blocks,
        final_bn=_bn(found.final_bn),
        head_pool=_pool(found.head_pool, "avg"),
        classifier=Linear(
            linear.node.label, SourceLayer(linear.node.label, linear.node.op_type), SourceTensor(linear.weight, linear.weight_source), bias
        ),
    )


__all__ = ["Recognised", "folded_count", "recognise", "to_skeleton"]
