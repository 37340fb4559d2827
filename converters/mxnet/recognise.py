"""Recognise a ResNet in an MXNet symbol graph, from its topology, not from its names.

The walk goes from the ``data`` variable: an optional input BatchNorm, the stem (conv, BN, ReLU,
optional max pool), then one residual unit per add node, then the head (v2: BN, ReLU; global
average pool, flatten, fully connected, an optional softmax).  A unit is read by tracing both inputs
of its add node back to the unit's input: the chain with more convolutions is the body, the other
the shortcut (empty: identity; conv + BN: a v1 projection; BN, ReLU, conv shared with the body:
a v2 projection of the pre-activated input).  The body's sequence of operators says v1 or v2 and
basic or bottleneck.  This reads the classic ``resnet-N`` symbols and Gluon's ``export()`` alike, and
gives every node its role (stem, unit N's conv2, a projection), so tensors are never paired by their
order or by pieces of their names.  `to_skeleton` turns the roles into the shared skeleton; the spec
(stages, strides, pooling, eps, projections) is decided by `converters.build`.
"""

from __future__ import annotations

from dataclasses import dataclass

from resnet_port.converters.mxnet.symbol import SymbolGraph, SymbolNode
from resnet_port.converters.skeleton import Block, ConvBN, Pool, Shortcut, Skeleton
from resnet_port.errors import ConversionError

ADD_OPS = ("elemwise_add", "_Plus", "_plus", "broadcast_add", "_add", "broadcast_plus")
RELU_OPS = ("Activation", "relu")
SKIPPED_TAIL_OPS = ("SoftmaxOutput", "softmax", "SoftmaxActivation")

# The body of a unit, read from its input to its add, and what it means.
BODY_PATTERNS: dict[tuple[str, ...], tuple[str, str]] = {
    ("conv", "bn", "relu", "conv", "bn"): ("v1", "basic"),
    ("conv", "bn", "relu", "conv", "bn", "relu", "conv", "bn"): ("v1", "bottleneck"),
    ("bn", "relu", "conv", "bn", "relu", "conv"): ("v2", "basic"),
    ("bn", "relu", "conv", "bn", "relu", "conv", "bn", "relu", "conv"): ("v2", "bottleneck"),
}
# Roles of the body's convs and BNs, in the order the body holds them (bnK pairs with convK).
BODY_TARGETS: dict[tuple[str, str], tuple[str, ...]] = {
    ("v1", "basic"): ("conv1", "bn1", "conv2", "bn2"),
    ("v1", "bottleneck"): ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3"),
    ("v2", "basic"): ("bn1", "conv1", "bn2", "conv2"),
    ("v2", "bottleneck"): ("bn1", "conv1", "bn2", "conv2", "bn3", "conv3"),
}


@dataclass
class Unit:
    """One residual unit as found in the graph."""

    residual: str
    block: str
    body: dict[str, SymbolNode]  # role within the block ("conv1", "bn1", ...) -> node
    shortcut: dict[str, SymbolNode]  # "conv" and, in v1, "bn"
    add: SymbolNode
    output: SymbolNode
    # v2: the projection reads the pre-activated input, or (GluonCV's CIFAR V2) the raw block input
    shortcut_reads: str = "preactivated"


@dataclass
class Recognised:
    """The graph read as a ResNet: which node is the stem, each unit's roles, the head."""

    input_bn: SymbolNode | None
    stem: list[tuple[SymbolNode, SymbolNode | None]]  # (conv, BN) pairs: one (BN may be None), or three (deep)
    stem_relu: bool
    stem_pool: SymbolNode | None
    units: list[Unit]
    final_bn: SymbolNode | None
    head_pool: SymbolNode
    fc: SymbolNode

    def placed(self) -> set[int]:
        """The node indices that hold parameters of the recognised ResNet."""
        nodes = [self.input_bn, self.final_bn, self.fc] + [n for pair in self.stem for n in pair]
        for unit in self.units:
            nodes += list(unit.body.values()) + list(unit.shortcut.values())
        return {n.index for n in nodes if n is not None}


def _kind(node: SymbolNode) -> str:
    if node.op == "Convolution":
        return "conv"
    if node.op == "BatchNorm":
        return "bn"
    if node.op in RELU_OPS:
        return "relu"
    return node.op


