"""Run any Caffe layer graph directly in PyTorch, layer by layer, as Caffe's forward pass does.

Written apart from the mapping (layers.py, graph.py) on purpose: it reads each layer's
parameters and raw blobs itself, keeps Caffe's blob semantics (in-place tops), and reproduces
Caffe's own arithmetic where it differs from PyTorch's modules (pooled sizes rounded up and
clipped, average pooling divided by the window clipped to the padded input, BatchNorm's stored
scale factor), so it can referee graphs without golden data (ResNet-152, edited prototxts).
It knows nothing of ResNets.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from resnet_port.converters.caffe.netstate import DATA_TYPES, LOSS_TYPES, in_test_phase
from resnet_port.converters.caffe.registry import lookup, register
from resnet_port.errors import ConversionError

FRAMEWORK = "caffe-interpreter"
Blobs = Sequence[np.ndarray]
Op = Callable[[Any, list[torch.Tensor], list[torch.Tensor]], list[torch.Tensor]]


def _hw(repeated: Any, h: Any, w: Any, default: int) -> tuple[int, int]:
    """(h, w) from Caffe's repeated value or its _h/_w pair."""
    if h is not None:
        return int(h), int(w)
    values = list(repeated) if not isinstance(repeated, int) else [repeated]
    if not values:
        return default, default
    return (int(values[0]), int(values[-1]))


def _field(msg: Any, name: str) -> Any:
    return getattr(msg, name) if msg.HasField(name) else None


