"""Read an ONNX file into a small, checked view: nodes in file order, initializers as arrays.

The `onnx` package parses the protobuf; everything after that works on this view, so that the
recogniser never touches protobuf objects and every error can name the file and the node.  Nodes
exported by MXNet often have no name, so a node is labelled by its index, op type, and first
output tensor as well.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from resnet_port.errors import ConversionError

INSTALL_HINT = "pip install 'resnet-port[onnx]' (or: pip install onnx)"
FLOAT_DTYPES = (np.float16, np.float32, np.float64)


def import_onnx():
    """The `onnx` module, or an error that says how to install it (the converter's only extra need)."""
    try:
        import onnx
        import onnx.numpy_helper  # noqa: F401 - a broken install fails here, not halfway through
    except ImportError as exc:
        raise ConversionError(
            f"reading ONNX files needs the onnx package, which is not installed: {INSTALL_HINT}"
        ) from exc
    return onnx


@dataclass(frozen=True)
class Node:
    """One ONNX node, reduced to what the converter reads."""

    index: int
    name: str
    op_type: str
    domain: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def label(self) -> str:
        """How error messages name the node: index, type, name (or output when unnamed)."""
        shown = f"'{self.name}'" if self.name else f"(unnamed, output '{self.outputs[0] if self.outputs else '?'}')"
        return f"node #{self.index} {self.op_type} {shown}"

    @property
    def output(self) -> str:
        return self.outputs[0]


@dataclass
class OnnxGraph:
    """The parsed file: nodes, initializers, the single data input and the single output."""

    path: Path
    nodes: list[Node]
    initializers: dict[str, np.ndarray]
    input_name: str
    input_shape: tuple[int | str, ...]
    output_name: str
    opset: int
    ir_version: int
    producer: str
    # Identity node output -> the stored tensor it passes on (PyTorch's exporter puts Identity nodes on
    # initializers it deduplicated); such a node is no layer, its output is the same stored value.
    aliases: dict[str, str] = field(default_factory=dict)
    external_files: list[Path] = field(default_factory=list)  # the weight files beside it (ONNX external data)

    def source_name(self, name: str) -> str:
        """The initializer a (possibly aliased) stored tensor name stands for, as the report names it."""
        while name in self.aliases:
            name = self.aliases[name]
        return name

    def where(self, node: Node | None = None) -> str:
        return f"{self.path}: {node.label}" if node is not None else str(self.path)

    def constant(self, node: Node, position: int, what: str, ndim: int | tuple[int, ...] | None = None) -> np.ndarray:
        """The node's input at ``position`` as a float array, which must be an initializer."""
        if position >= len(node.inputs) or not node.inputs[position]:
            raise ConversionError(f"{self.where(node)}: has no {what} (input {position})")
        name = node.inputs[position]
        if name not in self.initializers:
            raise ConversionError(
                f"{self.where(node)}: its {what} '{name}' is computed in the graph, expected a stored initializer"
            )
        array = self.initializers[name]
        if array.dtype.kind != "f":
            raise ConversionError(f"{self.where(node)}: {what} '{name}' has dtype {array.dtype}, expected floats")
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if allowed is not None and array.ndim not in allowed:
            raise ConversionError(
                f"{self.where(node)}: {what} '{name}' has shape {array.shape}, expected {' or '.join(map(str, allowed))} dims"
            )
        return array


def _attribute_values(onnx, node_proto) -> dict[str, Any]:
    values = {}
    for attribute in node_proto.attribute:
        value = onnx.helper.get_attribute_value(attribute)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        elif isinstance(value, list):
            value = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in value]
        values[attribute.name] = value
    return values


def _initializer_array(onnx, path: Path, tensor) -> np.ndarray:
    from onnx import numpy_helper

    try:
        array = numpy_helper.to_array(tensor, base_dir=str(path.parent))
    except Exception as exc:  # the onnx package raises several types for malformed tensors
        raise ConversionError(f"{path}: initializer '{tensor.name}' cannot be read: {exc}") from exc
    if array.dtype.type in FLOAT_DTYPES:
        return np.ascontiguousarray(array)
    if array.dtype.kind in "iu":  # shapes (Reshape), axes: kept as integers
        return np.ascontiguousarray(array)
    raise ConversionError(
        f"{path}: initializer '{tensor.name}' has dtype {array.dtype}, expected a float or integer tensor"
    )


def _constant_value(onnx, path: Path, node: Node, proto) -> np.ndarray:
    for attribute in proto.attribute:
        if attribute.name == "value":
            return _initializer_array(onnx, path, attribute.t)
        if attribute.name in ("value_ints", "value_floats"):
            return np.asarray(onnx.helper.get_attribute_value(attribute))
        if attribute.name in ("value_int", "value_float"):
            return np.asarray(onnx.helper.get_attribute_value(attribute))
    raise ConversionError(f"{path}: {node.label}: a Constant without a tensor, int or float value")


def _shape_of(value_info) -> tuple[int | str, ...]:
    dims = value_info.type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims)


