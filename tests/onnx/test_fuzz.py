"""Bounded fuzzing of the ONNX reader: damaged files give a ConversionError (exit 2), nothing else."""

from __future__ import annotations

import random

import numpy as np
import pytest
from onnx import numpy_helper

from resnet_port.converters.onnx import convert_onnx
from resnet_port.errors import ConversionError

pytestmark = pytest.mark.fuzz


def test_random_byte_damage_is_refused_cleanly(build, tmp_path):
    data = build(depth=18, residual="v2", run=False).path.read_bytes()
    rng = random.Random(1234)
    damaged = tmp_path / "damaged.onnx"
    outcomes = {"refused": 0, "converted": 0}
    for _ in range(40):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        damaged.write_bytes(bytes(mutated))
        try:
            convert_onnx(damaged)  # damage inside a weight's bytes still converts: that is fine
            outcomes["converted"] += 1
        except ConversionError:
            outcomes["refused"] += 1
    assert outcomes["refused"] > 0


@pytest.mark.parametrize(
    "damage,message",
    [
        ("conv_weight_3d", "expected 4 dims"),
        ("bn_short_var", "shapes differ"),
        ("int_weight", "expected floats"),
        ("fc_features", "features"),
    ],
)
def test_damaged_tensors_are_named(build, tmp_path, damage, message):
    def mutate(nodes, inits):
        by_name = {t.name: t for t in inits}

        def replace(name, array):
            by_name[name].CopyFrom(numpy_helper.from_array(array, name))

        conv = next(n for n in nodes if n.op_type == "Conv")
        bn = next(n for n in nodes if n.op_type == "BatchNormalization")
        if damage == "conv_weight_3d":
            replace(conv.input[1], numpy_helper.to_array(by_name[conv.input[1]])[0])
        elif damage == "bn_short_var":
            replace(bn.input[4], numpy_helper.to_array(by_name[bn.input[4]])[:-1].copy())
        elif damage == "int_weight":
            replace(conv.input[1], numpy_helper.to_array(by_name[conv.input[1]]).astype(np.int32))
        elif damage == "fc_features":
            replace("fc_weight", np.ones((10, 5), np.float32))

    net = build(depth=18, mutate=mutate, run=False)
    with pytest.raises(ConversionError, match=message):
        convert_onnx(net.path)


def test_names_that_are_not_utf8_are_read_as_text(build, tmp_path):
    """Found by the fuzzer: protobuf hands back bytes for a string that is not UTF-8.  Node, tensor and
    initializer names are read as text (undecodable bytes replaced), so a damaged name ends in a one-line
    ConversionError naming it, never a TypeError."""
    net = build(depth=18, run=False)
    data = bytearray(net.path.read_bytes())
    import onnx

    first_output = onnx.load(str(net.path)).graph.node[0].output[0].encode()
    position = data.find(first_output)
    assert position >= 0
    data[position] = 0xFF  # the first copy: the producing node's output name
    damaged = tmp_path / "names.onnx"
    damaged.write_bytes(bytes(data))
    with pytest.raises(ConversionError) as caught:
        convert_onnx(damaged)
    assert "\n" not in str(caught.value) and "\ufffd" in str(caught.value)
