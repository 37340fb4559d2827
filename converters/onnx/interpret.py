"""Run an ONNX graph node by node in torch (float64): the fallback referee when onnxruntime is absent.

It follows the file's own wiring, node after node, and never looks at what the recogniser found,
so a block split wrongly, a tensor mapped to the wrong layer or a lost attribute shows up as a
difference from the converted model.  It reads nodes with the same op functions as the converter
(`converters.onnx.ops`), so it cannot catch a misread attribute there: that is onnxruntime's job,
which is why onnxruntime stays the first referee.  One small function per layer type.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from resnet_port.converters.onnx.graph import OnnxGraph
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
from resnet_port.errors import ConversionError


def _t(array: np.ndarray | None) -> torch.Tensor | None:
    return None if array is None else torch.from_numpy(np.asarray(array, dtype=np.float64))


def _padded(x: torch.Tensor, pads: tuple[int, int, int, int], value: float = 0.0) -> tuple[torch.Tensor, tuple]:
    """Symmetric pads go to the op; uneven ones are applied here (ONNX: top, left, bottom, right)."""
    top, left, bottom, right = pads
    if top == bottom and left == right:
        return x, (top, left)
    return F.pad(x, (left, right, top, bottom), value=value), (0, 0)


def _conv(layer: ConvLayer, x: torch.Tensor) -> torch.Tensor:
    x, padding = _padded(x, layer.pads)
    return F.conv2d(x, _t(layer.weight), _t(layer.bias), layer.stride, padding, layer.dilation, layer.group)


def _batch_norm(layer: BatchNormLayer, x: torch.Tensor) -> torch.Tensor:
    # Per channel, also for spatial=0 over (C,) parameters (the pre-2020 zoo files): MXNet's meaning.
    shape = (1, -1, 1, 1)
    scale = _t(layer.scale).view(shape) / torch.sqrt(_t(layer.var).view(shape) + layer.eps)
    return (x - _t(layer.mean).view(shape)) * scale + _t(layer.bias).view(shape)


def _relu(layer: ReluLayer, x: torch.Tensor) -> torch.Tensor:
    return torch.relu(x)


def _max_pool(layer: MaxPoolLayer, x: torch.Tensor) -> torch.Tensor:
    x, padding = _padded(x, layer.pads, value=float("-inf"))
    return F.max_pool2d(x, layer.kernel, layer.stride, padding, ceil_mode=layer.ceil_mode)


def _avg_pool(layer: AvgPoolLayer, x: torch.Tensor) -> torch.Tensor:
    if layer.kernel is None:
        return x.mean(dim=(2, 3), keepdim=layer.keepdims)
    if layer.count_include_pad and any(layer.pads):
        # ONNX count_include_pad=1: the zero padding counts in every window's divisor
        x, padding = F.pad(x, (layer.pads[1], layer.pads[3], layer.pads[0], layer.pads[2])), (0, 0)
    else:
        x, padding = _padded(x, layer.pads)
    # ceil_mode: a last, partial window is divided by the cells it covers (as onnxruntime and torch do)
    return F.avg_pool2d(x, layer.kernel, layer.stride, padding, ceil_mode=layer.ceil_mode, count_include_pad=False)


def _add(layer: AddLayer, *inputs: torch.Tensor) -> torch.Tensor:
    if layer.constant is not None:
        return inputs[0] + _t(layer.constant)
    return inputs[0] + inputs[1]


def _flatten(layer: FlattenLayer, x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1)


def _linear(layer: LinearLayer, x: torch.Tensor) -> torch.Tensor:
    return F.linear(x, _t(layer.weight), _t(layer.bias))


def _pass(layer: PassLayer, x: torch.Tensor) -> torch.Tensor:
    return x


def _softmax(layer: SoftmaxLayer, x: torch.Tensor) -> torch.Tensor:
    return torch.softmax(x, dim=-1)


EVALUATORS: dict[type, Callable[..., torch.Tensor]] = {
    ConvLayer: _conv,
    BatchNormLayer: _batch_norm,
    ReluLayer: _relu,
    MaxPoolLayer: _max_pool,
    AvgPoolLayer: _avg_pool,
    AddLayer: _add,
    FlattenLayer: _flatten,
    LinearLayer: _linear,
    PassLayer: _pass,
    SoftmaxLayer: _softmax,
}


def run_graph(graph: OnnxGraph, x: np.ndarray, output: str | None = None) -> np.ndarray:
    """The graph's output (or the tensor ``output``) on ``x``, evaluated in float64 in the file's
    node order."""
    output = output or graph.output_name
    values: dict[str, torch.Tensor] = {graph.input_name: torch.from_numpy(np.asarray(x, dtype=np.float64))}
    with torch.inference_mode():
        for node in graph.nodes:
            layer: Layer = parse_node(node, graph)
            missing = [name for name in layer.data if name not in values]
            if missing:
                raise ConversionError(f"{graph.where(node)}: reads '{missing[0]}' before anything computes it")
            values[layer.output] = EVALUATORS[type(layer)](layer, *(values[name] for name in layer.data))
    if output not in values:
        raise ConversionError(f"{graph.path}: nothing computes the graph output '{output}'")
    return values[output].numpy()
