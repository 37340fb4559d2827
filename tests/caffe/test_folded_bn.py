"""Caffe ResNets whose BatchNorm + Scale were folded into the convolutions (deployment tools'
merge-BN passes, PyTorch-to-Caffe converters run after fusing): every conv carries a bias, no
BatchNorm or Scale layer is left, and the conv feeds the ReLU or the Eltwise sum directly.

The test folds netgen's nets itself (W * g / sqrt(v + eps), (b - m) * g / sqrt(v + eps) + beta, in
float64), writes the folded prototxt and caffemodel, and checks the conversion against the float64
Caffe interpreter on the folded net and against the unfolded original.
"""

from __future__ import annotations

import numpy as np
import pytest

from resnet_port.converters.caffe import convert_caffe, parse_prototxt, write_caffemodel
from resnet_port.converters.common import run_converted
from resnet_port.errors import ConversionError
from tests.caffe.netgen import resnet_prototxt, weights_for
from tests.caffe.preactnets import PreActNet, preact_prototxt
from tests.caffe.wildnets import logits, rel, seeded

TOL = 1e-5


def fold(text: str, blobs: dict, keep: set[str] = frozenset()) -> tuple[str, dict]:
    """The net with each BatchNorm (+ Scale) after a Convolution folded into it, except the BNs
    named in ``keep``."""
    net = parse_prototxt(text)
    producer = {}
    for layer in net.layer:
        for top in layer.top:
            producer.setdefault(top, layer)
    out = {name: [np.asarray(b) for b in arrays] for name, arrays in blobs.items()}
    dropped = set()
    for i, layer in enumerate(net.layer):
        if layer.type != "BatchNorm" or layer.name in keep:
            continue
        conv = producer[layer.bottom[0]]
        scale = net.layer[i + 1]
        assert conv.type == "Convolution" and scale.type == "Scale" and scale.bottom[0] == layer.bottom[0]
        mean, var, factor = (np.asarray(b, np.float64).reshape(-1) for b in blobs[layer.name])
        mean, var = mean / factor[0], var / factor[0]
        eps = layer.batch_norm_param.eps if layer.batch_norm_param.HasField("eps") else 1e-5
        gamma, beta = (np.asarray(b, np.float64) for b in blobs[scale.name])
        k = gamma / np.sqrt(var + eps)
        weight = np.asarray(blobs[conv.name][0], np.float64) * k[:, None, None, None]
        bias = np.asarray(blobs[conv.name][1], np.float64) if conv.convolution_param.bias_term else 0.0
        out[conv.name] = [weight.astype(np.float32), ((bias - mean) * k + beta).astype(np.float32)]
        conv.convolution_param.bias_term = True
        dropped.update((layer.name, scale.name))
    kept = [layer for layer in net.layer if layer.name not in dropped]
    del net.layer[:]
    net.layer.extend(kept)
    for name in dropped:
        out.pop(name, None)
    from google.protobuf import text_format

    return text_format.MessageToString(net), out


