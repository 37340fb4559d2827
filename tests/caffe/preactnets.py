"""Test-side pre-activation (v2) ResNets in Caffe, and a float64 torch.nn.functional forward of them.

`preact_prototxt` writes the layouts Caffe ports of the identity-mapping ResNets use:

- ``first="preact"`` (MXNet / Gluon ports, e.g. the 269-layer files): every block, the first one
  included, starts with BN -> Scale -> ReLU; the projection reads that pre-activated blob.
- ``first="none"`` (fb.resnet.torch's preresnet ported to Caffe): the first block after the stem
  has no pre-activation; its body and its projection read the stem's pool output.
- ``projection="raw"``: every projection reads the block's raw input while the body reads the
  pre-activation (no reference form: the converter must refuse it).

`preact_forward` computes the same network from the same description and blobs with
torch.nn.functional, written here apart from the converter and from the Caffe interpreter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class PreActNet:
    layers: tuple[int, ...] = (1, 2, 1, 1)
    widths: tuple[int, ...] = (4, 8, 8, 16)
    block: str = "bottleneck"
    stem_width: int = 8
    input_size: int = 32
    classes: int = 10
    data_bn: bool = False
    data_scale: bool = True
    conv1_bias: bool = False
    first: str = "preact"  # "preact" | "none"
    projection: str = "preact"  # "preact" | "raw"
    eps: float | None = None
    stride_in: str = "3x3"  # where a strided bottleneck strides: "1x1" | "3x3"
    pool5: int | None = None  # None: global pooling; k: a k x k average pool, stride 1

    @property
    def expansion(self) -> int:
        return 4 if self.block == "bottleneck" else 1


def _layer(name, type_, bottom, top, body=""):
    return f'layer {{ name: "{name}" type: "{type_}" bottom: "{bottom}" top: "{top}" {body} }}\n'


def _conv(name, bottom, out, k, stride, bias):
    return _layer(
        name, "Convolution", bottom, name,
        f"convolution_param {{ num_output: {out} kernel_size: {k} pad: {k // 2} stride: {stride} bias_term: {str(bias).lower()} }}",
    )


def _bn_scale_relu(name, bottom, top, eps, relu=True, scale=True):
    eps_text = f"eps: {eps}" if eps is not None else ""
    text = _layer(f"{name}_bn", "BatchNorm", bottom, top, f"batch_norm_param {{ use_global_stats: true {eps_text} }}")
    if scale:
        text += _layer(f"{name}_scale", "Scale", top, top, "scale_param { bias_term: true }")
    if relu:
        text += _layer(f"{name}_relu", "ReLU", top, top)
    return text


def block_plan(net: PreActNet):
    """(tag, cin, planes, out, stride, projects) for every block."""
    plan, cin, n = [], net.stem_width, 0
    for s, (count, planes) in enumerate(zip(net.layers, net.widths)):
        for b in range(count):
            n += 1
            stride = 2 if s > 0 and b == 0 else 1
            out = planes * net.expansion
            plan.append((f"res{n}", cin, planes, out, stride, stride != 1 or cin != out))
            cin = out
    return plan


def body_convs(net: PreActNet, planes: int, out: int, stride: int):
    """(suffix, width, kernel, stride) of each body conv."""
    if net.block == "bottleneck":
        s1, s2 = (stride, 1) if net.stride_in == "1x1" else (1, stride)
        return [("conv1", planes, 1, s1), ("conv2", planes, 3, s2), ("conv3", out, 1, 1)]
    return [("conv1", planes, 3, stride), ("conv2", planes, 3, 1)]


def preact_prototxt(net: PreActNet) -> str:
    size = net.input_size
    text = f'name: "preact"\ninput: "data"\ninput_dim: 1\ninput_dim: 3\ninput_dim: {size}\ninput_dim: {size}\n'
    x = "data"
    if net.data_bn:
        text += _bn_scale_relu("data", "data", "data_norm", net.eps, relu=False, scale=net.data_scale)
        x = "data_norm"
    text += _conv("conv1", x, net.stem_width, 7, 2, net.conv1_bias)
    text += _bn_scale_relu("conv1", "conv1", "conv1", net.eps)
    text += _layer("conv1_pool", "Pooling", "conv1", "conv1_pool", "pooling_param { kernel_size: 3 stride: 2 pool: MAX }")
    x = "conv1_pool"
    for i, (tag, cin, planes, out, stride, projects) in enumerate(block_plan(net)):
        if i == 0 and net.first == "none":
            act = x
        else:
            act = f"{tag}_pre"
            text += _bn_scale_relu(tag, x, act, net.eps)
        y = act
        convs = body_convs(net, planes, out, stride)
        for j, (suffix, width, k, st) in enumerate(convs):
            if j:
                text += _bn_scale_relu(f"{tag}_{convs[j - 1][0]}", y, y, net.eps)
            text += _conv(f"{tag}_{suffix}", y, width, k, st, False)
            y = f"{tag}_{suffix}"
        short = x
        if projects:
            source = x if net.projection == "raw" else act
            text += _conv(f"{tag}_match_conv", source, out, 1, stride, False)
            short = f"{tag}_match_conv"
        text += f'layer {{ name: "{tag}_eletwise" type: "Eltwise" bottom: "{short}" bottom: "{y}" top: "{tag}_eletwise" }}\n'
        x = f"{tag}_eletwise"
    text += _bn_scale_relu("final", x, "final", net.eps)
    pool = "global_pooling: true" if net.pool5 is None else f"kernel_size: {net.pool5} stride: 1"
    text += _layer("pool_avg", "Pooling", "final", "pool_avg", f"pooling_param {{ pool: AVE {pool} }}")
    text += _layer("classifier", "InnerProduct", "pool_avg", "classifier", f"inner_product_param {{ num_output: {net.classes} }}")
    text += _layer("prob", "Softmax", "classifier", "prob")
    return text


# -- the independent forward ------------------------------------------------------------------


def _t(array) -> torch.Tensor:
    return torch.from_numpy(np.asarray(array, np.float64))


def _bn(x, blobs, name, eps, scale=True):
    mean, var, factor = (np.asarray(b, np.float64).reshape(-1) for b in blobs[f"{name}_bn"])
    f = 0.0 if factor[0] == 0 else 1.0 / factor[0]
    shape = (1, -1, 1, 1)
    y = (x - _t(mean * f).view(shape)) / torch.sqrt(_t(var * f).view(shape) + (1e-5 if eps is None else eps))
    if scale:
        gamma, beta = blobs[f"{name}_scale"]
        y = y * _t(gamma).view(shape) + _t(beta).view(shape)
    return y


def _conv_f(x, blobs, name, stride, k):
    w = _t(blobs[name][0])
    b = _t(blobs[name][1]) if len(blobs[name]) > 1 else None
    return F.conv2d(x, w, b, stride, k // 2)


def preact_forward(net: PreActNet, blobs: dict, x: np.ndarray, projection: str | None = None, final_relu: bool = True) -> np.ndarray:
    """The network ``net`` describes, in float64 functional torch.  ``projection`` / ``final_relu``
    override the description (a wrong reading, to show it moves the numbers)."""
    projection = projection or net.projection
    h = _t(x)
    if net.data_bn:
        h = _bn(h, blobs, "data", net.eps, scale=net.data_scale)
    h = F.relu(_bn(_conv_f(h, blobs, "conv1", 2, 7), blobs, "conv1", net.eps))
    h = F.max_pool2d(h, 3, 2, ceil_mode=True)  # Caffe: pad 0, sizes rounded up
    for i, (tag, cin, planes, out, stride, projects) in enumerate(block_plan(net)):
        act = h if i == 0 and net.first == "none" else F.relu(_bn(h, blobs, tag, net.eps))
        y = act
        convs = body_convs(net, planes, out, stride)
        for j, (suffix, width, k, st) in enumerate(convs):
            if j:
                y = F.relu(_bn(y, blobs, f"{tag}_{convs[j - 1][0]}", net.eps))
            y = _conv_f(y, blobs, f"{tag}_{suffix}", st, k)
        short = h
        if projects:
            short = _conv_f(h if projection == "raw" else act, blobs, f"{tag}_match_conv", stride, 1)
        h = short + y
    h = _bn(h, blobs, "final", net.eps)
    if final_relu:
        h = F.relu(h)
    h = h.mean(dim=(2, 3)) if net.pool5 is None else F.avg_pool2d(h, net.pool5, 1)
    w, b = blobs["classifier"]
    return (h.flatten(1) @ _t(w).T + _t(b)).numpy()