@register(FRAMEWORK, "Input")
def run_input(layer: Any, params: list[torch.Tensor], inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    raise RuntimeError("Input layers are fed, not run")  # never called: see CaffeInterpreter.forward


@register(FRAMEWORK, "Convolution")
def run_convolution(layer: Any, params: list[torch.Tensor], inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    p = layer.convolution_param
    kh, kw = _hw(p.kernel_size, _field(p, "kernel_h"), _field(p, "kernel_w"), 0)
    stride = _hw(p.stride, _field(p, "stride_h"), _field(p, "stride_w"), 1)
    pad = _hw(p.pad, p.pad_h if p.HasField("pad_h") else None, p.pad_w if p.HasField("pad_w") else None, 0)
    dilation = _hw(p.dilation, None, None, 1)
    weight = params[0].reshape(int(p.num_output), -1, kh, kw)
    bias = params[1].reshape(-1) if p.bias_term else None
    return [F.conv2d(inputs[0], weight, bias, stride, pad, dilation, int(p.group))]


@register(FRAMEWORK, "BatchNorm")
def run_batch_norm(layer: Any, params: list[torch.Tensor], inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    # batch_norm_layer.cpp: factor = s == 0 ? 0 : 1 / s; y = (x - mean*factor) / sqrt(var*factor + eps)
    s = float(params[2].reshape(-1)[0])
    factor = 0.0 if s == 0 else 1.0 / s
    x = inputs[0]
    shape = (1, -1) + (1,) * (x.dim() - 2)
    mean = (params[0].reshape(-1) * factor).reshape(shape)
    var = (params[1].reshape(-1) * factor).reshape(shape)
    eps = float(layer.batch_norm_param.eps)  # the proto default (1e-5) when unset
    return [(x - mean) / torch.sqrt(var + eps)]


@register(FRAMEWORK, "Scale")
def run_scale(layer: Any, params: list[torch.Tensor], inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    p = layer.scale_param
    x = inputs[0]
    axis = p.axis % x.dim()
    gamma = params[0]
    shape = [1] * axis + list(gamma.shape) + [1] * (x.dim() - axis - gamma.dim())
    y = x * gamma.reshape(shape)
    if p.bias_term:
        y = y + params[1].reshape(shape)
    return [y]


@register(FRAMEWORK, "Bias")
def run_bias(layer: Any, params: list[torch.Tensor], inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    # bias_layer.cpp: top = bottom + bias broadcast over the axes after axis .. axis + num_axes.
    p = layer.bias_param
    x = inputs[0]
    axis = p.axis % x.dim()
    bias = params[0] if len(inputs) == 1 else inputs[1]
    shape = [1] * axis + list(bias.shape) + [1] * (x.dim() - axis - bias.dim())
    return [x + bias.reshape(shape)]


@register(FRAMEWORK, "ReLU")
def run_relu(layer: Any, params: list[torch.Tensor], inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    slope = float(layer.relu_param.negative_slope)
    x = inputs[0]
    return [torch.where(x > 0, x, x * slope)]


def caffe_pooled_size(size: int, kernel: int, stride: int, pad: int, ceil: bool) -> int:
    """pooling_layer.cpp: rounded up (or down), then clipped so the last window starts inside the image."""
    rounding = math.ceil if ceil else math.floor
    pooled = int(rounding((size + 2 * pad - kernel) / stride)) + 1
    if pad and (pooled - 1) * stride >= size + pad:
        pooled -= 1
    return pooled


@register(FRAMEWORK, "Pooling")
def run_pooling(layer: Any, params: list[torch.Tensor], inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    p = layer.pooling_param
    x = inputs[0]
    height, width = x.shape[-2:]
    if p.global_pooling:
        kh, kw, sh, sw, ph, pw = height, width, 1, 1, 0, 0
    else:
        kh, kw = _hw(p.kernel_size, _field(p, "kernel_h"), _field(p, "kernel_w"), 0)
        sh, sw = _hw(p.stride, _field(p, "stride_h"), _field(p, "stride_w"), 1)
        ph, pw = _hw(p.pad, p.pad_h if p.HasField("pad_h") else None, p.pad_w if p.HasField("pad_w") else None, 0)
    ceil = p.round_mode == 0
    oh = caffe_pooled_size(height, kh, sh, ph, ceil)
    ow = caffe_pooled_size(width, kw, sw, pw, ceil)
    # Pad so that exactly oh x ow windows fit: ph before, whatever the last window needs after.
    extra_h = max((oh - 1) * sh + kh - height - ph, 0)
    extra_w = max((ow - 1) * sw + kw - width - pw, 0)
    if p.pool == 0:  # MAX: padded cells never win
        padded = F.pad(x, (pw, extra_w, ph, extra_h), value=float("-inf"))
        out = F.max_pool2d(padded, (kh, kw), (sh, sw))
    elif p.pool == 1:  # AVE: zero padding; divide by the window clipped to the *padded* input
        padded = F.pad(x, (pw, extra_w, ph, extra_h), value=0.0)
        sums = F.avg_pool2d(padded, (kh, kw), (sh, sw), divisor_override=1)
        hs = torch.arange(oh, dtype=torch.float64) * sh - ph
        ws = torch.arange(ow, dtype=torch.float64) * sw - pw
        rows = torch.minimum(hs + kh, torch.tensor(float(height + ph))) - hs
        cols = torch.minimum(ws + kw, torch.tensor(float(width + pw))) - ws
        out = sums / (rows[:, None] * cols[None, :]).to(x.dtype)
    else:
        raise ConversionError(f"layer {layer.name!r}: stochastic pooling has no deterministic forward")
    return [out[..., :oh, :ow]]


@register(FRAMEWORK, "Eltwise")
def run_eltwise(layer: Any, params: list[torch.Tensor], inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    p = layer.eltwise_param
    if p.operation == 1:
        coeff = list(p.coeff) or [1.0] * len(inputs)
        out = inputs[0] * coeff[0]
        for c, x in zip(coeff[1:], inputs[1:]):
            out = out + x * c
    elif p.operation == 0:
        out = inputs[0]
        for x in inputs[1:]:
            out = out * x
    else:
        out = inputs[0]
        for x in inputs[1:]:
            out = torch.maximum(out, x)
    return [out]


@register(FRAMEWORK, "InnerProduct")
def run_inner_product(layer: Any, params: list[torch.Tensor], inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    p = layer.inner_product_param
    x = inputs[0].flatten(int(p.axis))
    weight = params[0].reshape(-1, x.shape[-1]) if not p.transpose else params[0].reshape(x.shape[-1], -1).T
    out = x @ weight.T
    if p.bias_term:
        out = out + params[1].reshape(-1)
    return [out]


@register(FRAMEWORK, "Softmax")
def run_softmax(layer: Any, params: list[torch.Tensor], inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    return [torch.softmax(inputs[0], dim=int(layer.softmax_param.axis))]


@register(FRAMEWORK, "Dropout")
def run_dropout(layer: Any, params: list[torch.Tensor], inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    return [inputs[0]]


@register(FRAMEWORK, "Split")
def run_split(layer: Any, params: list[torch.Tensor], inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    return [inputs[0]] * len(layer.top)


class CaffeInterpreter:
    """A Caffe net (its layers, in file order) with weights by layer name, runnable on a batch.

    ``dtype`` float64 by default: the referee should be more precise than what it referees.
    Data layers are fed like Input layers; loss and accuracy heads are skipped.
    """

    def __init__(
        self, net: Any, blobs: Mapping[str, Blobs], dtype: torch.dtype = torch.float64, filter_phase: bool = True
    ) -> None:
        # filter_phase: keep the TEST-phase layers (a train_val prototxt); False for a net Caffe
        # already built and saved (a caffemodel's own definition).
        self.layers = [layer for layer in net.layer if not filter_phase or in_test_phase(layer)]
        self.dtype = dtype
        self.params: dict[str, list[torch.Tensor]] = {}
        self.ops: dict[str, Op] = {}
        for layer in self.layers:
            if layer.type in DATA_TYPES or layer.type in LOSS_TYPES:
                continue
            self.ops[layer.name] = lookup(FRAMEWORK, layer.type, layer.name, "interpreter")
            self.params[layer.name] = [torch.from_numpy(np.array(b, dtype=np.float64 if dtype == torch.float64 else np.float32)) for b in blobs.get(layer.name, [])]

    def forward(
        self, inputs: Mapping[str, np.ndarray | torch.Tensor], until: str | None = None, progress: bool = False
    ) -> dict[str, torch.Tensor]:
        """Run the net; return the final value of every blob.  ``until`` stops after the layer of
        that name (Caffe's in-place layers overwrite a blob: ``until="conv1"`` keeps the raw conv1)."""
        values: dict[str, torch.Tensor] = {name: torch.as_tensor(np.asarray(v), dtype=self.dtype) for name, v in inputs.items()}
        with torch.no_grad():
            for layer in tqdm(self.layers, desc="interpreter", unit="layer", disable=not progress, leave=False):
                if layer.type in DATA_TYPES:
                    if layer.top[0] not in values:
                        raise ConversionError(f"interpreter: no value given for the input blob {layer.top[0]!r}")
                    continue
                if layer.type in LOSS_TYPES:
                    continue  # training heads need labels; the logits are already computed
                try:
                    args = [values[b] for b in layer.bottom]
                except KeyError as exc:
                    raise ConversionError(f"interpreter: layer {layer.name!r} reads {exc.args[0]!r}, which nothing made") from None
                outs = self.ops[layer.name](layer, self.params[layer.name], args)
                for top, value in zip(layer.top, outs):
                    values[top] = value
                if until is not None and layer.name == until:
                    break
        return values


__all__ = ["CaffeInterpreter", "caffe_pooled_size"]