CASES = {
    "bottleneck_7x7": dict(block="bottleneck", conv1_bias=True),
    "basic_deep_stem_floor_pool": dict(block="basic", widths=(8, 8, 16, 16), stem="deep", pool1="floor_pad1", conv1_bias=False),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_folded_batchnorms_convert_exactly(case, tmp_path):
    original = resnet_prototxt(input_size=64, pool5=2, **CASES[case])
    blobs = weights_for(parse_prototxt(original), seed=21)
    text, folded = fold(original, blobs)
    assert "BatchNorm" not in text and "Scale" not in text
    prototxt = tmp_path / "folded.prototxt"
    prototxt.write_text(text)
    model = write_caffemodel(tmp_path / "folded.caffemodel", parse_prototxt(text), folded)
    conversion = convert_caffe(model, prototxt=prototxt, verify=True)
    assert conversion.spec.residual == "v1"
    assert set(conversion.spec.conv_bias) >= {"stem", "conv1", "conv2", "downsample"}
    assert any("folded" in note for note in conversion.report.notes)
    x = seeded((2, 3, 64, 64), seed=3)
    ours = run_converted(conversion, x)
    assert rel(logits(text, folded, x), ours) <= TOL  # the folded net, as Caffe runs it
    assert rel(logits(original, blobs, x), ours) <= TOL  # and the net before the fold


def test_partly_folded_net_keeps_the_batchnorms_it_has(tmp_path):
    original = resnet_prototxt(input_size=64, pool5=2, block="bottleneck")
    blobs = weights_for(parse_prototxt(original), seed=22)
    text, folded = fold(original, blobs, keep={"bn_conv1", "bn2a_branch1"})
    prototxt = tmp_path / "partly.prototxt"
    prototxt.write_text(text)
    model = write_caffemodel(tmp_path / "partly.caffemodel", parse_prototxt(text), folded)
    conversion = convert_caffe(model, prototxt=prototxt, verify=True)
    assert conversion.report.mapped["bn1.running_mean"].startswith("bn_conv1")
    x = seeded((2, 3, 64, 64), seed=4)
    assert rel(logits(original, blobs, x), run_converted(conversion, x)) <= TOL


def test_a_conv_without_bias_and_without_batchnorm_is_refused(tmp_path):
    """Nothing folded there (no bias to carry a shift): the graph is not a ResNet's conv unit."""
    original = resnet_prototxt(input_size=64, pool5=2, block="basic", widths=(4, 4, 8, 8), conv1_bias=False)
    text = original.replace(
        'layer { name: "bn_conv1" type: "BatchNorm" bottom: "conv1" top: "conv1" batch_norm_param { use_global_stats: true  } }\n', ""
    ).replace('layer { name: "scale_conv1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }\n', "")
    assert "bn_conv1" not in text
    net = parse_prototxt(text)
    blobs = weights_for(net, seed=1)
    prototxt = tmp_path / "n.prototxt"
    prototxt.write_text(text)
    model = write_caffemodel(tmp_path / "n.caffemodel", net, blobs)
    with pytest.raises(ConversionError, match="conv1.*followed by.*BatchNorm"):
        convert_caffe(model, prototxt=prototxt)


def test_a_preactivation_first_block_is_still_read_as_v2(tmp_path):
    """fb.resnet.torch's first block (no pre-activation: its convs read the stem's output, the
    projection meets the sum directly) must not be taken for a folded v1 block: its sum has no ReLU."""
    net = PreActNet(first="none", block="basic", layers=(1, 1, 1, 1), widths=(8, 8, 16, 16))
    text = preact_prototxt(net)
    blobs = weights_for(parse_prototxt(text), seed=5)
    prototxt = tmp_path / "p.prototxt"
    prototxt.write_text(text)
    model = write_caffemodel(tmp_path / "p.caffemodel", parse_prototxt(text), blobs)
    conversion = convert_caffe(model, prototxt=prototxt, verify=True)
    assert conversion.spec.residual == "v2"
    x = seeded((2, 3, net.input_size, net.input_size), seed=6)
    assert rel(logits(text, blobs, x, output="classifier"), run_converted(conversion, x)) <= TOL


def fold_into_scale(text: str, blobs: dict) -> tuple[str, dict]:
    """The net with each BatchNorm's statistics folded into the Scale after it (the BatchNorm layer
    removed): gamma' = gamma / sqrt(var + eps), beta' = beta - mean * gamma'."""
    net = parse_prototxt(text)
    out = {name: [np.asarray(b) for b in arrays] for name, arrays in blobs.items()}
    dropped = set()
    for i, layer in enumerate(net.layer):
        if layer.type != "BatchNorm":
            continue
        scale = net.layer[i + 1]
        assert scale.type == "Scale" and scale.bottom[0] == layer.bottom[0]
        mean, var, factor = (np.asarray(b, np.float64).reshape(-1) for b in blobs[layer.name])
        mean, var = mean / factor[0], var / factor[0]
        eps = layer.batch_norm_param.eps if layer.batch_norm_param.HasField("eps") else 1e-5
        gamma, beta = (np.asarray(b, np.float64) for b in blobs[scale.name])
        k = gamma / np.sqrt(var + eps)
        out[scale.name] = [k.astype(np.float32), (beta - mean * k).astype(np.float32)]
        dropped.add(layer.name)
        out.pop(layer.name)
    kept = [layer for layer in net.layer if layer.name not in dropped]
    del net.layer[:]
    net.layer.extend(kept)
    from google.protobuf import text_format

    return text_format.MessageToString(net), out


def test_batchnorm_statistics_folded_into_the_scale(tmp_path):
    """conv -> Scale (no BatchNorm) -> ReLU: the Scale carries the normalisation; exact."""
    original = resnet_prototxt(input_size=64, pool5=2, block="bottleneck")
    blobs = weights_for(parse_prototxt(original), seed=23)
    text, folded = fold_into_scale(original, blobs)
    assert "BatchNorm" not in text and "Scale" in text
    prototxt = tmp_path / "scale_only.prototxt"
    prototxt.write_text(text)
    model = write_caffemodel(tmp_path / "scale_only.caffemodel", parse_prototxt(text), folded)
    conversion = convert_caffe(model, prototxt=prototxt, verify=True)
    assert any("followed by a Scale with no BatchNorm" in note for note in conversion.report.notes)
    assert conversion.report.mapped["bn1.weight"].startswith("scale_conv1")
    x = seeded((2, 3, 64, 64), seed=5)
    ours = run_converted(conversion, x)
    assert rel(logits(text, folded, x), ours) <= TOL
    assert rel(logits(original, blobs, x), ours) <= TOL


def test_a_negative_variance_is_refused_naming_the_source_blob(tmp_path):
    """A damaged snapshot: a BatchNorm variance below zero makes every output NaN; the refusal names
    the reference tensor and the Caffe blobs it came from, instead of a NaN parity check."""
    text = resnet_prototxt(input_size=64, pool5=2)
    net = parse_prototxt(text)
    blobs = weights_for(net, seed=24)
    blobs["bn2a_branch2b"][1] = -np.abs(blobs["bn2a_branch2b"][1])
    prototxt = tmp_path / "n.prototxt"
    prototxt.write_text(text)
    model = write_caffemodel(tmp_path / "n.caffemodel", net, blobs)
    with pytest.raises(ConversionError, match=r"negative BatchNorm variance: layer1\.0\.bn2\.running_var .*bn2a_branch2b\.blobs\[1\]"):
        convert_caffe(model, prototxt=prototxt)
