"""The inverse mapping: reference weights written out as a Caffe net in the release's own layout.

Used by `resnet-port demo` to make a real caffemodel on a machine with no user files (which
`convert-caffe` then converts back and verifies with the independent interpreter).  Layer names follow
Kaiming He's prototxts: conv1 / bn_conv1 / scale_conv1, res2a_branch1, res2a_branch2{a,b,c}, and
``res4b1``..``res4b22`` style names where a stage has more blocks than the release's ResNet-50.
BatchNorm statistics are stored as Caffe stores them, ``[mean * s, var * s, s]``.
"""

from __future__ import annotations

import string
from typing import Any, Mapping

import numpy as np
import torch

from resnet_port.converters.caffe.prototxt import parse_prototxt
from resnet_port.errors import ConversionError
from resnet_port.resnet_ref import ResNetSpec

BN_FACTOR = np.float32(999.982)  # the factor the release's files carry


def _block_tag(stage: int, index: int, count: int, lettered: bool) -> str:
    if lettered:
        return f"{stage}{string.ascii_lowercase[index]}"
    return f"{stage}a" if index == 0 else f"{stage}b{index}"


def export_caffe(
    spec: ResNetSpec, state_dict: Mapping[str, torch.Tensor], name: str = "ResNet", input_size: int = 224
) -> tuple[str, Any, dict[str, list[np.ndarray]]]:
    """(prototxt text, its NetParameter, blobs by layer name) of a Caffe-expressible reference ResNet."""
    if spec.residual != "v1" or spec.stem != "7x7" or spec.stem_pool != "max_ceil" or spec.input_bn != "none":
        raise ConversionError(
            "only release-style nets export to Caffe (v1 residual, 7x7 stem, ceil-mode pool1, no input BN); "
            f"got residual={spec.residual} stem={spec.stem} stem_pool={spec.stem_pool} input_bn={spec.input_bn}"
        )
    if spec.bn_eps_overrides:
        raise ConversionError("per-layer eps overrides are not exported")
    sd = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in state_dict.items()}
    lines = [f'name: "{name}"', 'input: "data"', "input_dim: 1", f"input_dim: {spec.in_chans}",
             f"input_dim: {input_size}", f"input_dim: {input_size}"]
    blobs: dict[str, list[np.ndarray]] = {}

    def layer(lname: str, ltype: str, bottom: str, top: str, body: str = "") -> None:
        lines.append(f'layer {{ name: "{lname}" type: "{ltype}" bottom: "{bottom}" top: "{top}" {body} }}')

    def conv(lname: str, bottom: str, key: str, k: int, stride: int, pad: int) -> None:
        weight = sd[f"{key}.weight"]
        bias = sd.get(f"{key}.bias")
        body = (f"convolution_param {{ num_output: {weight.shape[0]} kernel_size: {k} pad: {pad} stride: {stride}"
                f"{'' if bias is not None else ' bias_term: false'} }}")
        layer(lname, "Convolution", bottom, lname, body)
        blobs[lname] = [weight] + ([bias] if bias is not None else [])

    def bn_scale(suffix: str, blob: str, key: str) -> None:
        layer(f"bn{suffix}", "BatchNorm", blob, blob, f"batch_norm_param {{ use_global_stats: true eps: {spec.bn_eps} }}")
        layer(f"scale{suffix}", "Scale", blob, blob, "scale_param { bias_term: true }")
        blobs[f"bn{suffix}"] = [sd[f"{key}.running_mean"] * BN_FACTOR, sd[f"{key}.running_var"] * BN_FACTOR,
                                np.array([BN_FACTOR], np.float32)]
        blobs[f"scale{suffix}"] = [sd[f"{key}.weight"], sd[f"{key}.bias"]]

    conv("conv1", "data", "conv1", 7, 2, 3)
    bn_scale("_conv1", "conv1", "bn1")
    layer("conv1_relu", "ReLU", "conv1", "conv1")
    layer("pool1", "Pooling", "conv1", "pool1", "pooling_param { kernel_size: 3 stride: 2 pool: MAX }")
    blob = "pool1"
    lettered = sum(spec.layers) <= 16  # ResNet-50 and smaller use letters throughout, as the release
    for s, count in enumerate(spec.layers):
        for b in range(count):
            tag = _block_tag(s + 2, b, count, lettered or count <= 3)
            key = f"layer{s + 1}.{b}"
            stride = 2 if (s > 0 and b == 0) else 1
            shortcut = blob
            if f"{key}.downsample.0.weight" in sd:
                conv(f"res{tag}_branch1", blob, f"{key}.downsample.0", 1, stride, 0)
                bn_scale(f"{tag}_branch1", f"res{tag}_branch1", f"{key}.downsample.1")
                shortcut = f"res{tag}_branch1"
            if spec.block == "bottleneck":
                strides = (stride, 1) if spec.stride_in == "1x1" else (1, stride)
                parts = [("2a", 1, strides[0], "1"), ("2b", 3, strides[1], "2"), ("2c", 1, 1, "3")]
            else:
                parts = [("2a", 3, stride, "1"), ("2b", 3, 1, "2")]
            x = blob
            for i, (part, k, st, n) in enumerate(parts):
                top = f"res{tag}_branch{part}"
                conv(top, x, f"{key}.conv{n}", k, st, k // 2)
                bn_scale(f"{tag}_branch{part}", top, f"{key}.bn{n}")
                if i < len(parts) - 1:
                    layer(f"{top}_relu", "ReLU", top, top)
                x = top
            lines.append(f'layer {{ name: "res{tag}" type: "Eltwise" bottom: "{shortcut}" bottom: "{x}" top: "res{tag}" }}')
            layer(f"res{tag}_relu", "ReLU", f"res{tag}", f"res{tag}")
            blob = f"res{tag}"
    if spec.head_pool == "fixed":
        layer("pool5", "Pooling", blob, "pool5", f"pooling_param {{ kernel_size: {spec.head_pool_size} stride: 1 pool: AVE }}")
    else:
        layer("pool5", "Pooling", blob, "pool5", "pooling_param { pool: AVE global_pooling: true }")
    fc = f"fc{spec.num_classes}"
    layer(fc, "InnerProduct", "pool5", fc, f"inner_product_param {{ num_output: {spec.num_classes} }}")
    blobs[fc] = [sd["fc.weight"], sd["fc.bias"]]
    layer("prob", "Softmax", fc, "prob")
    text = "\n".join(lines) + "\n"
    return text, parse_prototxt(text), blobs


__all__ = ["export_caffe"]
