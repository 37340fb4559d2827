"""One small function per ONNX op type, turning a node into a typed layer the recogniser reads.

Each function is registered by `onnx_op` under ``("onnx", op_type)``; a duplicate registration
raises, and `parse_node` refuses an op type nobody registered, naming the type and the node.  The
functions check every attribute that changes the arithmetic (pads, strides, dilations, groups,
ceil mode, Gemm transposes, BatchNorm's old ``spatial`` flag) and either record it or refuse it: an
attribute silently ignored is a port that is silently wrong.

Conventions written out here:
- BatchNorm ``epsilon`` is read from each node (MXNet writes it as float32, so 1e-5 arrives as
  9.9999997e-06; `nice_eps` recovers the decimal the author wrote).
- Gemm ``alpha``/``beta`` are folded into the weight and bias; ``transB=0`` stores the weight as
  (in, out) and is transposed to PyTorch's (out, in).
- Identity and Dropout (inference) pass their input through (an Identity on a stored tensor is
  an alias the graph reader already followed).
- ReduceMean over the spatial axes (the dynamo exporter's AdaptiveAvgPool2d) is a global pool.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from resnet_port.converters.onnx.graph import Node, OnnxGraph
from resnet_port.errors import ConversionError

FRAMEWORK = "onnx"


@dataclass(frozen=True)
class Layer:
    """What every parsed node has: the node itself and the data tensor it reads."""

    node: Node
    data: tuple[str, ...]  # non-constant inputs, in order

    @property
    def output(self) -> str:
        return self.node.output


@dataclass(frozen=True)
class ConvLayer(Layer):
    weight: np.ndarray  # (out, in / group, kh, kw)
    bias: np.ndarray | None
    stride: tuple[int, int]
    pads: tuple[int, int, int, int]  # top, left, bottom, right
    dilation: tuple[int, int]
    group: int

    @property
    def kernel(self) -> tuple[int, int]:
        return int(self.weight.shape[2]), int(self.weight.shape[3])

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[0])

    @property
    def in_channels(self) -> int:
        return int(self.weight.shape[1]) * self.group


@dataclass(frozen=True)
class BatchNormLayer(Layer):
    scale: np.ndarray
    bias: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    eps: float
    spatial: int = 1  # 0: the pre-2020 zoo files' flag over per-channel (C,) parameters, read per channel

    @property
    def channels(self) -> int:
        return int(self.mean.shape[0])


@dataclass(frozen=True)
class ReluLayer(Layer):
    pass


@dataclass(frozen=True)
class MaxPoolLayer(Layer):
    kernel: tuple[int, int]
    stride: tuple[int, int]
    pads: tuple[int, int, int, int]
    ceil_mode: bool


@dataclass(frozen=True)
class AvgPoolLayer(Layer):
    """``kernel`` None means global average pooling; ``keepdims`` False (a ReduceMean that drops the
    spatial axes) already gives the flat (N, C) vector."""

    kernel: tuple[int, int] | None
    stride: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    keepdims: bool = True
    ceil_mode: bool = False  # sizes rounded up (the avg-down shortcut's pool); the head pool must not
    count_include_pad: bool = False


@dataclass(frozen=True)
class AddLayer(Layer):
    constant: np.ndarray | None  # a stored operand (the bias after a MatMul); None for a residual sum


@dataclass(frozen=True)
class FlattenLayer(Layer):
    """Flatten at axis 1, or a Reshape to (N, -1): both turn the pooled map into a vector."""


@dataclass(frozen=True)
class LinearLayer(Layer):
    weight: np.ndarray  # (out, in), as PyTorch stores it
    bias: np.ndarray | None
    weight_source: str
    bias_source: str | None


@dataclass(frozen=True)
class PassLayer(Layer):
    """Identity, inference Dropout: the output is the input."""


@dataclass(frozen=True)
class SoftmaxLayer(Layer):
    """A Softmax over the classes after the logits (Caffe2's zoo ResNet-50 ends with one): the
    converted model returns its input, the logits."""


OpFunction = Callable[[Node, OnnxGraph], Layer]
_REGISTRY: dict[tuple[str, str], OpFunction] = {}


def onnx_op(op_type: str) -> Callable[[OpFunction], OpFunction]:
    """Register the function that reads nodes of ``op_type``; registering a type twice is a bug."""

    def register(function: OpFunction) -> OpFunction:
        key = (FRAMEWORK, op_type)
        if key in _REGISTRY:
            raise RuntimeError(
                f"ONNX op {op_type!r} is registered twice: {_REGISTRY[key].__name__} and {function.__name__}"
            )
        _REGISTRY[key] = function
        return function

    return register


def known_op_types() -> list[str]:
    return sorted(op for framework, op in _REGISTRY if framework == FRAMEWORK)


def parse_node(node: Node, graph: OnnxGraph) -> Layer:
    """The typed layer of ``node``, or an error naming its type and the node."""
    function = _REGISTRY.get((FRAMEWORK, node.op_type))
    if function is None:
        raise ConversionError(
            f"{graph.where(node)}: op type '{node.op_type}' has no place in a ResNet "
            f"(this converter reads {', '.join(known_op_types())})"
        )
    return function(node, graph)


# -- attribute helpers --------------------------------------------------------------------------


def _int(node: Node, graph: OnnxGraph, name: str, default: int) -> int:
    value = node.attrs.get(name, default)
    if not isinstance(value, int):
        raise ConversionError(f"{graph.where(node)}: attribute {name}={value!r}, expected an integer")
    return value


def _float(node: Node, graph: OnnxGraph, name: str, default: float) -> float:
    value = node.attrs.get(name, default)
    if not isinstance(value, (int, float)) or not np.isfinite(value):
        raise ConversionError(f"{graph.where(node)}: attribute {name}={value!r}, expected a finite number")
    return float(value)


def _ints(node: Node, graph: OnnxGraph, name: str, default: list[int]) -> list[int]:
    value = node.attrs.get(name, default)
    if not isinstance(value, list) or not all(isinstance(v, int) for v in value):
        raise ConversionError(f"{graph.where(node)}: attribute {name}={value!r}, expected a list of integers")
    return value


def _pair(node: Node, graph: OnnxGraph, name: str, default: tuple[int, int]) -> tuple[int, int]:
    if name not in node.attrs:
        return default
    value = _ints(node, graph, name, [])
    if len(value) != 2:
        raise ConversionError(f"{graph.where(node)}: attribute {name}={value!r}, expected two values (2-D)")
    return int(value[0]), int(value[1])


def _pads(node: Node, graph: OnnxGraph) -> tuple[int, int, int, int]:
    auto_pad = node.attrs.get("auto_pad", "NOTSET")
    if auto_pad == "VALID":
        return (0, 0, 0, 0)
    if auto_pad not in ("NOTSET", ""):
        raise ConversionError(
            f"{graph.where(node)}: auto_pad={auto_pad} pads by the input size, which the reference "
            "layers cannot reproduce; expected explicit pads"
        )
    pads = _ints(node, graph, "pads", [0, 0, 0, 0])
    if not isinstance(pads, list) or len(pads) != 4:
        raise ConversionError(f"{graph.where(node)}: pads={pads}, expected 4 values (2-D)")
    return int(pads[0]), int(pads[1]), int(pads[2]), int(pads[3])


def _data(node: Node, graph: OnnxGraph, count: int = 1) -> tuple[str, ...]:
    names = tuple(n for n in node.inputs[:count] if n)
    for name in names:
        if name in graph.initializers:
            raise ConversionError(
                f"{graph.where(node)}: its data input '{name}' is a stored constant, expected a tensor"
            )
    if len(names) != count:
        raise ConversionError(f"{graph.where(node)}: expected {count} data input(s), found {len(names)}")
    return names


def nice_eps(value: float) -> float:
    """The shortest decimal that rounds to the same float32 (9.9999997e-06 -> 1e-05)."""
    return float(np.format_float_positional(np.float32(value), unique=True, trim="-"))


# -- the op types of a ResNet --------------------------------------------------------------------


@onnx_op("Conv")
def read_conv(node: Node, graph: OnnxGraph) -> ConvLayer:
    weight = graph.constant(node, 1, "weight", ndim=4)
    bias = graph.constant(node, 2, "bias", ndim=1) if len(node.inputs) > 2 and node.inputs[2] else None
    if bias is not None and bias.shape[0] != weight.shape[0]:
        raise ConversionError(
            f"{graph.where(node)}: bias has {bias.shape[0]} values for {weight.shape[0]} output channels"
        )
    kernel = _ints(node, graph, "kernel_shape", list(weight.shape[2:]))
    if tuple(int(k) for k in kernel) != tuple(weight.shape[2:]):
        raise ConversionError(f"{graph.where(node)}: kernel_shape={kernel} but the weight is {tuple(weight.shape)}")
    return ConvLayer(
        node,
        _data(node, graph),
        weight=weight,
        bias=bias,
        stride=_pair(node, graph, "strides", (1, 1)),
        pads=_pads(node, graph),
        dilation=_pair(node, graph, "dilations", (1, 1)),
        group=_int(node, graph, "group", 1),
    )


@onnx_op("BatchNormalization")
def read_batch_norm(node: Node, graph: OnnxGraph) -> BatchNormLayer:
    # Opsets before 9 had `spatial`; 0 means statistics per activation, (C, H, W) parameters.  The ONNX
    # zoo's first MXNet exports (pre-2020 v1 files) wrote spatial=0 by mistake (onnx/models#294) with
    # per-channel (C,) parameters, and MXNet computed per channel: (C,) parameters are read with that
    # meaning (`spatial` is kept so the converter notes it and the check runs the torch evaluator,
    # since onnxruntime refuses such a node); per-activation parameters are refused.
    spatial = _int(node, graph, "spatial", 1)
    if spatial != 1:
        shapes = [graph.initializers[n].shape for n in node.inputs[1:5] if n in graph.initializers]
        if any(len(shape) != 1 for shape in shapes):
            raise ConversionError(
                f"{graph.where(node)}: spatial=0 with parameters of shape {list(shapes[0]) if shapes else '?'} "
                "normalises per activation; the reference BatchNorm is per channel (expected (C,) parameters, as "
                "the pre-2020 ONNX zoo files carry)"
            )
    if _int(node, graph, "training_mode", 0):
        raise ConversionError(
            f"{graph.where(node)}: training_mode=1 normalises with batch statistics, expected inference"
        )
    if "is_test" in node.attrs and not _int(node, graph, "is_test", 0):  # opsets 1-6 said it the other way round
        raise ConversionError(f"{graph.where(node)}: is_test=0 normalises with batch statistics, expected inference")
    scale, bias, mean, var = (
        graph.constant(node, i, what, ndim=1) for i, what in enumerate(("scale", "bias", "mean", "var"), 1)
    )
    if not (scale.shape == bias.shape == mean.shape == var.shape):
        raise ConversionError(
            f"{graph.where(node)}: scale/bias/mean/var shapes differ: {scale.shape}, {bias.shape}, {mean.shape}, {var.shape}"
        )
    if len(node.outputs) > 1 and any(node.outputs[1:]):
        raise ConversionError(f"{graph.where(node)}: outputs running statistics (training mode), expected inference")
    return BatchNormLayer(
        node,
        _data(node, graph),
        scale,
        bias,
        mean,
        var,
        eps=nice_eps(_float(node, graph, "epsilon", 1e-5)),
        spatial=spatial,
    )


@onnx_op("Relu")
def read_relu(node: Node, graph: OnnxGraph) -> ReluLayer:
    return ReluLayer(node, _data(node, graph))


@onnx_op("MaxPool")
def read_max_pool(node: Node, graph: OnnxGraph) -> MaxPoolLayer:
    if _pair(node, graph, "dilations", (1, 1)) != (1, 1):
        raise ConversionError(f"{graph.where(node)}: dilated max pooling, expected dilations 1")
    if len(node.outputs) > 1 and any(node.outputs[1:]):
        raise ConversionError(f"{graph.where(node)}: also outputs indices, expected a plain max pool")
    return MaxPoolLayer(
        node,
        _data(node, graph),
        kernel=_pair(node, graph, "kernel_shape", (0, 0)),
        stride=_pair(node, graph, "strides", (1, 1)),
        pads=_pads(node, graph),
        ceil_mode=bool(_int(node, graph, "ceil_mode", 0)),
    )


@onnx_op("GlobalAveragePool")
def read_global_average_pool(node: Node, graph: OnnxGraph) -> AvgPoolLayer:
    return AvgPoolLayer(node, _data(node, graph), kernel=None)


@onnx_op("ReduceMean")
def read_reduce_mean(node: Node, graph: OnnxGraph) -> AvgPoolLayer:
    # torch.onnx.export(dynamo=True) writes AdaptiveAvgPool2d(1) as a mean over the spatial axes.
    # Opset 18 takes the axes as a second input, earlier opsets as an attribute.
    if len(node.inputs) > 1 and node.inputs[1]:
        axes = graph.initializers.get(node.inputs[1])
        if axes is None:
            raise ConversionError(f"{graph.where(node)}: its axes are computed in the graph, expected a constant")
        axes = [int(a) for a in np.asarray(axes).reshape(-1)]
    else:
        axes = _ints(node, graph, "axes", [])
    if sorted(a % 4 for a in axes) != [2, 3]:
        raise ConversionError(
            f"{graph.where(node)}: a mean over axes {axes}, expected the spatial axes (2, 3) of an (N, C, H, W) map"
        )
    return AvgPoolLayer(node, _data(node, graph), kernel=None, keepdims=bool(_int(node, graph, "keepdims", 1)))


@onnx_op("AveragePool")
def read_average_pool(node: Node, graph: OnnxGraph) -> AvgPoolLayer:
    # ceil_mode=1 is read, not refused: PyTorch exports the avg-down shortcut's
    # AvgPool2d(ceil_mode=True, count_include_pad=False) so; the recogniser decides where it fits.
    return AvgPoolLayer(
        node,
        _data(node, graph),
        kernel=_pair(node, graph, "kernel_shape", (0, 0)),
        stride=_pair(node, graph, "strides", (1, 1)),
        pads=_pads(node, graph),
        ceil_mode=bool(_int(node, graph, "ceil_mode", 0)),
        count_include_pad=bool(_int(node, graph, "count_include_pad", 0)),
    )


@onnx_op("Add")
def read_add(node: Node, graph: OnnxGraph) -> AddLayer:
    if len(node.inputs) != 2:
        raise ConversionError(f"{graph.where(node)}: expected two inputs, found {len(node.inputs)}")
    stored = [name for name in node.inputs if name in graph.initializers]
    if len(stored) == 2:
        raise ConversionError(f"{graph.where(node)}: adds two stored constants, expected a tensor")
    if stored:
        data = tuple(name for name in node.inputs if name not in graph.initializers)
        return AddLayer(node, data, constant=graph.initializers[stored[0]])
    return AddLayer(node, tuple(node.inputs), constant=None)


@onnx_op("Sum")
def read_sum(node: Node, graph: OnnxGraph) -> AddLayer:
    """Caffe2's and older exporters' residual sum: Sum of two tensors is Add."""
    if len(node.inputs) != 2:
        raise ConversionError(f"{graph.where(node)}: Sum of {len(node.inputs)} inputs; a residual sum adds two")
    return read_add(node, graph)


@onnx_op("Softmax")
def read_softmax(node: Node, graph: OnnxGraph) -> SoftmaxLayer:
    # The classes axis of (N, classes) logits: 1 or -1 in every opset (opsets < 13 coerce to 2-D at axis).
    axis = _int(node, graph, "axis", 1 if graph.opset < 13 else -1)
    if axis not in (1, -1):
        raise ConversionError(f"{graph.where(node)}: softmax over axis {axis}; expected the classes axis (1)")
    return SoftmaxLayer(node, _data(node, graph))


@onnx_op("Flatten")
def read_flatten(node: Node, graph: OnnxGraph) -> FlattenLayer:
    axis = _int(node, graph, "axis", 1)
    if axis != 1:
        raise ConversionError(f"{graph.where(node)}: axis={axis}, expected 1 (keep the batch axis)")
    return FlattenLayer(node, _data(node, graph))


@onnx_op("Reshape")
def read_reshape(node: Node, graph: OnnxGraph) -> FlattenLayer:
    # Opset 5+ takes the shape as a second input; opsets 1-4 as an attribute.
    if len(node.inputs) > 1:
        shape = graph.initializers.get(node.inputs[1])
        if shape is None:
            raise ConversionError(
                f"{graph.where(node)}: its target shape is computed in the graph, expected a constant"
            )
    else:
        shape = np.asarray(_ints(node, graph, "shape", []))
    shape = [int(v) for v in np.asarray(shape).reshape(-1)]
    flattens = len(shape) == 2 and (shape[1] == -1 or shape[1] > 0) and shape[0] >= -1 and shape != [-1, -1]
    if not flattens:
        raise ConversionError(f"{graph.where(node)}: reshapes to {shape}, expected (N, -1) to flatten pooled features")
    return FlattenLayer(node, _data(node, graph))


@onnx_op("Gemm")
def read_gemm(node: Node, graph: OnnxGraph) -> LinearLayer:
    if _int(node, graph, "transA", 0) != 0:
        raise ConversionError(f"{graph.where(node)}: transA=1 transposes the features, expected transA=0")
    weight = graph.constant(node, 1, "weight", ndim=2).astype(np.float64)
    # PyTorch's Linear stores (out, in), which is Gemm's B with transB=1; transB=0 stores (in, out).
    if _int(node, graph, "transB", 0) == 0:
        weight = weight.T
    weight = weight * _float(node, graph, "alpha", 1.0)
    bias = None
    if len(node.inputs) > 2 and node.inputs[2]:
        bias = graph.constant(node, 2, "bias", ndim=(1, 2)).astype(np.float64) * _float(node, graph, "beta", 1.0)
        if bias.ndim == 2:
            if bias.shape[0] != 1:
                raise ConversionError(f"{graph.where(node)}: bias of shape {bias.shape}, expected (out,) or (1, out)")
            bias = bias[0]
        if bias.shape[0] != weight.shape[0]:
            raise ConversionError(f"{graph.where(node)}: bias has {bias.shape[0]} values for {weight.shape[0]} outputs")
    return LinearLayer(
        node,
        _data(node, graph),
        weight=weight.astype(np.float32),
        bias=None if bias is None else bias.astype(np.float32),
        weight_source=node.inputs[1],
        bias_source=node.inputs[2] if bias is not None else None,
    )


@onnx_op("MatMul")
def read_mat_mul(node: Node, graph: OnnxGraph) -> LinearLayer:
    weight = graph.constant(node, 1, "weight", ndim=2)  # (in, out): features @ W
    return LinearLayer(
        node,
        _data(node, graph),
        weight=np.ascontiguousarray(weight.T),
        bias=None,
        weight_source=node.inputs[1],
        bias_source=None,
    )


@onnx_op("Cast")
def read_cast(node: Node, graph: OnnxGraph) -> PassLayer:
    """A cast to float32 passes float32 data through; any other marks a reduced-precision model."""
    to = _int(node, graph, "to", 0)
    if to == 1:  # TensorProto.FLOAT
        return PassLayer(node, _data(node, graph))
    names = {10: "float16", 16: "bfloat16", 11: "float64"}
    name = names.get(to, f"type {to}")
    raise ConversionError(
        f"{graph.where(node)}: casts to {name}: the graph computes in {name}, which a float32 port cannot match "
        "within the check; convert the float32 export"
    )


@onnx_op("Identity")
def read_identity(node: Node, graph: OnnxGraph) -> PassLayer:
    return PassLayer(node, _data(node, graph))


@onnx_op("Dropout")
def read_dropout(node: Node, graph: OnnxGraph) -> PassLayer:
    # Opset 12+ can switch dropout on with a training_mode input, opsets 1-6 with is_test=0; a ResNet
    # export never does.
    if "is_test" in node.attrs and not _int(node, graph, "is_test", 0):
        raise ConversionError(f"{graph.where(node)}: dropout with is_test=0 (training mode), expected inference")
    if len(node.inputs) > 2 and node.inputs[2]:
        mode = graph.initializers.get(node.inputs[2])
        if mode is None or bool(np.asarray(mode).reshape(-1)[0]):
            raise ConversionError(f"{graph.where(node)}: dropout in training mode, expected inference")
    return PassLayer(node, (node.inputs[0],))
