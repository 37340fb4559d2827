"""A prototxt beside a caffemodel that carries its own net: compared by meaning, as Caffe pairs them.

Caffe's ``Net::CopyTrainedLayersFrom`` copies blobs by layer name and checks only their shapes:
the prototxt given defines the graph.  A training snapshot holds the TRAIN net (``use_global_stats:
false``, fillers, ``param { lr_mult }``, a Data layer, the loss), so a textual comparison with the
deploy prototxt refuses the most common workflow.  Here each layer is reduced to what changes its
forward pass (`meaning`), with explicit defaults equal to unset fields; phase-dependent and
training-only fields never count.  A difference in meaning is a warning (the prototxt wins, as in
Caffe); the blob shapes are checked where the weights are read (layers.py), naming both shapes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from resnet_port.converters.caffe.netstate import DATA_TYPES, LOSS_TYPES, param_hw, set_field, in_test_phase
from resnet_port.converters.caffe.normalise import pool_ceil
from resnet_port.errors import ConversionError

# Layer types whose blobs are weights; a prototxt layer of these types must find them in the model.
WEIGHTED_TYPES = ("Convolution", "BatchNorm", "Scale", "InnerProduct", "BN", "Bias")



def _f32(value: float) -> float:
    return float(np.float32(value))


def meaning(layer: Any, pool_reading: str = "bvlc") -> dict[str, Any]:
    """What of ``layer`` changes its TEST forward pass, normalised (defaults filled in)."""
    t = layer.type
    if t == "Convolution":
        p = layer.convolution_param
        return {
            "num_output": int(p.num_output), "bias_term": bool(p.bias_term), "group": int(p.group), "axis": int(p.axis),
            "kernel": param_hw(p.kernel_size, set_field(p, "kernel_h"), set_field(p, "kernel_w"), 0),
            "stride": param_hw(p.stride, set_field(p, "stride_h"), set_field(p, "stride_w"), 1),
            "pad": param_hw(p.pad, set_field(p, "pad_h"), set_field(p, "pad_w"), 0),
            "dilation": param_hw(p.dilation, None, None, 1),
        }
    if t == "BatchNorm":
        p = layer.batch_norm_param
        return {"eps": _f32(p.eps), "scale_bias": bool(p.scale_bias or p.HasField("scale_filler") or p.HasField("bias_filler"))}
    if t == "BN":
        p = layer.bn_param
        return {"eps": _f32(p.eps), "var_eps": _f32(p.var_eps), "bn_mode": int(p.bn_mode), "moving_average": bool(p.moving_average)}
    if t == "Scale":
        p = layer.scale_param
        return {"axis": int(p.axis), "num_axes": int(p.num_axes), "bias_term": bool(p.bias_term), "inputs": len(layer.bottom)}
    if t == "Pooling":
        p = layer.pooling_param
        out = {"pool": int(p.pool), "global_pooling": bool(p.global_pooling), "ceil": pool_ceil(p, pool_reading)}
        if not p.global_pooling:
            out["kernel"] = param_hw(set_field(p, "kernel_size") or [], set_field(p, "kernel_h"), set_field(p, "kernel_w"), 0)
        out["stride"] = param_hw(int(p.stride), set_field(p, "stride_h"), set_field(p, "stride_w"), 1)
        out["pad"] = param_hw(int(p.pad), set_field(p, "pad_h") if p.HasField("pad_h") else None, set_field(p, "pad_w") if p.HasField("pad_w") else None, 0)
        return out
    if t == "Eltwise":
        p = layer.eltwise_param
        coeff = tuple(float(c) for c in p.coeff)
        if coeff and all(c == 1.0 for c in coeff):
            coeff = ()  # explicit ones == unset
        return {"operation": int(p.operation), "coeff": coeff}
    if t == "InnerProduct":
        p = layer.inner_product_param
        return {"num_output": int(p.num_output), "bias_term": bool(p.bias_term), "axis": int(p.axis), "transpose": bool(p.transpose)}
    if t == "ReLU":
        return {"negative_slope": _f32(layer.relu_param.negative_slope)}
    if t == "Softmax":
        return {"axis": int(layer.softmax_param.axis)}
    if t == "Flatten":
        return {"axis": int(layer.flatten_param.axis), "end_axis": int(layer.flatten_param.end_axis)}
    if t == "Reshape":
        p = layer.reshape_param
        return {"shape": tuple(p.shape.dim), "axis": int(p.axis), "num_axes": int(p.num_axes)}
    if t == "Bias":
        return {"axis": int(layer.bias_param.axis), "num_axes": int(layer.bias_param.num_axes), "inputs": len(layer.bottom)}
    return {}  # ReLU-like and pass-through layers (Dropout at TEST, Split, Sigmoid): nothing that differs


def _show(value: Any) -> str:
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return f"{value[0]}x{value[1]}" if value[0] != value[1] else str(value[0])
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def compare_nets(
    prototxt_net: Any, model_net: Any, prototxt: Path, model: Path, pool_reading: str = "bvlc"
) -> tuple[list[str], list[str]]:
    """Warnings (inference-changing differences; the prototxt wins) and the caffemodel's layers the
    prototxt does not use.  A weighted prototxt layer the caffemodel lacks is an error."""
    by_name = {layer.name: layer for layer in model_net.layer}
    # Caffe inserts Split layers where a blob feeds several layers, and Net::ToProto saves them.
    alias: dict[str, str] = {}
    for layer in model_net.layer:
        if layer.type == "Split" and len(layer.bottom) == 1:
            for top in layer.top:
                alias[top] = alias.get(layer.bottom[0], layer.bottom[0])
    warnings: list[str] = []
    for layer in prototxt_net.layer:
        if not in_test_phase(layer) or layer.type in DATA_TYPES or layer.type in LOSS_TYPES or layer.type == "Python":
            continue
        other = by_name.get(layer.name)
        if other is None:
            if layer.type in WEIGHTED_TYPES:
                raise ConversionError(f"{model}: has no layer {layer.name!r} ({layer.type}), which {prototxt} defines: missing layer")
            continue
        if other.type != layer.type:
            warnings.append(
                f"layer {layer.name!r} is {layer.type} in {prototxt.name} but {other.type} in {model.name}; the prototxt's "
                "layer is used with the caffemodel's blobs (as Caffe copies them, by name)"
            )
            continue
        for what in ("bottom", "top"):
            mine, theirs = list(getattr(layer, what)), [alias.get(b, b) for b in getattr(other, what)]
            if len(mine) != len(theirs):
                warnings.append(
                    f"layer {layer.name!r} has {what} {mine} in {prototxt.name} but {theirs} in {model.name}; the prototxt's graph is used"
                )
        mine, theirs = meaning(layer, "bvlc"), meaning(other, pool_reading)
        for key in sorted(set(mine) | set(theirs)):
            if mine.get(key) != theirs.get(key):
                warnings.append(
                    f"{prototxt.name} and {model.name} disagree on layer {layer.name!r}: {key} {_show(mine.get(key))} vs "
                    f"{_show(theirs.get(key))}; the prototxt's value is used (as in Caffe)"
                )
    used = {layer.name for layer in prototxt_net.layer}
    unused = [name for name, layer in by_name.items() if name not in used and layer.type != "Split"]
    return warnings, unused


__all__ = ["WEIGHTED_TYPES", "compare_nets", "meaning"]
