"""Issue 17 part 4 (the layer forms converters write): a bias-less Scale followed by a ``Bias`` layer,
a BatchNorm whose Scale is folded elsewhere (no Scale at all), and a classifier that reads a spatial
map (refused in one line: the reference classifier cannot hold it).

The referee is the float64 interpreter on a BVLC net the test itself states is equivalent (the
Scale with bias_term written back), so a converter that dropped or misplaced the Bias fails.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from resnet_port.converters.caffe import CaffeInterpreter, convert_caffe, parse_prototxt, write_caffemodel
from resnet_port.converters.caffe.cli import main
from resnet_port.converters.common import run_converted
from resnet_port.errors import ConversionError
from tests.caffe.netgen import resnet_prototxt, weights_for
from tests.caffe.preactnets import PreActNet, preact_prototxt
from tests.caffe.wildnets import logits, rel, seeded

TOL = 1e-5
WRONG = 1e-3


def _split_scale_bias(text: str, blobs: dict, every: int = 1) -> tuple[str, dict]:
    """Every ``every``-th ``Scale(bias_term: true)`` -> ``Scale(bias_term: false)`` + ``Bias``, as
    some converters write them; the blobs split the same way."""
    blobs = {k: list(v) for k, v in blobs.items()}
    count = 0

    def edit(match: re.Match) -> str:
        nonlocal count
        count += 1
        name, bottom, top = match.group(1), match.group(2), match.group(3)
        if (count - 1) % every:
            return match.group(0)
        gamma, beta = blobs[name]
        blobs[name] = [gamma]
        blobs[f"{name}_bias"] = [beta]
        return (
            f'layer {{ name: "{name}" type: "Scale" bottom: "{bottom}" top: "{top}" scale_param {{ bias_term: false }} }}\n'
            f'layer {{ name: "{name}_bias" type: "Bias" bottom: "{top}" top: "{top}" bias_param {{ axis: 1 num_axes: 1 }} }}'
        )

    out = re.sub(
        r'layer \{ name: "([^"]+)" type: "Scale" bottom: "([^"]+)" top: "([^"]+)" scale_param \{ bias_term: true \} \}', edit, text
    )
    assert count and out != text
    return out, blobs


@pytest.fixture(scope="module")
def v1():
    text = resnet_prototxt()
    return text, weights_for(parse_prototxt(text), seed=11)


@pytest.fixture(scope="module")
def v2():
    net = PreActNet(data_bn=True, conv1_bias=True)
    text = preact_prototxt(net)
    return text, weights_for(parse_prototxt(text), seed=12)


@pytest.mark.parametrize("which, output", [("v1", "fc"), ("v2", "classifier")])
def test_scale_without_bias_then_bias_layer(which, output, v1, v2, tmp_path):
    text, blobs = {"v1": v1, "v2": v2}[which]
    edited, split = _split_scale_bias(text, blobs)
    assert '"Bias"' in edited
    model = write_caffemodel(tmp_path / "m.caffemodel", parse_prototxt(edited), split)
    conversion = convert_caffe(model, verify=True)
    size = 64 if which == "v1" else 32
    x = seeded((2, 3, size, size), seed=3)
    reference = logits(text, blobs, x, output=output)  # the BVLC net with Scale(bias_term: true)
    assert rel(reference, logits(edited, split, x, output=output)) < 1e-12  # the interpreter's Bias agrees
    assert rel(reference, run_converted(conversion, x)) < TOL
    assert conversion.metadata.verification["max_rel_diff"] < TOL
    # The Bias is what moves the numbers if dropped:
    no_beta = {k: ([v[0], np.zeros_like(v[1])] if k in split and f"{k}_bias" in split else v) for k, v in blobs.items()}
    assert rel(reference, logits(text, no_beta, x, output=output)) > WRONG
    # ... and each Bias blob is mapped, as the beta of the BN it follows (the input BN's in its fold).
    mapped = list(conversion.report.mapped.values())
    assert all(any(f"{name}.blobs[0]" in ref for ref in mapped) for name in split if name.endswith("_bias"))


def test_scale_with_bias_then_bias_layer_adds_both(v1, tmp_path):
    text, blobs = v1
    edited = text.replace(
        'layer { name: "scale2a_branch2b" type: "Scale" bottom: "res2a_branch2b" top: "res2a_branch2b" scale_param { bias_term: true } }',
        'layer { name: "scale2a_branch2b" type: "Scale" bottom: "res2a_branch2b" top: "res2a_branch2b" scale_param { bias_term: true } }\n'
        'layer { name: "extra_bias" type: "Bias" bottom: "res2a_branch2b" top: "res2a_branch2b" }',
    )
    assert "extra_bias" in edited
    extra = dict(blobs)
    extra["extra_bias"] = [np.linspace(-0.5, 0.5, blobs["scale2a_branch2b"][1].size).astype(np.float32)]
    model = write_caffemodel(tmp_path / "m.caffemodel", parse_prototxt(edited), extra)
    conversion = convert_caffe(model)
    equivalent = {k: list(v) for k, v in blobs.items()}
    equivalent["scale2a_branch2b"][1] = blobs["scale2a_branch2b"][1] + extra["extra_bias"][0]
    x = seeded((2, 3, 64, 64), seed=5)
    assert rel(logits(text, equivalent, x), run_converted(conversion, x)) < TOL
    assert rel(logits(text, blobs, x), logits(text, equivalent, x)) > WRONG


def _drop_scale(text: str, blobs: dict, names: list[str]) -> tuple[str, dict, dict]:
    """Remove the Scale layers ``names`` (their scale folded elsewhere); also the BVLC-equivalent
    weights of the original net (those Scales set to gamma 1, beta 0)."""
    kept = {k: list(v) for k, v in blobs.items() if k not in names}
    equivalent = {k: list(v) for k, v in blobs.items()}
    for name in names:
        text, n = re.subn(rf'layer \{{ name: "{name}" type: "Scale"[^\n]*\n', "", text)
        assert n == 1, name
        gamma, beta = blobs[name]
        equivalent[name] = [np.ones_like(gamma), np.zeros_like(beta)]
    return text, kept, equivalent


@pytest.mark.parametrize("which, names, output", [
    ("v1", ["scale_conv1", "scale2a_branch2a", "scale2a_branch1", "scale5a_branch2c"], "fc"),
    ("v2", ["data_scale", "res1_scale", "res2_conv2_scale", "final_scale"], "classifier"),
])
def test_batchnorm_without_scale(which, names, output, v1, v2, tmp_path):
    text, blobs = {"v1": v1, "v2": v2}[which]
    edited, kept, equivalent = _drop_scale(text, blobs, names)
    model = write_caffemodel(tmp_path / "m.caffemodel", parse_prototxt(edited), kept)
    conversion = convert_caffe(model, verify=True)
    size = 64 if which == "v1" else 32
    x = seeded((2, 3, size, size), seed=6)
    reference = logits(text, equivalent, x, output=output)
    assert rel(reference, logits(edited, kept, x, output=output)) < 1e-12
    assert rel(reference, run_converted(conversion, x)) < TOL
    assert rel(reference, logits(text, blobs, x, output=output)) > WRONG  # the Scales did matter
    notes = " ".join(conversion.report.notes)
    assert "no Scale layer follows" in notes


def test_bias_directly_after_batchnorm(v1, tmp_path):
    text, blobs = v1
    edited, kept, equivalent = _drop_scale(text, blobs, ["scale2a_branch2a"])
    edited = edited.replace(
        'layer { name: "res2a_branch2a_relu"',
        'layer { name: "bias2a_branch2a" type: "Bias" bottom: "res2a_branch2a" top: "res2a_branch2a" }\n'
        'layer { name: "res2a_branch2a_relu"',
    )
    kept["bias2a_branch2a"] = [blobs["scale2a_branch2a"][1]]
    equivalent["scale2a_branch2a"][1] = blobs["scale2a_branch2a"][1]
    model = write_caffemodel(tmp_path / "m.caffemodel", parse_prototxt(edited), kept)
    conversion = convert_caffe(model)
    x = seeded((2, 3, 64, 64), seed=8)
    assert rel(logits(text, equivalent, x), run_converted(conversion, x)) < TOL
    assert conversion.report.mapped["layer1.0.bn1.bias"] == "bias2a_branch2a.blobs[0]"


def test_classifier_on_a_spatial_map_is_refused_in_one_line(tmp_path, capsys):
    # pool5 kernel 1 on the final 2x2 map: the InnerProduct reads 128 channels x 4 positions.
    text = resnet_prototxt(pool5=1)
    net = parse_prototxt(text)
    blobs = weights_for(net, seed=2)
    c = blobs["fc"][0].shape[1]
    blobs["fc"][0] = np.random.default_rng(0).standard_normal((10, c * 4)).astype(np.float32) * 0.05
    x = seeded((1, 3, 64, 64))
    out = CaffeInterpreter(net, blobs).forward({"data": x})["fc"]  # a net Caffe runs
    assert tuple(out.shape) == (1, 10)
    model = write_caffemodel(tmp_path / "m.caffemodel", net, blobs)
    with pytest.raises(ConversionError, match=rf"{c * 4} inputs = {c} channels x 4 positions") as info:
        convert_caffe(model)
    assert "\n" not in str(info.value) and "pool5" in str(info.value)
    target = tmp_path / "o.pth"
    code = main([str(model), "-o", str(target)])
    err = capsys.readouterr().err
    assert code == 2 and "positions" in err and "Traceback" not in err and not target.exists()
