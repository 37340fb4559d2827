"""One function per Caffe layer type: a layer and its blobs -> a `Node` in PyTorch conventions.

Every convention change happens here, once, beside its comment: BatchNorm's stored scale factor,
the separate Scale layer, eps from ``batch_norm_param``, pooling's rounding, legacy blob shapes.
Each function checks its blobs (count and shape) against the layer's own parameters and records
where each tensor came from, so that the report can account for every source tensor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from resnet_port.converters.caffe.netstate import DATA_TYPES, LOSS_TYPES
from resnet_port.converters.caffe.registry import lookup, register
from resnet_port.errors import ConversionError

FRAMEWORK = "caffe"
CAFFE_BN_EPS = 1e-5  # caffe.proto BatchNormParameter.eps default


@dataclass
class Node:
    """A Caffe layer, read: its kind, geometry in ``attrs``, its tensors and their sources."""

    name: str
    type: str
    bottoms: list[str]
    tops: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # tensor key -> "layer.blobs[i]" description
    consumed: list[str] = field(default_factory=list)  # every "layer.blobs[i]" this node accounts for


def blob_id(layer: str, index: int) -> str:
    return f"{layer}.blobs[{index}]"


def _blob(layer: Any, blobs: list[np.ndarray], index: int, shape: tuple[int, ...], where: str) -> np.ndarray:
    """Blob ``index`` reshaped to ``shape``: exact, or a legacy 4-D shape that pads it with leading 1s
    (Caffe's ``Blob::ShapeEquals`` accepts those from pre-2015 files)."""
    array = blobs[index]
    if tuple(array.shape) == tuple(shape):
        return array
    padded = (1,) * (4 - len(shape)) + tuple(shape) if len(shape) <= 4 else None
    if array.ndim == 4 and padded == tuple(array.shape):
        return array.reshape(shape)
    raise ConversionError(
        f"{where}: layer {layer.name!r} blob {index} has shape {list(array.shape)}, expected {list(shape)}"
    )


def _expect_blobs(layer: Any, blobs: list[np.ndarray], counts: tuple[int, ...], where: str) -> None:
    if len(blobs) not in counts:
        expected = " or ".join(str(c) for c in counts)
        raise ConversionError(f"{where}: layer {layer.name!r} ({layer.type}) has {len(blobs)} blobs, expected {expected}")


def _pair(values: Any, single_h: int | None, single_w: int | None, default: int | None, what: str, layer: Any, where: str) -> tuple[int, int]:
    """Caffe's ``kernel_size`` / ``kernel_h``+``kernel_w`` convention (repeated: one value or one per axis)."""
    if single_h is not None or single_w is not None:
        if single_h is None or single_w is None:
            raise ConversionError(f"{where}: layer {layer.name!r} sets only one of {what}_h / {what}_w")
        return int(single_h), int(single_w)
    values = [int(v) for v in values]
    if not values:
        if default is None:
            raise ConversionError(f"{where}: layer {layer.name!r} sets no {what}")
        return default, default
    if len(values) == 1:
        return values[0], values[0]
    if len(values) == 2:
        return values[0], values[1]
    raise ConversionError(f"{where}: layer {layer.name!r} has {len(values)} {what} values; only 2-D is supported")


def _opt(msg: Any, name: str) -> int | None:
    return int(getattr(msg, name)) if msg.HasField(name) else None


def _node(layer: Any, **kwargs: Any) -> Node:
    return Node(layer.name, layer.type, list(layer.bottom), list(layer.top), **kwargs)


def _take(node: Node, key: str, array: np.ndarray, source: str) -> None:
    node.tensors[key] = array
    node.sources[key] = source


@register(FRAMEWORK, "Input")
def input_layer(layer: Any, blobs: list[np.ndarray], where: str) -> Node:
    shapes = [tuple(int(d) for d in s.dim) for s in layer.input_param.shape]
    return _node(layer, attrs={"shapes": shapes, "input": True})


def data_layer(layer: Any, blobs: list[np.ndarray], where: str) -> Node:
    """A training data layer (a train_val prototxt, or the net a solver snapshot saved): its first
    top is the image blob.  Its size is the transform's crop when one is set."""
    crop = int(layer.transform_param.crop_size) if layer.HasField("transform_param") else 0
    shapes = [(1, 3, crop, crop)] if crop else []
    return _node(layer, attrs={"shapes": shapes, "input": True})


def loss_layer(layer: Any, blobs: list[np.ndarray], where: str) -> Node:
    """A loss or accuracy head on the logits: nothing to convert (the reference model ends at fc)."""
    _expect_blobs(layer, blobs, (0,), where)
    return _node(layer, attrs={"terminal": True})


@register(FRAMEWORK, "Convolution")
def convolution(layer: Any, blobs: list[np.ndarray], where: str) -> Node:
    p = layer.convolution_param
    _expect_blobs(layer, blobs, (2,) if p.bias_term else (1,), where)
    kernel = _pair(p.kernel_size, _opt(p, "kernel_h"), _opt(p, "kernel_w"), None, "kernel", layer, where)
    stride = _pair(p.stride, _opt(p, "stride_h"), _opt(p, "stride_w"), 1, "stride", layer, where)
    pad = _pair(p.pad, _opt(p, "pad_h") if p.HasField("pad_h") else None, _opt(p, "pad_w") if p.HasField("pad_w") else None, 0, "pad", layer, where)
    dilation = _pair(p.dilation, None, None, 1, "dilation", layer, where)
    out = int(p.num_output)
    weight = blobs[0]
    if weight.ndim != 4:
        raise ConversionError(f"{where}: layer {layer.name!r} blob 0 has shape {list(weight.shape)}, expected 4 axes (O, C, kh, kw)")
    # Only the input channels are not known from the layer itself; the graph checks them.
    in_per_group = weight.shape[1]
    node = _node(
        layer,
        attrs={"out": out, "kernel": kernel, "stride": stride, "pad": pad, "dilation": dilation, "group": int(p.group)},
        consumed=[blob_id(layer.name, i) for i in range(len(blobs))],
    )
    _take(node, "weight", _blob(layer, blobs, 0, (out, in_per_group, *kernel), where), blob_id(layer.name, 0))
    if p.bias_term:
        _take(node, "bias", _blob(layer, blobs, 1, (out,), where), blob_id(layer.name, 1))
    return node


@register(FRAMEWORK, "BatchNorm")
def batch_norm(layer: Any, blobs: list[np.ndarray], where: str) -> Node:
    _expect_blobs(layer, blobs, (3,), where)
    mean_s, var_s = blobs[0].reshape(-1), blobs[1].reshape(-1)
    if mean_s.shape != var_s.shape:
        raise ConversionError(
            f"{where}: layer {layer.name!r} mean blob has {mean_s.size} values, variance blob {var_s.size}"
        )
    factor = _blob(layer, blobs, 2, (1,), where)
    # Caffe stores running sums: blobs [mean * s, var * s, s].  It multiplies by 1/s in float32,
    # and s == 0 means "no statistics yet": the factor is then 0, not inf (batch_norm_layer.cpp).
    s = np.float32(factor[0])
    scale = np.float32(0.0) if s == 0 else np.float32(1.0) / s
    p = layer.batch_norm_param
    # eps as Caffe holds it (a float32); written back as its shortest decimal so 1e-5 stays 1e-5.
    eps = float(str(np.float32(p.eps))) if p.HasField("eps") else CAFFE_BN_EPS
    node = _node(layer, attrs={"eps": eps, "channels": int(mean_s.size)}, consumed=[blob_id(layer.name, i) for i in range(3)])
    factor_id = blob_id(layer.name, 2)  # (layer names are the file's text: never a format template)
    _take(node, "running_mean", (mean_s.astype(np.float32) * scale).astype(np.float32), f"{blob_id(layer.name, 0)} / {factor_id}")
    _take(node, "running_var", (var_s.astype(np.float32) * scale).astype(np.float32), f"{blob_id(layer.name, 1)} / {factor_id}")
    return node


@register(FRAMEWORK, "Scale")
def scale(layer: Any, blobs: list[np.ndarray], where: str) -> Node:
    p = layer.scale_param
    if len(layer.bottom) != 1:
        raise ConversionError(f"{where}: layer {layer.name!r} scales by a second input; only a learned Scale maps")
    if p.axis != 1 or p.num_axes != 1:
        raise ConversionError(f"{where}: layer {layer.name!r} has axis {p.axis}, num_axes {p.num_axes}; expected 1, 1 (per channel)")
    _expect_blobs(layer, blobs, (2,) if p.bias_term else (1,), where)
    channels = blobs[0].size
    node = _node(layer, attrs={"channels": int(channels)}, consumed=[blob_id(layer.name, i) for i in range(len(blobs))])
    _take(node, "weight", _blob(layer, blobs, 0, (channels,), where), blob_id(layer.name, 0))
    if p.bias_term:
        _take(node, "bias", _blob(layer, blobs, 1, (channels,), where), blob_id(layer.name, 1))
    return node


@register(FRAMEWORK, "Bias")
def bias(layer: Any, blobs: list[np.ndarray], where: str) -> Node:
    """A learned per-channel bias (BiasLayer, one bottom): what a Scale's bias_term adds, written as
    its own layer by some converters after a bias-less Scale."""
    p = layer.bias_param
    if len(layer.bottom) != 1:
        raise ConversionError(f"{where}: layer {layer.name!r} adds a second input; only a learned Bias maps")
    if p.axis != 1 or p.num_axes != 1:
        raise ConversionError(f"{where}: layer {layer.name!r} has axis {p.axis}, num_axes {p.num_axes}; expected 1, 1 (per channel)")
    _expect_blobs(layer, blobs, (1,), where)
    channels = blobs[0].size
    node = _node(layer, attrs={"channels": int(channels)}, consumed=[blob_id(layer.name, 0)])
    _take(node, "bias", _blob(layer, blobs, 0, (channels,), where), blob_id(layer.name, 0))
    return node


@register(FRAMEWORK, "ReLU")
def relu(layer: Any, blobs: list[np.ndarray], where: str) -> Node:
    _expect_blobs(layer, blobs, (0,), where)
    return _node(layer, attrs={"negative_slope": float(layer.relu_param.negative_slope)})


@register(FRAMEWORK, "Pooling")
def pooling(layer: Any, blobs: list[np.ndarray], where: str) -> Node:
    p = layer.pooling_param
    method = {0: "max", 1: "ave", 2: "stochastic"}[p.pool]
    attrs: dict[str, Any] = {"method": method, "global": bool(p.global_pooling)}
    if not p.global_pooling:
        attrs["kernel"] = _pair([p.kernel_size] if p.HasField("kernel_size") else [], _opt(p, "kernel_h"), _opt(p, "kernel_w"), None, "kernel", layer, where)
    attrs["stride"] = _pair([p.stride], _opt(p, "stride_h"), _opt(p, "stride_w"), 1, "stride", layer, where)
    attrs["pad"] = _pair([p.pad], _opt(p, "pad_h") if p.HasField("pad_h") else None, _opt(p, "pad_w") if p.HasField("pad_w") else None, 0, "pad", layer, where)
    # Caffe rounds output sizes up unless told otherwise (round_mode, BVLC 2018+).
    attrs["ceil"] = p.round_mode == 0
    return _node(layer, attrs=attrs)


@register(FRAMEWORK, "Eltwise")
def eltwise(layer: Any, blobs: list[np.ndarray], where: str) -> Node:
    p = layer.eltwise_param
    operation = {0: "prod", 1: "sum", 2: "max"}[p.operation]
    return _node(layer, attrs={"operation": operation, "coeff": [float(c) for c in p.coeff]})


@register(FRAMEWORK, "InnerProduct")
def inner_product(layer: Any, blobs: list[np.ndarray], where: str) -> Node:
    p = layer.inner_product_param
    _expect_blobs(layer, blobs, (2,) if p.bias_term else (1,), where)
    out = int(p.num_output)
    weight = blobs[0]
    # The input count is the weight's last axis (first when transposed), so that a weight made for
    # another num_output is named with both shapes rather than divided into a wrong count.
    if weight.ndim >= 2:
        inputs = int(weight.shape[-2] if p.transpose else weight.shape[-1])
    else:
        inputs = weight.size // out if out else 0
    if p.transpose:
        weight = _blob(layer, blobs, 0, (inputs, out), where).T  # Caffe's transposed storage
    else:
        weight = _blob(layer, blobs, 0, (out, inputs), where)
    node = _node(layer, attrs={"out": out, "in": inputs, "axis": int(p.axis)}, consumed=[blob_id(layer.name, i) for i in range(len(blobs))])
    _take(node, "weight", weight, blob_id(layer.name, 0))
    if p.bias_term:
        _take(node, "bias", _blob(layer, blobs, 1, (out,), where), blob_id(layer.name, 1))
    return node


@register(FRAMEWORK, "Softmax")
def softmax(layer: Any, blobs: list[np.ndarray], where: str) -> Node:
    return _node(layer, attrs={"axis": int(layer.softmax_param.axis)})


@register(FRAMEWORK, "Dropout")
def dropout(layer: Any, blobs: list[np.ndarray], where: str) -> Node:
    return _node(layer)  # the identity at test time (Caffe scales during training)


@register(FRAMEWORK, "Split")
def split(layer: Any, blobs: list[np.ndarray], where: str) -> Node:
    return _node(layer)  # copies its bottom to every top


for _type in DATA_TYPES[1:]:
    register(FRAMEWORK, _type)(data_layer)
for _type in LOSS_TYPES:
    register(FRAMEWORK, _type)(loss_layer)


def read_layer(layer: Any, blobs: list[np.ndarray], where: str) -> Node:
    fn: Callable[[Any, list[np.ndarray], str], Node] = lookup(FRAMEWORK, layer.type, layer.name, where)
    return fn(layer, blobs, where)


__all__ = ["CAFFE_BN_EPS", "FRAMEWORK", "Node", "blob_id", "read_layer"]
