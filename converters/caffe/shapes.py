"""Blob shapes through a Caffe net, with Caffe's arithmetic: does an input size fit the weights?

A TEST net may declare an input its weights cannot take (``crop_size: 256`` before a fixed 7x7
pool5: the classifier would see 2048 x 2 x 2 inputs where its weights take 2048).  Caffe itself
stops there; so would the interpreter, with a traceback.  `first_misfit` names the layer and
both shapes; `fitting_size` finds the input size nearest the declared one that fits, for
``--verify`` to run at.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from resnet_port.converters.caffe.interpreter import caffe_pooled_size
from resnet_port.converters.caffe.netstate import DATA_TYPES, LOSS_TYPES, param_hw, set_field
from resnet_port.converters.caffe.normalise import pool_ceil
from resnet_port.errors import ConversionError

Shape = tuple[int, ...]
MAX_SEARCH = 1024



def _show(shape: Shape) -> str:
    return " x ".join(str(d) for d in shape)


def first_misfit(net: Any, blobs: Mapping[str, Sequence[np.ndarray]], input_shape: Shape) -> str | None:
    """None when ``input_shape`` (N, C, H, W) runs through ``net`` (already TEST-phase, cleaned);
    else one line naming the first layer whose input does not fit, and both shapes."""
    shapes: dict[str, Shape] = {}
    for layer in net.layer:
        if layer.type == "Input" or layer.type in DATA_TYPES:
            shapes[layer.top[0]] = tuple(input_shape[1:])
            continue
        if layer.type in LOSS_TYPES:
            continue
        ins = [shapes.get(b) for b in layer.bottom]
        if any(s is None for s in ins) or not ins:
            for top in layer.top:
                shapes.pop(top, None)
            continue
        x = ins[0]
        out: Shape | None = x
        t = layer.type
        if t == "Convolution" and len(x) == 3:
            p = layer.convolution_param
            kh, kw = param_hw(p.kernel_size, set_field(p, "kernel_h"), set_field(p, "kernel_w"), 1)
            sh, sw = param_hw(p.stride, set_field(p, "stride_h"), set_field(p, "stride_w"), 1)
            ph, pw = param_hw(p.pad, set_field(p, "pad_h") if p.HasField("pad_h") else None, set_field(p, "pad_w") if p.HasField("pad_w") else None, 0)
            dh, dw = param_hw(p.dilation, None, None, 1)
            weight = blobs.get(layer.name, [None])[0]
            if weight is not None and np.ndim(weight) == 4 and weight.shape[1] * int(p.group) != x[0]:
                return (
                    f"Convolution {layer.name!r} takes {weight.shape[1] * int(p.group)} input channels (weights "
                    f"{list(weight.shape)}), its input is {_show(x)}"
                )
            oh = (x[1] + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
            ow = (x[2] + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
            if oh < 1 or ow < 1:
                return f"Convolution {layer.name!r}: its {kh}x{kw} kernel does not fit its input {_show(x)}"
            out = (int(p.num_output), oh, ow)
        elif t == "Pooling" and len(x) == 3:
            p = layer.pooling_param
            if p.global_pooling:
                out = (x[0], 1, 1)
            else:
                kh, kw = param_hw(set_field(p, "kernel_size") or [], set_field(p, "kernel_h"), set_field(p, "kernel_w"), 1)
                sh, sw = param_hw(int(p.stride), set_field(p, "stride_h"), set_field(p, "stride_w"), 1)
                ph, pw = param_hw(int(p.pad), set_field(p, "pad_h") if p.HasField("pad_h") else None, set_field(p, "pad_w") if p.HasField("pad_w") else None, 0)
                if x[1] + 2 * ph < kh or x[2] + 2 * pw < kw:
                    return f"Pooling {layer.name!r}: its {kh}x{kw} window does not fit its input {_show(x)}"
                ceil = pool_ceil(p)
                out = (x[0], caffe_pooled_size(x[1], kh, sh, ph, ceil), caffe_pooled_size(x[2], kw, sw, pw, ceil))
        elif t == "InnerProduct":
            p = layer.inner_product_param
            inputs = int(np.prod(x[int(p.axis) - 1 :])) if p.axis >= 1 else int(np.prod(x))
            weight = blobs.get(layer.name, [None])[0]
            if weight is not None and p.num_output:
                takes = int(np.size(weight)) // int(p.num_output)
                if takes != inputs:
                    return (
                        f"InnerProduct {layer.name!r} would see {_show(x)} = {inputs} inputs; its weights "
                        f"{list(np.shape(weight))} take {takes}"
                    )
            out = (int(p.num_output),)
        elif t == "Eltwise":
            if any(s != x for s in ins[1:]):
                return f"Eltwise {layer.name!r} adds blobs of shapes {' and '.join(_show(s) for s in ins)}"
        elif t in ("Flatten", "Reshape"):
            out = (int(np.prod(x)),)
        for top in layer.top:
            shapes[top] = out
    return None


def fitting_size(net: Any, blobs: Mapping[str, Sequence[np.ndarray]], channels: int, declared: tuple[int, int] | None) -> tuple[tuple[int, int], str | None]:
    """The declared (H, W) when it fits, else the nearest square size that does, and the misfit line.

    Raises a one-line `ConversionError` when no size up to 1024 fits.
    """
    start = declared or (224, 224)
    problem = first_misfit(net, blobs, (1, channels, *start))
    if problem is None:
        return start, None
    side = min(start)
    for distance in range(1, MAX_SEARCH):
        for candidate in (side - distance, side + distance):
            if 1 <= candidate <= MAX_SEARCH and first_misfit(net, blobs, (1, channels, candidate, candidate)) is None:
                return (candidate, candidate), problem
    raise ConversionError(f"at input {start[0]}x{start[1]}: {problem}; and no input size up to {MAX_SEARCH} fits the weights")


__all__ = ["first_misfit", "fitting_size"]
