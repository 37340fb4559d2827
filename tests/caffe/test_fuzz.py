"""Bounded fuzzing of the caffemodel reader and the conversion: any damage to a valid file ends in a
one-line `InputError` (CLI exit 2), never another exception."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resnet_port.converters.caffe import convert_caffe
from resnet_port.errors import InputError


@pytest.mark.fuzz
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_damaged_caffemodels_fail_cleanly(tiny, tmp_path_factory, data):
    original = tiny["model"].read_bytes()
    raw = bytearray(original)
    for _ in range(data.draw(st.integers(1, 6))):
        position = data.draw(st.integers(0, len(raw) - 1))
        raw[position] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    path = tmp_path_factory.mktemp("fuzz") / "damaged.caffemodel"
    path.write_bytes(bytes(raw))
    try:
        convert_caffe(path)
    except InputError as exc:
        assert "\n" not in str(exc)


def test_layer_names_with_braces_convert(tiny, tmp_path):
    """Found by the fuzzer: layer names are the file's text, so a BatchNorm named ``bn{0}`` must not reach
    a format template.  The renamed net converts to the same weights, and the report names the blobs."""
    from resnet_port.converters.caffe import parse_prototxt, write_caffemodel
    from tests.caffe.netgen import weights_for

    text = tiny["text"].replace('"bn_conv1"', '"bn{conv1}"')
    assert text != tiny["text"]
    net = parse_prototxt(text)
    path = tmp_path / "braces.caffemodel"
    write_caffemodel(path, net, weights_for(net, seed=1))
    original, renamed = convert_caffe(tiny["model"]), convert_caffe(path)
    assert all(torch.equal(original.state_dict[k], renamed.state_dict[k]) for k in original.state_dict)
    assert renamed.report.mapped["bn1.running_mean"].startswith("bn{conv1}")


@pytest.mark.parametrize("text", [b"res2a_branch2b", b"tiny"])
def test_text_that_is_not_utf8_is_one_error(tiny, tmp_path, text):
    """Found by CI's fuzz run: protobuf hands back a string that is not UTF-8 as bytes, and a later use
    (a layer's name, a top, the net's name or its legacy ``input`` header) raised UnicodeDecodeError.
    Every string is read once, right after parsing: one InputError naming the file."""
    raw = tiny["model"].read_bytes()
    assert text in raw
    damaged = raw.replace(text, b"\xb8" + text[1:], 1)
    path = tmp_path / "damaged.caffemodel"
    path.write_bytes(damaged)
    with pytest.raises(InputError, match="not UTF-8 text") as info:
        convert_caffe(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