class _Walker:
    def __init__(self, graph: SymbolGraph) -> None:
        self.graph = graph
        self.path = graph.path

    def fail(self, node: SymbolNode, expected: str) -> ConversionError:
        return ConversionError(f"{self.path}: {node.describe()} does not fit a ResNet: expected {expected}")

    def only_consumer(self, node: SymbolNode, expected: str) -> SymbolNode:
        consumers = self.graph.op_consumers(node)
        if len(consumers) != 1:
            names = ", ".join(c.name for c in consumers) or "nothing"
            raise ConversionError(
                f"{self.path}: {node.describe()} feeds {names}; expected a single {expected} after it"
            )
        return consumers[0]

    def input_node(self) -> SymbolNode:
        data = [n for n in self.graph.nodes if n.is_variable and n.name == "data"]
        if len(data) != 1:
            raise ConversionError(f"{self.path}: expected one input variable named 'data', found {len(data)}")
        return data[0]

    # -- stem ---------------------------------------------------------------------------------------
    def stem(self) -> tuple[SymbolNode | None, list[tuple[SymbolNode, SymbolNode | None]], bool, SymbolNode | None, SymbolNode]:
        """(input BN or None, the stem's (conv, BN) pairs, ReLU after the stem?, stem pool or None, the
        stem's output node).

        The deep stem (GluonCV v1c/d/e/s, mmcls V1c/V1d) is three conv-BN-ReLU in a chain: a stem ReLU
        whose only consumer is another conv continues the stem (a residual unit's input always feeds two
        branches, its body and its shortcut, so it cannot be mistaken for one).  A one-conv stem may
        stop early, where its output already feeds the first unit's two branches: after the BN
        (GluonCV's CIFARResNetV1: no ReLU) or after the conv itself (GluonCV's CIFARResNetV2, Gluon's
        thumbnail nets).  A bare conv followed by a v2 unit that projects looks like a stem BN-ReLU
        feeding a projection; `_preactivates_first_unit` tells the two apart."""
        node = self.only_consumer(self.input_node(), "BatchNorm or Convolution")
        input_bn = None
        if _kind(node) == "bn":
            input_bn, node = node, self.only_consumer(node, "Convolution")
        if _kind(node) != "conv":
            raise self.fail(node, "the stem Convolution")
        conv = node
        if len(self.graph.op_consumers(conv)) > 1 or self._preactivates_first_unit(conv):
            return input_bn, [(conv, None)], False, None, conv
        bn = self.only_consumer(conv, "BatchNorm")
        if _kind(bn) != "bn":
            raise self.fail(bn, "the stem BatchNorm")
        if len(self.graph.op_consumers(bn)) > 1:
            return input_bn, [(conv, bn)], False, None, bn
        relu = self.only_consumer(bn, "ReLU")
        if _kind(relu) != "relu":
            raise self.fail(relu, "the stem ReLU")
        pairs: list[tuple[SymbolNode, SymbolNode | None]] = [(conv, bn)]
        consumers = self.graph.op_consumers(relu)
        while len(pairs) < 3 and len(consumers) == 1 and _kind(consumers[0]) == "conv":
            conv = consumers[0]
            bn = self.only_consumer(conv, "BatchNorm (the deep stem)")
            if _kind(bn) != "bn":
                raise self.fail(bn, "a BatchNorm after a deep-stem Convolution")
            relu = self.only_consumer(bn, "ReLU (the deep stem)")
            if _kind(relu) != "relu":
                raise self.fail(relu, "a ReLU after a deep-stem BatchNorm")
            pairs.append((conv, bn))
            consumers = self.graph.op_consumers(relu)
        pool, output = None, relu
        if len(consumers) == 1 and consumers[0].op == "Pooling":
            pool = output = consumers[0]
        return input_bn, pairs, True, pool, output

    def _preactivates_first_unit(self, conv: SymbolNode) -> bool:
        """Whether ``conv -> BN -> ReLU`` is the first v2 unit's shared pre-activation (so the stem is
        the bare conv): the first residual add after it then adds a bare conv of that ReLU (the
        projection) to a body that ends with a conv.  After a stem's BN-ReLU, a v1 unit's body ends
        with a BN; the ReLU of a stem with a max pool feeds the pool alone."""
        bn = self.graph.op_consumers(conv)
        if len(bn) != 1 or _kind(bn[0]) != "bn":
            return False
        relu = self.graph.op_consumers(bn[0])
        if len(relu) != 1 or _kind(relu[0]) != "relu" or len(self.graph.op_consumers(relu[0])) != 2:
            return False
        adds = [n for n in self.graph.operators() if n.op in ADD_OPS and n.index > relu[0].index]
        if not adds:
            return False
        try:
            chains = [self.trace_back(self.graph.node(i), conv, adds[0]) for i in adds[0].inputs]
        except ConversionError:
            return False
        kinds = sorted((tuple(_kind(n) for n in chain) for chain in chains), key=len)
        return kinds[0] == ("bn", "relu", "conv") and kinds[1][-1] == "conv" and kinds[1][:2] == ("bn", "relu")

    # -- residual units -----------------------------------------------------------------------------
    def trace_back(self, start: SymbolNode, unit_input: SymbolNode, add: SymbolNode) -> list[SymbolNode]:
        """The operators from ``unit_input`` (excluded) to ``start`` (included), following data inputs."""
        chain: list[SymbolNode] = []
        node = start
        while node.index != unit_input.index:
            if node.is_variable or node.index < unit_input.index:
                raise ConversionError(
                    f"{self.path}: {add.describe()} adds a branch that does not start at the unit input "
                    f"{unit_input.name!r}; expected a residual unit"
                )
            chain.append(node)
            node = self.graph.data_input(node)
        return chain[::-1]

    def unit(self, unit_input: SymbolNode, add: SymbolNode) -> Unit:
        if len(add.inputs) != 2:
            raise self.fail(add, "a residual add of two inputs")
        chains = [self.trace_back(self.graph.node(i), unit_input, add) for i in add.inputs]
        chains.sort(key=lambda chain: sum(_kind(n) == "conv" for n in chain), reverse=True)
        body, shortcut = chains
        kinds = tuple(_kind(n) for n in body)
        if kinds not in BODY_PATTERNS:
            found = " -> ".join(kinds)
            raise ConversionError(
                f"{self.path}: the unit ending at {add.describe()} has body {found}; expected the layers of a "
                "v1 or v2 basic or bottleneck block"
            )
        residual, block = BODY_PATTERNS[kinds]
        modules = [n for n in body if _kind(n) in ("conv", "bn")]
        placed = dict(zip(BODY_TARGETS[(residual, block)], modules))
        shortcut_nodes = self.shortcut(shortcut, body, residual, add)
        output = add
        if residual == "v1":
            output = self.only_consumer(add, "ReLU (v1 units end with one)")
            if _kind(output) != "relu":
                raise self.fail(output, "the ReLU after a v1 residual add")
        # a v2 projection's chain from the unit input is bn, relu, conv, or the bare conv of the raw input
        reads = "block_input" if residual == "v2" and len(shortcut) == 1 else "preactivated"
        return Unit(residual, block, placed, shortcut_nodes, add, output, reads)

    def shortcut(self, chain: list[SymbolNode], body: list[SymbolNode], residual: str, add: SymbolNode) -> dict[str, SymbolNode]:
        kinds = tuple(_kind(n) for n in chain)
        if not chain:
            return {}
        if residual == "v1" and kinds == ("conv", "bn"):
            return {"conv": chain[0], "bn": chain[1]}
        if residual == "v1" and kinds == ("Pooling", "conv", "bn"):
            self.check_avg_down(chain[0], chain[1])
            return {"pool": chain[0], "conv": chain[1], "bn": chain[2]}
        if residual == "v2" and kinds == ("bn", "relu", "conv") and chain[:2] == body[:2]:
            return {"conv": chain[2]}  # v2: projected from the pre-activated input
        if residual == "v2" and kinds == ("conv",):
            return {"conv": chain[0]}  # GluonCV CIFAR V2: projected from the raw block input
        raise ConversionError(
            f"{self.path}: the unit ending at {add.describe()} has shortcut {' -> '.join(kinds)}; expected identity, "
            + ("conv -> bn, or Pooling -> conv -> bn (avg down)" if residual == "v1"
               else "a conv of the pre-activated input (bn -> relu shared with the body) or of the raw block input")
        )

    def check_avg_down(self, pool: SymbolNode, conv: SymbolNode) -> None:
        """The avg-down pool must be the reference's: average, kernel = stride, no padding, and (when it
        pools at all) sizes rounded up, each window divided by the cells it covers (GluonCV's
        AvgPool2D(ceil_mode=True, count_include_pad=False), timm's and mmcls's alike).  With no padding
        MXNet's count_include_pad changes nothing (the divisor is the window clipped to the padded map,
        which is the map), so only the rounding is checked."""
        kernel, stride = pool.attr_tuple("kernel", (1, 1)), pool.attr_tuple("stride", (1, 1))
        ok = pool.attr_str("pool_type", "max") == "avg" and not pool.attr_bool("global_pool", False)
        ok &= kernel == stride and kernel[0] == kernel[1] and pool.attr_tuple("pad", (0, 0)) == (0, 0)
        if ok and kernel != (1, 1):
            ok = pool.attr_str("pooling_convention", "valid") == "full"
        if not ok:
            raise self.fail(
                pool,
                "the avg-down shortcut's pool: pool_type avg, kernel = stride, pad 0, pooling_convention 'full' "
                f"(sizes rounded up, as the reference's ceil_mode=True pool) (found {dict(pool.attrs)})",
            )

    # -- head ---------------------------------------------------------------------------------------
    def head(self, node: SymbolNode, residual: str) -> tuple[SymbolNode | None, SymbolNode, SymbolNode]:
        """(v2's final BN or None, the average pool, the classifier)."""
        final_bn = None
        nxt = self.only_consumer(node, "the head")
        if residual == "v2":
            if _kind(nxt) != "bn":
                raise self.fail(nxt, "the final BatchNorm of a v2 ResNet")
            final_bn = nxt
            relu = self.only_consumer(final_bn, "ReLU")
            if _kind(relu) != "relu":
                raise self.fail(relu, "the ReLU after the final BatchNorm")
            nxt = self.only_consumer(relu, "the global pool")
        if nxt.op != "Pooling" or nxt.attr_str("pool_type", "max") != "avg":
            raise self.fail(nxt, "an average pool before the classifier")
        pool = nxt
        nxt = self.only_consumer(nxt, "Flatten or FullyConnected")
        if nxt.op in ("Flatten", "flatten"):
            nxt = self.only_consumer(nxt, "FullyConnected")
        if nxt.op != "FullyConnected":
            raise self.fail(nxt, "the FullyConnected classifier")
        fc = nxt
        for tail in self.graph.op_consumers(fc):
            if tail.op not in SKIPPED_TAIL_OPS:
                raise self.fail(tail, "nothing after the classifier but a softmax")
        return final_bn, pool, fc

    # -- all of it ----------------------------------------------------------------------------------
    def run(self) -> Recognised:
        input_bn, stem, stem_relu, stem_pool, current = self.stem()
        adds = [n for n in self.graph.operators() if n.op in ADD_OPS]
        if not adds:
            raise ConversionError(f"{self.path}: the graph has no residual add; it is not a ResNet")
        units = []
        for add in adds:
            unit = self.unit(current, add)
            if units and (unit.residual, unit.block) != (units[0].residual, units[0].block):
                raise self.fail(add, f"a {units[0].residual} {units[0].block} unit like the first one")
            units.append(unit)
            current = unit.output
        final_bn, head_pool, fc = self.head(current, units[0].residual)
        return Recognised(input_bn, stem, stem_relu, stem_pool, units, final_bn, head_pool, fc)


