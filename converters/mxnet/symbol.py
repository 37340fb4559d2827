"""MXNet's symbol JSON (``*-symbol.json``), read into a small graph of typed nodes.

The file lists nodes in topological order; ``op == "null"`` marks a variable (the input ``data``, a
parameter such as ``conv0_weight``, or a label).  Attributes are strings (``"(3, 3)"``, ``"True"``);
an attribute left out means MXNet's default for that operator, which is why the accessors here take
the default explicitly (BatchNorm's ``fix_gamma`` defaults to True and its ``eps`` to 1e-3).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resnet_port.errors import ConversionError


@dataclass(frozen=True)
class SymbolNode:
    """One node: its operator, name, string attributes and the indices of its input nodes."""

    index: int
    op: str
    name: str
    attrs: dict[str, str] = field(hash=False, compare=False)
    inputs: tuple[int, ...]

    @property
    def is_variable(self) -> bool:
        return self.op == "null"

    def describe(self) -> str:
        return f"node {self.name!r} ({self.op})"

    # -- typed attributes; ``default`` is MXNet's default for the operator -------------------------
    def attr_bool(self, key: str, default: bool) -> bool:
        value = self.attrs.get(key)
        if value is None:
            return default
        if value.strip().lower() in ("true", "1"):
            return True
        if value.strip().lower() in ("false", "0"):
            return False
        raise ConversionError(f"{self.describe()}: attribute {key}={value!r} is not a boolean")

    def attr_float(self, key: str, default: float) -> float:
        value = self.attrs.get(key)
        try:
            return default if value is None else float(value)
        except ValueError:
            raise ConversionError(f"{self.describe()}: attribute {key}={value!r} is not a number") from None

    def attr_int(self, key: str, default: int) -> int:
        value = self.attrs.get(key)
        try:
            return default if value is None else int(value)
        except ValueError:
            raise ConversionError(f"{self.describe()}: attribute {key}={value!r} is not an integer") from None

    def attr_tuple(self, key: str, default: tuple[int, ...]) -> tuple[int, ...]:
        value = self.attrs.get(key)
        if value is None or value.strip() in ("()", "[]", ""):
            return default
        try:
            return tuple(int(v) for v in value.strip("()[] ").split(",") if v.strip())
        except ValueError:
            raise ConversionError(f"{self.describe()}: attribute {key}={value!r} is not a tuple of integers") from None

    def attr_str(self, key: str, default: str) -> str:
        return self.attrs.get(key, default)


@dataclass
class SymbolGraph:
    """The nodes of a symbol file, with the consumers of each node."""

    path: Path
    nodes: list[SymbolNode]
    heads: list[int]
    consumers: dict[int, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.consumers = {node.index: [] for node in self.nodes}
        for node in self.nodes:
            for source in node.inputs:
                self.consumers[source].append(node.index)

    def node(self, index: int) -> SymbolNode:
        return self.nodes[index]

    def operators(self) -> list[SymbolNode]:
        return [n for n in self.nodes if not n.is_variable]

    def data_input(self, node: SymbolNode) -> SymbolNode:
        """The tensor an operator transforms: its first input (MXNet's operators put data first)."""
        if not node.inputs:
            raise ConversionError(f"{self.path}: {node.describe()} has no input")
        return self.nodes[node.inputs[0]]

    def variable_inputs(self, node: SymbolNode) -> list[SymbolNode]:
        """The parameter variables of an operator, in the operator's argument order."""
        return [self.nodes[i] for i in node.inputs[1:] if self.nodes[i].is_variable]

    def op_consumers(self, node: SymbolNode) -> list[SymbolNode]:
        return [self.nodes[i] for i in self.consumers[node.index]]


def read_symbol_json(path: str | Path) -> SymbolGraph:
    """Parse a ``*-symbol.json``; raise `ConversionError` naming the file on anything malformed."""
    path = Path(path)
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConversionError(f"{path}: cannot read the symbol file: {exc.strerror or exc}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConversionError(f"{path}: not an MXNet symbol file (not JSON: {exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), list) or not data["nodes"]:
        raise ConversionError(f"{path}: not an MXNet symbol file: expected a JSON object with a non-empty 'nodes' list")
    nodes = []
    for index, raw in enumerate(data["nodes"]):
        if not isinstance(raw, dict) or not isinstance(raw.get("op"), str) or not isinstance(raw.get("name"), str):
            raise ConversionError(f"{path}: node #{index} lacks a string 'op' and 'name'")
        # Files of MXNet < 0.9 keep the operator's parameters under "param" (and hints under "attr").
        attrs: dict[str, Any] = {}
        for key in ("param", "attr", "attrs"):
            value = raw.get(key) or {}
            if not isinstance(value, dict):
                raise ConversionError(f"{path}: node {raw['name']!r} has a {key!r} that is not a JSON object")
            attrs.update(value)
        raw_inputs = raw.get("inputs", [])
        if not isinstance(raw_inputs, list):
            raise ConversionError(f"{path}: node {raw['name']!r} has 'inputs' that is not a list")
        inputs = []
        for entry in raw_inputs:
            source = entry[0] if isinstance(entry, list) and entry else entry
            if not isinstance(source, int) or isinstance(source, bool) or not 0 <= source < index:
                raise ConversionError(
                    f"{path}: node {raw['name']!r} has input {entry!r}; expected the index of an earlier node"
                )
            if isinstance(entry, list) and len(entry) > 1 and entry[1] != 0:
                raise ConversionError(
                    f"{path}: node {raw['name']!r} reads output {entry[1]} of node {data['nodes'][source].get('name')!r}; "
                    "ResNet layers read only first outputs"
                )
            inputs.append(source)
        nodes.append(SymbolNode(index, raw["op"], raw["name"], {str(k): str(v) for k, v in attrs.items()}, tuple(inputs)))
    raw_heads = data.get("heads", [[len(nodes) - 1]])
    if not isinstance(raw_heads, list) or not raw_heads:
        raise ConversionError(f"{path}: 'heads' must be a non-empty list of node references")
    heads = []
    for head in raw_heads:
        index = head[0] if isinstance(head, list) and head else head
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(nodes):
            raise ConversionError(f"{path}: 'heads' entry {head!r} is not the index of a node")
        heads.append(index)
    return SymbolGraph(path, nodes, heads)


# Operators that pass their input through at inference: MXNet's own example symbols put an
# ``identity`` (op ``_copy``) on the data, float16 training symbols ``Cast`` it, training symbols
# keep ``Dropout`` and gradient stops.  The recogniser sees the graph without them.
IDENTITY_OPS = ("_copy", "identity", "BlockGrad", "stop_gradient", "Dropout", "Cast", "amp_cast")


def without_identities(graph: SymbolGraph) -> tuple[SymbolGraph, list[SymbolNode]]:
    """The graph with every pass-through operator (`IDENTITY_OPS`) spliced out, its consumers reading
    its input instead; and the nodes removed.  A Dropout that stays on at inference (``mode``
    ``"always"``) is not a pass-through and is refused."""
    removed: list[SymbolNode] = []
    new_index: dict[int, int] = {}
    nodes: list[SymbolNode] = []
    for node in graph.nodes:
        if node.op in IDENTITY_OPS:
            if node.op == "Dropout" and node.attr_str("mode", "training") == "always":
                raise ConversionError(f"{graph.path}: {node.describe()} has mode='always': it drops units at inference too")
            if not node.inputs:
                raise ConversionError(f"{graph.path}: {node.describe()} has no input")
            new_index[node.index] = new_index[node.inputs[0]]
            removed.append(node)
            continue
        new_index[node.index] = len(nodes)
        inputs = tuple(new_index[i] for i in node.inputs)
        nodes.append(SymbolNode(len(nodes), node.op, node.name, node.attrs, inputs))
    if not removed:
        return graph, []
    heads = [new_index[h] for h in graph.heads]
    return SymbolGraph(graph.path, nodes, heads), removed


__all__ = ["IDENTITY_OPS", "SymbolGraph", "SymbolNode", "read_symbol_json", "without_identities"]
