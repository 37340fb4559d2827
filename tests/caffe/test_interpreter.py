"""The interpreter's Caffe arithmetic against loops written from Caffe's pooling_layer.cpp, and the
layer registry's contract (duplicates raise, unknown types name the type and the layer)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from resnet_port.converters.caffe import CaffeInterpreter, parse_prototxt
from resnet_port.converters.caffe.registry import register
from resnet_port.errors import ConversionError


def caffe_pool_loops(x: np.ndarray, k: int, s: int, pad: int, method: str) -> np.ndarray:
    """pooling_layer.cpp, Forward_cpu, transcribed as loops (one channel plane at a time)."""
    height, width = x.shape[-2:]
    pooled_h = int(math.ceil((height + 2 * pad - k) / s)) + 1
    pooled_w = int(math.ceil((width + 2 * pad - k) / s)) + 1
    if pad:
        if (pooled_h - 1) * s >= height + pad:
            pooled_h -= 1
        if (pooled_w - 1) * s >= width + pad:
            pooled_w -= 1
    out = np.zeros(x.shape[:-2] + (pooled_h, pooled_w))
    for ph in range(pooled_h):
        for pw in range(pooled_w):
            hstart, wstart = ph * s - pad, pw * s - pad
            if method == "MAX":
                hend, wend = min(hstart + k, height), min(wstart + k, width)
                hstart, wstart = max(hstart, 0), max(wstart, 0)
                out[..., ph, pw] = x[..., hstart:hend, wstart:wend].max(axis=(-2, -1))
            else:
                hend, wend = min(hstart + k, height + pad), min(wstart + k, width + pad)
                size = (hend - hstart) * (wend - wstart)
                hstart, wstart = max(hstart, 0), max(wstart, 0)
                hend, wend = min(hend, height), min(wend, width)
                out[..., ph, pw] = x[..., hstart:hend, wstart:wend].sum(axis=(-2, -1)) / size
    return out


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("size, k, s, pad", [(112, 3, 2, 0), (7, 3, 2, 1), (8, 7, 1, 0), (10, 3, 2, 1), (9, 2, 2, 0), (5, 3, 3, 1), (6, 3, 2, 2)])
def test_pooling_matches_caffe_loops(method, size, k, s, pad):
    text = f"""input: "data" input_dim: 1 input_dim: 2 input_dim: {size} input_dim: {size}
    layer {{ name: "p" type: "Pooling" bottom: "data" top: "p" pooling_param {{ pool: {method} kernel_size: {k} stride: {s} pad: {pad} }} }}"""
    x = np.random.default_rng(size * k + pad).standard_normal((1, 2, size, size))
    ours = CaffeInterpreter(parse_prototxt(text), {}).forward({"data": x})["p"].numpy()
    expected = caffe_pool_loops(x, k, s, pad, method)
    assert ours.shape == expected.shape
    assert np.abs(ours - expected).max() < 1e-12


def test_duplicate_registration_raises():
    with pytest.raises(RuntimeError, match="registered twice"):
        register("caffe", "Convolution")(lambda *a: None)


def test_unknown_layer_type_names_type_and_layer():
    net = parse_prototxt('input: "data" input_dim: 1 input_dim: 1 input_dim: 2 input_dim: 2 layer { name: "odd" type: "LRN" bottom: "data" top: "o" }')
    with pytest.raises(ConversionError, match=r"layer 'odd' has type 'LRN'"):
        CaffeInterpreter(net, {})
