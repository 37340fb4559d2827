"""MXNet's referee: a symbol graph evaluated node by node in torch float64, with MXNet's semantics.

This is the convert-mxnet counterpart of Caffe's interpreter and of ONNX's node evaluator: it
follows the file's own wiring (every node, in the file's order, from the ``data`` variable to the
logits) and knows nothing of ResNets, of the recogniser or of the reference model, so that a
recognition or mapping mistake in the converter shows as a difference instead of being repeated.
It shares only the file readers (``symbol.read_symbol_json``, ``ndarray.read_ndarray_file``).

MXNet semantics kept here, since they are where ports go wrong:

- BatchNorm at inference uses the moving statistics; ``fix_gamma`` (default **True**, as MXNet's
  operator) means gamma = 1 whatever is stored; ``eps`` defaults to 1e-3.
- Pooling: ``pooling_convention`` ``valid`` rounds the output size down, ``full`` up (windows that
  start in the padding-extended border are computed over what they cover); ``global_pool`` pools
  the whole map; average pooling counts the padding unless ``count_include_pad`` is False.
- FullyConnected flattens its input by default (``flatten=True``).
- A loss or softmax head (``SoftmaxOutput``, ``softmax``...) is stepped over: the referee returns the
  logits, its input.

Operators are registered by name, one small function each; an operator not registered is an error
naming the node.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from resnet_port.converters.mxnet.symbol import SymbolGraph, SymbolNode, read_symbol_json
from resnet_port.errors import ConversionError

Tensor = torch.Tensor
OpFunction = Callable[[SymbolNode, list[Tensor]], Tensor]
OPERATORS: dict[str, OpFunction] = {}
# Heads that turn logits into probabilities or a loss: the referee returns their input.
HEAD_OPS = ("SoftmaxOutput", "softmax", "SoftmaxActivation", "log_softmax", "LogisticRegressionOutput", "MakeLoss")


def register(*names: str) -> Callable[[OpFunction], OpFunction]:
    def add(function: OpFunction) -> OpFunction:
        for name in names:
            OPERATORS[name] = function
        return function

    return add


def _pair(node: SymbolNode, key: str, default: int) -> tuple[int, int]:
    value = node.attr_tuple(key, (default, default))
    if len(value) == 1:
        value = value * 2
    if len(value) != 2:
        raise ConversionError(f"{node.describe()}: {key}={value} is not 2-D; the referee evaluates 2-D networks")
    return value[0], value[1]


def _layout(node: SymbolNode) -> None:
    layout = node.attr_str("layout", "NCHW")
    if layout not in ("NCHW", "None"):
        raise ConversionError(f"{node.describe()}: layout {layout}; the referee evaluates NCHW")


@register("Convolution")
def convolution(node: SymbolNode, inputs: list[Tensor]) -> Tensor:
    _layout(node)
    x, weight = inputs[0], inputs[1]
    no_bias = node.attr_bool("no_bias", False)
    bias = None if no_bias else (inputs[2] if len(inputs) > 2 else None)
    if not no_bias and bias is None:
        raise ConversionError(f"{node.describe()}: has no_bias=False but no bias input")
    kernel = _pair(node, "kernel", 1)
    if tuple(weight.shape[2:]) != kernel:
        raise ConversionError(f"{node.describe()}: weight shape {list(weight.shape)} does not match kernel {kernel}")
    return F.conv2d(
        x, weight, bias, stride=_pair(node, "stride", 1), padding=_pair(node, "pad", 0),
        dilation=_pair(node, "dilate", 1), groups=node.attr_int("num_group", 1),
    )


@register("BatchNorm", "CuDNNBatchNorm")
def batch_norm(node: SymbolNode, inputs: list[Tensor]) -> Tensor:
    if node.attr_int("axis", 1) != 1:
        raise ConversionError(f"{node.describe()}: axis={node.attrs.get('axis')}; the referee normalises axis 1")
    x, gamma, beta, mean, var = inputs
    if node.attr_bool("fix_gamma", True):
        gamma = torch.ones_like(gamma)
    eps = node.attr_float("eps", 1e-3)
    shape = (1, -1) + (1,) * (x.dim() - 2)
    scale = gamma / torch.sqrt(var + eps)
    return (x - mean.reshape(shape)) * scale.reshape(shape) + beta.reshape(shape)


@register("Activation")
def activation(node: SymbolNode, inputs: list[Tensor]) -> Tensor:
    kind = node.attr_str("act_type", "")
    x = inputs[0]
    if kind == "relu":
        return torch.clamp(x, min=0.0)
    if kind == "sigmoid":
        return torch.sigmoid(x)
    if kind == "tanh":
        return torch.tanh(x)
    if kind == "softrelu":
        return F.softplus(x)
    if kind == "softsign":
        return x / (1 + x.abs())
    raise ConversionError(f"{node.describe()}: act_type {kind!r} is not one the referee evaluates")


@register("relu")
def relu(node: SymbolNode, inputs: list[Tensor]) -> Tensor:
    return torch.clamp(inputs[0], min=0.0)


@register("LeakyReLU")
def leaky_relu(node: SymbolNode, inputs: list[Tensor]) -> Tensor:
    kind, x = node.attr_str("act_type", "leaky"), inputs[0]
    if kind == "leaky":
        return torch.where(x > 0, x, x * node.attr_float("slope", 0.25))
    if kind == "prelu":
        gamma = inputs[1].reshape((1, -1) + (1,) * (x.dim() - 2))
        return torch.where(x > 0, x, x * gamma)
    if kind == "elu":
        slope = node.attr_float("slope", 0.25)
        return torch.where(x > 0, x, slope * (torch.exp(x) - 1))
    raise ConversionError(f"{node.describe()}: LeakyReLU act_type {kind!r} is not one the referee evaluates")


def _pool_output(size: int, kernel: int, stride: int, pad: int, full: bool) -> int:
    span = size + 2 * pad - kernel
    return (math.ceil(span / stride) if full else span // stride) + 1


@register("Pooling")
def pooling(node: SymbolNode, inputs: list[Tensor]) -> Tensor:
    _layout(node)
    x = inputs[0]
    kind = node.attr_str("pool_type", "max")
    if kind not in ("max", "avg", "sum"):
        raise ConversionError(f"{node.describe()}: pool_type {kind!r} is not one the referee evaluates")
    if node.attr_bool("global_pool", False):
        if kind == "max":
            return x.amax(dim=(2, 3), keepdim=True)
        return x.mean(dim=(2, 3), keepdim=True) if kind == "avg" else x.sum(dim=(2, 3), keepdim=True)
    kernel, stride, pad = _pair(node, "kernel", 1), _pair(node, "stride", 1), _pair(node, "pad", 0)
    convention = node.attr_str("pooling_convention", "valid")
    if convention not in ("valid", "full"):
        raise ConversionError(f"{node.describe()}: pooling_convention {convention!r} is not one the referee evaluates")
    full = convention == "full"
    height, width = x.shape[2], x.shape[3]
    out_h = _pool_output(height, kernel[0], stride[0], pad[0], full)
    out_w = _pool_output(width, kernel[1], stride[1], pad[1], full)
    # The padded extent the windows need: the symmetric pad, and on the far side what a rounded-up
    # last window reaches beyond it.
    extra_h = max(0, (out_h - 1) * stride[0] + kernel[0] - (height + 2 * pad[0]))
    extra_w = max(0, (out_w - 1) * stride[1] + kernel[1] - (width + 2 * pad[1]))
    sides = (pad[1], pad[1] + extra_w, pad[0], pad[0] + extra_h)
    if kind == "max":
        padded = F.pad(x, sides, value=-math.inf)
        return F.max_pool2d(padded, kernel, stride)[:, :, :out_h, :out_w]
    sums = F.avg_pool2d(F.pad(x, sides), kernel, stride, divisor_override=1)[:, :, :out_h, :out_w]
    if kind == "sum":
        return sums
    # MXNet's divisor: the window clipped to the padded map (count_include_pad), or to the map itself.
    ones = torch.ones((1, 1, height, width), dtype=x.dtype)
    if node.attr_bool("count_include_pad", True):
        mask = F.pad(F.pad(ones, (pad[1], pad[1], pad[0], pad[0]), value=1.0), (0, extra_w, 0, extra_h))
    else:
        mask = F.pad(ones, sides)
    counts = F.avg_pool2d(mask, kernel, stride, divisor_override=1)[:, :, :out_h, :out_w]
    return sums / counts


@register("elemwise_add", "_Plus", "_plus", "broadcast_add", "_add", "ElementWiseSum", "add_n")
def add(node: SymbolNode, inputs: list[Tensor]) -> Tensor:
    total = inputs[0]
    for other in inputs[1:]:
        total = total + other
    return total


@register("elemwise_sub", "broadcast_sub", "_Minus", "_minus", "_sub")
def subtract(node: SymbolNode, inputs: list[Tensor]) -> Tensor:
    return inputs[0] - inputs[1]


@register("elemwise_mul", "broadcast_mul", "_Mul", "_mul")
def multiply(node: SymbolNode, inputs: list[Tensor]) -> Tensor:
    return inputs[0] * inputs[1]


@register("_plus_scalar", "_PlusScalar")
def plus_scalar(node: SymbolNode, inputs: list[Tensor]) -> Tensor:
    return inputs[0] + node.attr_float("scalar", 0.0)


@register("_minus_scalar", "_MinusScalar")
def minus_scalar(node: SymbolNode, inputs: list[Tensor]) -> Tensor:
    return inputs[0] - node.attr_float("scalar", 0.0)


@register("_rminus_scalar", "_RMinusScalar")
def rminus_scalar(node: SymbolNode, inputs: list[Tensor]) -> Tensor:
    return node.attr_float("scalar", 0.0) - inputs[0]


@register("_mul_scalar", "_MulScalar")
def mul_scalar(node: SymbolNode, inputs: list[Tensor]) -> Tensor:
    return inputs[0] * node.attr_float("scalar", 1.0)


@register("_div_scalar", "_DivScalar")
def div_scalar(node: SymbolNode, inputs: list[Tensor]) -> Tensor:
    return inputs[0] / node.attr_float("scalar", 1.0)


@register("Flatten", "flatten")
def flatten(node: SymbolNode, inputs: list[Tensor]) -> Tensor:
    return inputs[0].reshape(inputs[0].shape[0], -1)


@register("FullyConnected")
def fully_connected(node: SymbolNode, inputs: list[Tensor]) -> Tensor:
    x, weight = inputs[0], inputs[1]
    if node.attr_bool("flatten", True):
        x = x.reshape(x.shape[0], -1)
    no_bias = node.attr_bool("no_bias", False)
    if not no_bias and len(inputs) < 3:
        raise ConversionError(f"{node.describe()}: has no_bias=False but no bias input")
    if x.shape[-1] != weight.shape[1]:
        raise ConversionError(f"{node.describe()}: input of {x.shape[-1]} features, weight {list(weight.shape)}")
    return F.linear(x, weight, None if no_bias else inputs[2])


@register("Dropout", "_copy", "identity", "BlockGrad", "stop_gradient", "Cast")
def identity(node: SymbolNode, inputs: list[Tensor]) -> Tensor:
    if node.op == "Cast" and node.attr_str("dtype", "float32") not in ("float32", "float64", "float16"):
        raise ConversionError(f"{node.describe()}: casts to {node.attrs.get('dtype')}; the referee keeps floats")
    return inputs[0]  # Dropout is the identity at inference


def output_node(graph: SymbolGraph) -> SymbolNode:
    """The logits: the first head, or the input of a softmax / loss head."""
    node = graph.node(graph.heads[0])
    while node.op in HEAD_OPS:
        node = graph.data_input(node)
    return node


def data_variable(graph: SymbolGraph, params: dict[str, np.ndarray], needed: set[int]) -> SymbolNode:
    """The one variable the weights do not fill: the network's input."""
    free = [n for n in graph.nodes if n.is_variable and n.index in needed and n.name not in params]
    if len(free) != 1:
        names = ", ".join(n.name for n in free) or "none"
        raise ConversionError(f"{graph.path}: expected one input variable without weights (data), found {names}")
    return free[0]


