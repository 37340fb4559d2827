"""Caffe ResNets with the deep stem (ResNet-C/D ports: 3x3/2, 3x3, 3x3, each BN -> Scale -> ReLU,
then the pool), and ``--rgb`` on nets whose first layer is not the release's conv1.

Real Caffe files of this class (the ``resnet18-1x32d`` style deploys of model collections, often
with a fork's ``ceil_mode: false`` pool1) were refused: the walk took the second stem conv for a
block.  Each net here is written by the test (tests/caffe/netgen.py), converted, and compared with
the float64 Caffe interpreter on the prototxt; the stem alone is also compared with a
torch.nn.functional forward written here from the blobs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from resnet_port.converters.caffe import convert_caffe, parse_prototxt, write_caffemodel
from resnet_port.converters.common import run_converted
from resnet_port.resnet_ref import build_model
from tests.caffe.netgen import resnet_prototxt, weights_for
from tests.caffe.preactnets import PreActNet, preact_prototxt
from tests.caffe.wildnets import logits, rel, seeded

TOL = 1e-5


def _write(tmp_path, text: str, seed: int = 0, name: str = "net"):
    parsed = parse_prototxt(text)
    blobs = weights_for(parsed, seed=seed)
    prototxt = tmp_path / f"{name}.prototxt"
    prototxt.write_text(text)
    return blobs, write_caffemodel(tmp_path / f"{name}.caffemodel", parsed, blobs), prototxt


CASES = {
    # (netgen arguments, the stem_widths the spec must record)
    "basic_fork_floor_pool": (dict(block="basic", layers=(2, 1, 1, 1), widths=(8, 8, 16, 16), stem_width=8, pool1="floor_pad1", conv1_bias=False), ()),
    "bottleneck_ceil_pool_conv1_bias": (dict(block="bottleneck", stem_width=8, pool1="ceil", conv1_bias=True), ()),
    "tiered_widths": (dict(block="basic", widths=(8, 8, 16, 16), stem_width=8, stem_widths=(6, 4), pool1="floor_pad1", conv1_bias=False), (6, 4)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_deep_stem_nets_convert_exactly(case, tmp_path):
    args, widths = CASES[case]
    text = resnet_prototxt(stem="deep", input_size=64, pool5=2, **args)
    blobs, model, prototxt = _write(tmp_path, text, seed=3)
    conversion = convert_caffe(model, prototxt=prototxt, verify=True)
    spec = conversion.spec
    assert (spec.stem, spec.stem_widths, spec.stem_width) == ("deep", widths, args["stem_width"])
    assert spec.stem_pool == ("max_ceil" if args["pool1"] == "ceil" else "max")
    assert ("stem" in spec.conv_bias) == args["conv1_bias"]
    x = seeded((2, 3, 64, 64), seed=1)
    reference = logits(text, blobs, x)
    assert rel(reference, run_converted(conversion, x)) <= TOL
    assert conversion.metadata.verification["passed"]


def _functional_stem(blobs, x: torch.Tensor, bias: bool) -> torch.Tensor:
    """conv -> BN (Caffe's stored mean*s, var*s, s) -> Scale -> ReLU, three times, in float64."""
    for i, stride in ((1, 2), (2, 1), (3, 1)):
        w = [torch.from_numpy(np.asarray(b, np.float64)) for b in blobs[f"conv1_{i}"]]
        x = F.conv2d(x, w[0], w[1] if bias and i == 1 else None, stride=stride, padding=1)
        mean, var, s = (np.asarray(b, np.float64) for b in blobs[f"bn_conv1_{i}"])
        factor = 0.0 if s[0] == 0 else 1.0 / s[0]
        mean, var = torch.from_numpy(mean * factor), torch.from_numpy(var * factor)
        gamma, beta = (torch.from_numpy(np.asarray(b, np.float64)) for b in blobs[f"scale_conv1_{i}"])
        x = (x - mean[:, None, None]) / torch.sqrt(var[:, None, None] + 1e-5) * gamma[:, None, None] + beta[:, None, None]
        x = torch.relu(x)
    return x


def test_deep_stem_output_matches_a_functional_forward(tmp_path):
    text = resnet_prototxt(stem="deep", block="basic", widths=(8, 8, 16, 16), stem_width=8, stem_widths=(6, 4), conv1_bias=True)
    blobs, model, prototxt = _write(tmp_path, text, seed=5)
    conversion = convert_caffe(model, prototxt=prototxt)
    net = build_model(conversion.spec).double().eval()
    net.load_state_dict({k: v.double() if v.is_floating_point() else v for k, v in conversion.state_dict.items()})
    x = torch.from_numpy(seeded((1, 3, 32, 32), seed=2)).double()
    with torch.inference_mode():
        ours = net.relu(net.bn1(net.conv1(x)))
    expected = _functional_stem(blobs, x, bias=True)
    # float32 storage of the converted values: agreement to float32 precision, not float64
    assert torch.allclose(ours, expected, rtol=0, atol=1e-6 * float(expected.abs().max()))


def test_rgb_reverses_the_first_conv_of_a_deep_stem(tmp_path):
    text = resnet_prototxt(stem="deep", block="basic", widths=(8, 8, 16, 16), stem_width=8, pool1="floor_pad1")
    blobs, model, prototxt = _write(tmp_path, text, seed=4)
    rgb = convert_caffe(model, prototxt=prototxt, rgb=True, mean_values=[104, 117, 123])
    assert rgb.metadata.preprocessing.channel_order == "RGB" and rgb.metadata.preprocessing.mean == (123, 117, 104)
    x = seeded((2, 3, 64, 64), seed=6)
    reference = logits(text, blobs, x)  # the Caffe net takes BGR
    assert rel(reference, run_converted(rgb, x[:, ::-1].copy())) <= TOL


def test_rgb_reverses_the_input_batchnorm_too(tmp_path):
    """A v2 port with a BatchNorm + Scale on the raw input: its per-channel values belong to B, G and
    R in that order, so --rgb must reverse them with conv1's kernel (reversing the kernel alone
    normalises each channel with another channel's statistics)."""
    net = PreActNet(data_bn=True, block="basic", layers=(1, 1, 1, 1), widths=(8, 8, 16, 16))
    text = preact_prototxt(net)
    blobs, model, prototxt = _write(tmp_path, text, seed=8)
    rgb = convert_caffe(model, prototxt=prototxt, rgb=True)
    assert rgb.spec.input_bn != "none"
    x = seeded((2, 3, net.input_size, net.input_size), seed=9)
    reference = logits(text, blobs, x, output="classifier")
    assert rel(reference, run_converted(rgb, x[:, ::-1].copy())) <= TOL