def _text(value: str | bytes) -> str:
    """A name as text: protobuf hands back bytes where a damaged file's string is not UTF-8."""
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


def read_graph(path: str | Path) -> OnnxGraph:
    """Parse ``path`` and check the outline every image classifier here has: one input, one output."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: no such file")
    onnx = import_onnx()
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError, UnicodeDecodeError) as exc:
        raise ConversionError(f"{path}: not a readable ONNX model (truncated or not ONNX?): {exc}") from exc
    except Exception as exc:  # protobuf raises its own internal types on some garbage
        raise ConversionError(f"{path}: not a readable ONNX model (truncated or not ONNX?): {exc}") from exc
    graph = model.graph
    if not model.HasField("graph") or len(graph.node) == 0:
        raise ConversionError(f"{path}: holds no ONNX graph (empty, truncated, or not an ONNX model file)")

    external = _external_files(onnx, model, path)
    onnx_data = _load_external(onnx, model, path)
    initializers = {_text(t.name): _initializer_array(onnx, path, t) for t in onnx_data.graph.initializer}
    nodes = []
    aliases: dict[str, str] = {}
    for i, proto in enumerate(graph.node):
        node = Node(
            i,
            _text(proto.name),
            proto.op_type,
            proto.domain,
            tuple(_text(name) for name in proto.input),
            tuple(_text(name) for name in proto.output),
            _attribute_values(onnx, proto),
        )
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            # Some exporters give Reshape its shape through a Constant node: a stored value, not a layer.
            initializers[node.output] = _constant_value(onnx, path, node, proto)
            continue
        if node.op_type == "Identity" and node.domain in ("", "ai.onnx") and len(node.inputs) == 1 and node.inputs[0] in initializers:
            # torch.onnx.export (TorchScript) shares equal folded weights through Identity nodes: a
            # stored value under a second name, followed here rather than treated as a layer.
            if len(node.outputs) != 1:
                raise ConversionError(f"{path}: {node.label}: an Identity with {len(node.outputs)} outputs")
            initializers[node.output] = initializers[node.inputs[0]]
            aliases[node.output] = node.inputs[0]
            continue
        nodes.append(node)
    for node in nodes:
        if node.domain not in ("", "ai.onnx"):
            raise ConversionError(f"{path}: {node.label}: op domain '{node.domain}' is not the standard ONNX domain")
        if not node.outputs:
            raise ConversionError(f"{path}: {node.label}: has no output")

    # Older exporters list every initializer among the graph inputs as well; the data input is the rest.
    data_inputs = [v for v in graph.input if _text(v.name) not in initializers]
    if len(data_inputs) != 1:
        names = ", ".join(v.name for v in data_inputs) or "none"
        raise ConversionError(f"{path}: expected one image input, the graph takes {len(data_inputs)} ({names})")
    if len(graph.output) != 1:
        names = ", ".join(v.name for v in graph.output) or "none"
        raise ConversionError(f"{path}: expected one output (the logits), the graph has {len(graph.output)} ({names})")
    input_shape = _shape_of(data_inputs[0])
    elem_type = data_inputs[0].type.tensor_type.elem_type
    if elem_type != onnx.TensorProto.FLOAT:
        type_name = (
            onnx.TensorProto.DataType.Name(elem_type) if elem_type in onnx.TensorProto.DataType.values() else elem_type
        )
        raise ConversionError(
            f"{path}: input '{data_inputs[0].name}' is {type_name}, expected FLOAT (float32 images, as the ONNX zoo's)"
        )
    if len(input_shape) != 4:
        raise ConversionError(
            f"{path}: input '{data_inputs[0].name}' has shape {list(input_shape)}, expected (N, C, H, W)"
        )
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    return OnnxGraph(
        path=path,
        nodes=nodes,
        initializers=initializers,
        input_name=_text(data_inputs[0].name),
        input_shape=input_shape,
        output_name=_text(graph.output[0].name),
        opset=int(opset),
        ir_version=int(model.ir_version),
        producer=f"{model.producer_name} {model.producer_version}".strip(),
        aliases=aliases,
        external_files=external,
    )


def _external_files(onnx, model, path: Path) -> list[Path]:
    """The files the initializers' external data name, inside the model's folder (as ONNX requires),
    in first-use order: they hold the weights, so the checkpoint records their digests too."""
    folder = path.parent.resolve()
    found: list[Path] = []
    for tensor in model.graph.initializer:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((_text(e.value) for e in tensor.external_data if e.key == "location"), None)
        if not location:
            continue
        candidate = (folder / location).resolve()
        if candidate.is_relative_to(folder) and candidate.is_file() and candidate not in found:
            found.append(candidate)
    return found


def _load_external(onnx, model, path: Path):
    """Weights stored beside the file (ONNX external data) are read from the file's folder."""
    uses_external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    if not uses_external:
        return model
    try:
        from onnx.external_data_helper import load_external_data_for_model

        load_external_data_for_model(model, str(path.parent))
    except Exception as exc:
        raise ConversionError(f"{path}: its external weight data cannot be read from {path.parent}: {exc}") from exc
    return model
