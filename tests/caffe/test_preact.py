"""Issue 17 part 3: pre-activation (v2) ResNets written in Caffe.

Each net is written by the test (tests/caffe/preactnets.py), converted, and the converted model is
compared with two float64 forwards computed apart from the converter: the Caffe interpreter on the
prototxt, and a torch.nn.functional forward written from the net's description.  Wrong readings
(the projection from the raw input instead of the pre-activated one, no final ReLU) are shown to
move the numbers far beyond the tolerance, and the layout the reference cannot hold is refused.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from resnet_port.converters.caffe import convert_caffe, parse_prototxt, write_caffemodel
from resnet_port.converters.caffe.cli import main
from resnet_port.converters.common import run_converted
from resnet_port.errors import ConversionError
from tests.caffe.netgen import weights_for
from tests.caffe.preactnets import PreActNet, preact_forward, preact_prototxt
from tests.caffe.wildnets import logits, rel, seeded

TOL = 1e-5
WRONG = 1e-3  # a wrong reading moves the logits at least this much (relative to the largest)


def _write(tmp_path, net: PreActNet, seed: int = 0, name: str = "preact"):
    text = preact_prototxt(net)
    parsed = parse_prototxt(text)
    blobs = weights_for(parsed, seed=seed)
    (tmp_path / f"{name}.prototxt").write_text(text)
    model = write_caffemodel(tmp_path / f"{name}.caffemodel", parsed, blobs)
    return text, blobs, model, tmp_path / f"{name}.prototxt"


CASES = {
    "bottleneck": PreActNet(),
    "bottleneck_data_bn_conv1_bias": PreActNet(data_bn=True, conv1_bias=True, eps=2e-5),
    "bottleneck_first_block_without_preact": PreActNet(first="none"),
    "bottleneck_stride_in_1x1_data_bn_no_scale": PreActNet(stride_in="1x1", data_bn=True, data_scale=False),
    "basic": PreActNet(block="basic", layers=(2, 1, 2, 1), widths=(8, 8, 16, 16)),
    "basic_data_bn_conv1_bias_first_none": PreActNet(block="basic", layers=(1, 1, 1, 1), data_bn=True, conv1_bias=True, first="none"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_preact_resnet_converts_exactly(case, tmp_path):
    net = CASES[case]
    text, blobs, model, prototxt = _write(tmp_path, net, seed=7)
    conversion = convert_caffe(model, prototxt=prototxt, verify=True)
    spec = conversion.spec
    assert spec.residual == "v2"
    assert spec.block == net.block
    assert spec.layers == net.layers
    assert ("stem" in spec.conv_bias) == net.conv1_bias
    assert (spec.input_bn != "none") == net.data_bn
    x = seeded((2, 3, net.input_size, net.input_size), seed=1)
    ours = run_converted(conversion, x)
    interpreted = logits(text, blobs, x, output="classifier")
    functional = preact_forward(net, blobs, x)
    # The two float64 referees agree with each other (so neither is the converter's echo) ...
    assert rel(functional, interpreted) < 1e-10
    # ... and the float32 port agrees with both.
    assert rel(interpreted, ours) < TOL
    assert conversion.metadata.verification["max_rel_diff"] < TOL
    # Wrong readings move the numbers: the projection from the raw input, or no final ReLU.
    assert rel(functional, preact_forward(net, blobs, x, final_relu=False)) > WRONG
    if net.first != "none":
        assert rel(functional, preact_forward(net, blobs, x, projection="raw")) > WRONG


def test_first_block_without_preact_reads_the_stem_output(tmp_path):
    """fb.resnet.torch's first block: no BN-ReLU of its own; the port's bn1 is the identity."""
    net = PreActNet(first="none")
    _, _, model, prototxt = _write(tmp_path, net)
    conversion = convert_caffe(model, prototxt=prototxt)
    sd = conversion.state_dict
    assert np.all(sd["layer1.0.bn1.running_mean"].numpy() == 0)
    assert np.allclose(sd["layer1.0.bn1.running_var"].numpy() + conversion.spec.bn_eps, 1.0, atol=1e-7)
    assert np.all(sd["layer1.0.bn1.weight"].numpy() == 1) and np.all(sd["layer1.0.bn1.bias"].numpy() == 0)
    assert any("res1_conv1" in note and "identity" in note for note in conversion.report.notes)


def test_data_bn_with_scale_is_folded_and_mapped(tmp_path):
    net = PreActNet(data_bn=True, conv1_bias=True)
    _, blobs, model, prototxt = _write(tmp_path, net, seed=2)
    conversion = convert_caffe(model, prototxt=prototxt)
    assert conversion.spec.input_bn == "affine_free"  # the learnt gamma/beta folded exactly
    assert "data_bn.running_mean" in conversion.state_dict
    mapped = conversion.report.mapped
    assert "data_scale.blobs[0]" in mapped["data_bn.running_mean"]
    assert mapped["final_bn.weight"] == "final_scale.blobs[0]"
    assert mapped["layer2.0.downsample.0.weight"] == "res2_match_conv.blobs[0]"
    assert mapped["layer2.0.bn1.weight"] == "res2_scale.blobs[0]"  # the pre-activation of res2


def test_projection_from_the_raw_input_is_refused_with_one_line(tmp_path, capsys):
    net = PreActNet(projection="raw")
    _, _, model, prototxt = _write(tmp_path, net)
    with pytest.raises(ConversionError, match="raw input") as info:
        convert_caffe(model, prototxt=prototxt)
    assert "res1_match_conv" in str(info.value) and "\n" not in str(info.value)
    code = main([str(model), "--prototxt", str(prototxt), "-o", str(tmp_path / "o.pth")])
    err = capsys.readouterr().err
    assert code == 2 and "raw input" in err and "Traceback" not in err
    assert not (tmp_path / "o.pth").exists()


def test_depth_269_layout(tmp_path):
    """Stages 3, 30, 48, 8 (ResNet-269 v2), narrow so that it runs in seconds."""
    net = PreActNet(layers=(3, 30, 48, 8), widths=(2, 4, 4, 8), stem_width=8, data_bn=True, conv1_bias=True)
    text, blobs, model, prototxt = _write(tmp_path, net, seed=5)
    conversion = convert_caffe(model, prototxt=prototxt, verify=True)
    assert conversion.spec.layers == (3, 30, 48, 8) and conversion.spec.residual == "v2"
    x = seeded((1, 3, 32, 32), seed=4)
    ours = run_converted(conversion, x)
    assert rel(preact_forward(net, blobs, x), ours) < TOL
    assert rel(logits(text, blobs, x, output="classifier"), ours) < TOL


def test_v2_block_followed_by_a_relu_is_refused(tmp_path):
    net = PreActNet()
    text = preact_prototxt(net).replace(
        'top: "res2_eletwise" }\n', 'top: "res2_eletwise" }\nlayer { name: "res2_out_relu" type: "ReLU" bottom: "res2_eletwise" top: "res2_eletwise" }\n'
    )
    parsed = parse_prototxt(text)
    model = write_caffemodel(tmp_path / "m.caffemodel", parsed, weights_for(parsed))
    with pytest.raises(ConversionError, match="res2_eletwise.*ReLU"):
        convert_caffe(model)


def test_final_bn_without_relu_is_refused(tmp_path):
    net = PreActNet()
    text = preact_prototxt(net).replace('layer { name: "final_relu" type: "ReLU" bottom: "final" top: "final"  }\n', "")
    assert "final_relu" not in text
    parsed = parse_prototxt(text)
    model = write_caffemodel(tmp_path / "m.caffemodel", parsed, weights_for(parsed))
    with pytest.raises(ConversionError, match="final_bn.*ReLU"):
        convert_caffe(model)


def test_no_preact_block_after_the_first_is_refused(tmp_path):
    """Only the stem's output is non-negative; a later block without BN-ReLU has no reference form."""
    net = PreActNet()
    text = preact_prototxt(net)
    # res2 (stage 2's first block, projecting): drop its pre-activation; body and projection read the raw sum.
    for name in ("res2_bn", "res2_scale", "res2_relu"):
        start = text.index(f'layer {{ name: "{name}"')
        text = text[:start] + text[text.index("\n", start) + 1 :]
    text = text.replace('bottom: "res2_pre"', 'bottom: "res1_eletwise"')
    parsed = parse_prototxt(text)
    model = write_caffemodel(tmp_path / "m.caffemodel", parsed, weights_for(parsed))
    with pytest.raises(ConversionError, match="no pre-activation"):
        convert_caffe(model)


def test_spec_dataclass_is_v2_with_final_bn(tmp_path):
    net = dataclasses.replace(CASES["basic"])
    _, _, model, prototxt = _write(tmp_path, net)
    conversion = convert_caffe(model, prototxt=prototxt)
    assert "final_bn.running_var" in conversion.state_dict
    assert "layer1.0.downsample.0.weight" not in conversion.state_dict  # 8 -> 8 channels: identity