def strip_prefixes(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``arg:name`` / ``aux:name`` -> ``name`` (the binding names of the symbol's variables)."""
    return {name.split(":", 1)[1] if name.startswith(("arg:", "aux:")) else name: value for name, value in params.items()}


def _aux(params: dict[str, np.ndarray], node: SymbolNode, what: str) -> Tensor:
    name = f"{node.name}_{what}"
    if name not in params:
        raise ConversionError(f"{node.describe()}: lists no {what} input and the params have no {name!r}")
    return torch.from_numpy(np.asarray(params[name], dtype=np.float64))


def run_symbol(graph: SymbolGraph, params: dict[str, np.ndarray], x: np.ndarray, output: str | None = None) -> np.ndarray:
    """Evaluate ``graph`` on ``x`` in float64; return the logits (or the node named ``output``)."""
    params = strip_prefixes(params)
    if output is None:
        target = output_node(graph)
    else:
        found = [n for n in graph.nodes if n.name == output]
        if not found:
            raise ConversionError(f"{graph.path}: no node named {output!r}")
        target = found[0]
    needed: set[int] = set()
    stack = [target.index]
    while stack:
        index = stack.pop()
        if index not in needed:
            needed.add(index)
            stack.extend(graph.node(index).inputs)
    data = data_variable(graph, params, needed)
    values: dict[int, Tensor] = {}
    with torch.no_grad():
        for node in graph.nodes:
            if node.index not in needed:
                continue
            if node.is_variable:
                array = x if node is data else params[node.name]
                values[node.index] = torch.from_numpy(np.asarray(array, dtype=np.float64))
                continue
            function = OPERATORS.get(node.op)
            if function is None:
                raise ConversionError(f"{graph.path}: {node.describe()}: operator {node.op!r} has no referee evaluation")
            inputs = [values[i] for i in node.inputs]
            if node.op in ("BatchNorm", "CuDNNBatchNorm") and len(inputs) == 3:
                # MXNet < 0.9 files list no auxiliary states: they are bound by name, NODE_moving_mean/var.
                inputs += [_aux(params, node, "moving_mean"), _aux(params, node, "moving_var")]
            values[node.index] = function(node, inputs)
            for source in node.inputs:  # free what no later needed node reads
                if all(c <= node.index or c not in needed for c in graph.consumers[source]):
                    values.pop(source, None)
    return values[target.index].numpy()


def run_symbol_files(symbol_path: str | Path, params: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    return run_symbol(read_symbol_json(symbol_path), params, x)


__all__ = ["OPERATORS", "output_node", "register", "run_symbol", "run_symbol_files", "strip_prefixes"]
