"""Forms of the same ResNet that other exporters write: Caffe2's and older converters' ``Sum`` for
the residual sum, and a ``Softmax`` after the logits (Caffe2's ONNX-zoo ResNet-50 ends with
``gpu_0/softmax_1``).  Each graph is written by the test and run by onnxruntime; the converted model
must compute the logits onnxruntime computes before the Softmax.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from resnet_port.converters.common import run_converted
from resnet_port.converters.onnx import convert_onnx
from resnet_port.converters.onnx.cli import main as convert_onnx_cli
from resnet_port.converters.onnx.interpret import run_graph
from resnet_port.converters.onnx.graph import read_graph
from tests.onnx.conftest import TOLERANCE, rel_diff, run_onnxruntime

pytestmark = pytest.mark.peer


def _residual_sums(nodes, inits):
    for i, node in enumerate(nodes):
        if node.op_type == "Add" and node.name.startswith("plus"):
            nodes[i] = helper.make_node("Sum", list(node.input), list(node.output), name=node.name)


def _softmax(nodes, inits):
    nodes.append(helper.make_node("Softmax", [nodes[-1].output[0]], ["prob"], name="prob", axis=1))


@pytest.mark.parametrize("opset", [8, 13])
@pytest.mark.parametrize("residual", ["v1", "v2"])
def test_residual_sum_written_as_sum(build, opset, residual):
    net = build(depth=18, residual=residual, opset=opset, mutate=_residual_sums)
    assert sum(n.op_type == "Sum" for n in onnx.load(str(net.path)).graph.node) == 8
    conversion = convert_onnx(net.path)
    assert rel_diff(net.logits, run_converted(conversion, net.x)) <= TOLERANCE


def _logits_before_softmax(path, x):
    """onnxruntime's value of the Softmax's input, made a graph output of a copy of the model."""
    model = onnx.load(str(path))
    softmax = next(n for n in model.graph.node if n.op_type == "Softmax")
    model.graph.output.insert(0, helper.make_tensor_value_info(softmax.input[0], onnx.TensorProto.FLOAT, None))
    copy = path.with_name("with_logits.onnx")
    onnx.save(model, str(copy))
    return run_onnxruntime(copy, x)


@pytest.mark.parametrize("opset", [9, 13])
def test_a_trailing_softmax_is_dropped_and_the_logits_are_checked(build, tmp_path, opset, capsys):
    net = build(depth=50, residual="v1", opset=opset, mutate=lambda n, i: (_residual_sums(n, i), _softmax(n, i)))
    conversion = convert_onnx(net.path)
    ours = run_converted(conversion, net.x)
    logits = _logits_before_softmax(net.path, net.x)
    assert rel_diff(logits, ours) <= TOLERANCE
    # ... and the file's own output is the softmax of those logits (the Softmax really was there).
    assert np.allclose(net.logits, np.asarray(ours.softmax(-1)), atol=1e-5)
    assert any("Softmax" in item["reason"] for item in conversion.report.skipped)
    assert conversion.metadata.source.details["output"] == next(
        n.input[0] for n in onnx.load(str(net.path)).graph.node if n.op_type == "Softmax"
    )
    # The torch node evaluator (the referee without onnxruntime) returns the same tensor by name.
    graph = read_graph(net.path)
    assert rel_diff(logits, run_graph(graph, net.x, conversion.metadata.source.details["output"])) <= TOLERANCE
    # The CLI's check compares logits with logits: it passes, and says so.
    out = tmp_path / "o.pth"
    assert convert_onnx_cli([str(net.path), "-o", str(out)]) == 0
    assert "Softmax" in capsys.readouterr().out and out.exists()


def test_a_cast_to_float32_passes_through(build):
    """Some exporters cast the (already float32) input to float32: a no-op node."""

    def cast_input(nodes, inits):
        nodes.insert(0, helper.make_node("Cast", ["data"], ["data_f32"], name="cast_in", to=onnx.TensorProto.FLOAT))
        for node in nodes[1:]:
            for i, name in enumerate(node.input):
                if name == "data":
                    node.input[i] = "data_f32"

    net = build(depth=18, residual="v1", mutate=cast_input)
    assert rel_diff(net.logits, run_converted(convert_onnx(net.path), net.x)) <= TOLERANCE


def test_a_float16_export_is_refused_naming_the_cast(build, tmp_path, capsys):
    """onnxconverter-common's float16 conversion (keep_io_types): Cast to float16 after the input."""
    from tests.onnx.conftest import refuse

    def to_float16(nodes, inits):
        for i, tensor in enumerate(inits):
            array = onnx.numpy_helper.to_array(tensor)
            if array.dtype == np.float32:
                inits[i] = onnx.numpy_helper.from_array(array.astype(np.float16), tensor.name)
        nodes.insert(0, helper.make_node("Cast", ["data"], ["data16"], name="cast_in", to=onnx.TensorProto.FLOAT16))
        for node in nodes[1:]:
            for i, name in enumerate(node.input):
                if name == "data":
                    node.input[i] = "data16"

    net = build(depth=18, residual="v1", mutate=to_float16, run=False)
    refuse(net.path, tmp_path, capsys, "Cast 'cast_in'", "casts to float16", "convert the float32 export")