def recognise(graph: SymbolGraph) -> Recognised:
    """Read the graph as a ResNet, or raise `ConversionError` naming the first node that does not fit."""
    return _Walker(graph).run()


__all__ = ["Recognised", "Unit", "recognise"]


# -- the shared skeleton -----------------------------------------------------------------------------


def pool_record(node: SymbolNode) -> Pool:
    """MXNet's Pooling: ``pooling_convention`` 'valid' rounds down (as PyTorch), 'full' up (as Caffe)."""
    ph, pw = node.attr_tuple("pad", (0, 0))
    return Pool(
        label=node.describe(),
        kind=node.attr_str("pool_type", "max"),
        kernel=node.attr_tuple("kernel", (1, 1)),
        stride=node.attr_tuple("stride", (1, 1)),
        pad=(ph, pw, ph, pw),
        ceil=node.attr_str("pooling_convention", "valid") == "full",
        global_pool=node.attr_bool("global_pool", False),
    )


def to_skeleton(found: Recognised, records: dict[int, object], where: str) -> Skeleton:
    """The recognised nodes as the shared skeleton; ``records`` holds each node's record (`ops`)."""

    def rec(node: SymbolNode | None):
        return None if node is None else records[node.index]

    blocks = []
    for unit in found.units:
        count = 3 if unit.block == "bottleneck" else 2
        body = [ConvBN(rec(unit.body[f"conv{k}"]), rec(unit.body[f"bn{k}"])) for k in range(1, count + 1)]
        shortcut = Shortcut()
        if "pool" in unit.shortcut:
            conv = rec(unit.shortcut["conv"])
            stride = unit.shortcut["pool"].attr_tuple("stride", (1, 1))[0]
            shortcut = Shortcut("avgpool_conv", conv, rec(unit.shortcut["bn"]), stride)
        elif "conv" in unit.shortcut:
            conv = rec(unit.shortcut["conv"])
            shortcut = Shortcut("conv", conv, rec(unit.shortcut.get("bn")), conv.stride[0], reads=unit.shortcut_reads)
        blocks.append(Block(f"the unit ending at {unit.add.describe()}", unit.residual, body, shortcut))
    return Skeleton(
        where=where,
        input_bn=rec(found.input_bn),
        stem=[ConvBN(rec(conv), rec(bn)) for conv, bn in found.stem],
        stem_pool=pool_record(found.stem_pool) if found.stem_pool is not None else None,
        stem_relu=found.stem_relu,
        blocks=blocks,
        final_bn=rec(found.final_bn),
        head_pool=pool_record(found.head_pool),
        classifier=rec(found.fc),
    )


__all__ += ["pool_record", "to_skeleton"]
