"""Recognise a ResNet in an MXNet symbol graph, from its topology, not from its names.

The walk goes from the ``data`` variable: an optional input BatchNorm, the stem (conv, BN, ReLU,
optional max pool), then one residual unit per add node, then the head (v2: BN, ReLU; global
average pool, flatten, fully connected, an optional softmax).  A unit is read by tracing both inputs
of its add node back to the unit's input: the chain with more convolutions is the body, the other
the shortcut (empty: identity; conv + BN: a v1 projection; BN, ReLU, conv shared with the body:
a v2 projection of the pre-activated input).  The body's sequence of operators says v1 or v2 and
basic or bottleneck.  This reads the classic ``resnet-N`` symbols and Gluon's ``export()`` alike, and
places every node at a reference module name (``layer2.0.conv1``), so tensors are never paired by
their order or by pieces of their names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from resnet_port.converters.mxnet.symbol import SymbolGraph, SymbolNode
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
# Reference names of the body's convs and BNs, in the order the body holds them.
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
    stride: int
    stride_at: str | None  # the body conv that strides ("conv1" or "conv2"), None at stride 1
    body: dict[str, SymbolNode]  # reference name within the block -> node
    shortcut: dict[str, SymbolNode]  # "downsample.0" (conv) and, in v1, "downsample.1" (BN)
    add: SymbolNode
    output: SymbolNode


@dataclass
class Recognised:
    """The graph read as a ResNet: facts for the spec and every node placed at its reference name."""

    input_bn: SymbolNode | None
    stem_conv: SymbolNode
    stem_kind: str
    stem_pool: str
    units: list[Unit]
    layers: tuple[int, ...]
    final_bn: SymbolNode | None
    head_pool: str
    head_pool_size: int
    fc: SymbolNode
    placements: list[tuple[SymbolNode, str | None]] = field(default_factory=list)  # in graph order


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
    def stem(self) -> tuple[SymbolNode | None, SymbolNode, SymbolNode, str, str, SymbolNode]:
        """(input BN or None, stem conv, stem BN, stem kind, stem pool, the stem's output node)."""
        node = self.only_consumer(self.input_node(), "BatchNorm or Convolution")
        input_bn = None
        if _kind(node) == "bn":
            input_bn, node = node, self.only_consumer(node, "Convolution")
        if _kind(node) != "conv":
            raise self.fail(node, "the stem Convolution")
        conv = node
        kernel, stride = conv.attr_tuple("kernel", ()), conv.attr_tuple("stride", (1, 1))
        if kernel == (7, 7) and stride == (2, 2):
            stem_kind = "7x7"
        elif kernel == (3, 3) and stride == (1, 1):
            stem_kind = "3x3"
        else:
            raise self.fail(conv, f"a 7x7/2 or 3x3/1 stem convolution, found kernel {kernel} stride {stride}")
        bn = self.only_consumer(conv, "BatchNorm")
        if _kind(bn) != "bn":
            raise self.fail(bn, "the stem BatchNorm")
        relu = self.only_consumer(bn, "ReLU")
        if _kind(relu) != "relu":
            raise self.fail(relu, "the stem ReLU")
        consumers = self.graph.op_consumers(relu)
        stem_pool, output = "none", relu
        if len(consumers) == 1 and consumers[0].op == "Pooling":
            stem_pool, output = self.stem_pool(consumers[0]), consumers[0]
        return input_bn, conv, bn, stem_kind, stem_pool, output

    def stem_pool(self, pool: SymbolNode) -> str:
        if pool.attr_str("pool_type", "max") != "max" or pool.attr_bool("global_pool", False):
            raise self.fail(pool, "a 3x3/2 max pool after the stem")
        kernel, stride = pool.attr_tuple("kernel", ()), pool.attr_tuple("stride", (1, 1))
        pad = pool.attr_tuple("pad", (0, 0))
        convention = pool.attr_str("pooling_convention", "valid")
        # MXNet 'valid' rounds down (as PyTorch), 'full' rounds up (as Caffe).
        if (kernel, stride, pad, convention) == ((3, 3), (2, 2), (1, 1), "valid"):
            return "max"
        if (kernel, stride, pad, convention) == ((3, 3), (2, 2), (0, 0), "full"):
            return "max_ceil"
        raise self.fail(
            pool,
            f"a 3x3/2 max pool with pad 1 and pooling_convention=valid (or pad 0, full); found kernel {kernel} "
            f"stride {stride} pad {pad} {convention}",
        )

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
        strides = {
            name: node.attr_tuple("stride", (1, 1)) for name, node in placed.items() if name.startswith("conv")
        }
        strided = [name for name, s in strides.items() if s != (1, 1)]
        if len(strided) > 1 or any(s[0] != s[1] for s in strides.values()):
            raise self.fail(add, f"one strided conv per unit, found strides {strides}")
        stride = strides[strided[0]][0] if strided else 1
        if "downsample.0" in shortcut_nodes:
            sc_stride = shortcut_nodes["downsample.0"].attr_tuple("stride", (1, 1))
            if sc_stride != (stride, stride) or shortcut_nodes["downsample.0"].attr_tuple("kernel", ()) != (1, 1):
                raise self.fail(shortcut_nodes["downsample.0"], f"a 1x1 projection of stride {stride}")
        elif stride != 1:
            raise self.fail(add, "a projection shortcut on a strided unit")
        output = add
        if residual == "v1":
            output = self.only_consumer(add, "ReLU (v1 units end with one)")
            if _kind(output) != "relu":
                raise self.fail(output, "the ReLU after a v1 residual add")
        return Unit(residual, block, stride, strided[0] if strided else None, placed, shortcut_nodes, add, output)

    def shortcut(self, chain: list[SymbolNode], body: list[SymbolNode], residual: str, add: SymbolNode) -> dict[str, SymbolNode]:
        kinds = tuple(_kind(n) for n in chain)
        if not chain:
            return {}
        if residual == "v1" and kinds == ("conv", "bn"):
            return {"downsample.0": chain[0], "downsample.1": chain[1]}
        if residual == "v2" and kinds == ("bn", "relu", "conv") and chain[:2] == body[:2]:
            return {"downsample.0": chain[2]}  # v2: projected from the pre-activated input
        raise ConversionError(
            f"{self.path}: the unit ending at {add.describe()} has shortcut {' -> '.join(kinds)}; expected identity, "
            + ("conv -> bn" if residual == "v1" else "a conv of the pre-activated input (bn -> relu shared with the body)")
        )

    # -- head ---------------------------------------------------------------------------------------
    def head(self, node: SymbolNode, residual: str) -> tuple[SymbolNode | None, str, int, SymbolNode]:
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
        if nxt.attr_bool("global_pool", False):
            head_pool, size = "global", 7
        else:
            kernel, stride = nxt.attr_tuple("kernel", ()), nxt.attr_tuple("stride", (1, 1))
            if len(kernel) != 2 or kernel[0] != kernel[1] or stride != (1, 1) or nxt.attr_tuple("pad", (0, 0)) != (0, 0):
                raise self.fail(nxt, f"a global average pool or a square one of stride 1; found kernel {kernel} stride {stride}")
            head_pool, size = "fixed", kernel[0]
        nxt = self.only_consumer(nxt, "Flatten or FullyConnected")
        if nxt.op in ("Flatten", "flatten"):
            nxt = self.only_consumer(nxt, "FullyConnected")
        if nxt.op != "FullyConnected":
            raise self.fail(nxt, "the FullyConnected classifier")
        fc = nxt
        for tail in self.graph.op_consumers(fc):
            if tail.op not in SKIPPED_TAIL_OPS:
                raise self.fail(tail, "nothing after the classifier but a softmax")
        return final_bn, head_pool, size, fc

    # -- all of it ----------------------------------------------------------------------------------
    def run(self) -> Recognised:
        input_bn, stem_conv, stem_bn, stem_kind, stem_pool, current = self.stem()
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
        layers: list[int] = []
        for index, unit in enumerate(units):
            if index == 0 or unit.stride != 1:
                layers.append(0)
            layers[-1] += 1
        residual = units[0].residual
        final_bn, head_pool, size, fc = self.head(current, residual)
        out = Recognised(input_bn, stem_conv, stem_kind, stem_pool, units, tuple(layers), final_bn, head_pool, size, fc)
        out.placements = self.placements(out, stem_bn)
        return out

    def placements(self, found: Recognised, stem_bn: SymbolNode) -> list[tuple[SymbolNode, str | None]]:
        targets: dict[int, str] = {found.stem_conv.index: "conv1", stem_bn.index: "bn1", found.fc.index: "fc"}
        if found.input_bn is not None:
            targets[found.input_bn.index] = "data_bn"
        if found.final_bn is not None:
            targets[found.final_bn.index] = "final_bn"
        unit_index = 0
        for stage, count in enumerate(found.layers):
            for block in range(count):
                unit = found.units[unit_index]
                unit_index += 1
                prefix = f"layer{stage + 1}.{block}"
                for name, node in {**unit.body, **unit.shortcut}.items():
                    if node.index in targets:
                        raise self.fail(node, "each layer used once")
                    targets[node.index] = f"{prefix}.{name}"
        return [(node, targets.get(node.index)) for node in self.graph.operators()]


def recognise(graph: SymbolGraph) -> Recognised:
    """Read the graph as a ResNet, or raise `ConversionError` naming the first node that does not fit."""
    return _Walker(graph).run()


__all__ = ["Recognised", "Unit", "recognise"]
