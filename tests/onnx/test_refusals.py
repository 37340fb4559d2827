"""What convert-onnx refuses: graphs that are not ResNets, and files that are not ONNX.

Each refusal is one line naming the file and the first node that does not fit; the CLI exits 2 and
leaves no output file.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from resnet_port.converters.onnx import convert_onnx
from resnet_port.converters.onnx.graph import Node, read_graph
from resnet_port.converters.onnx.ops import onnx_op, parse_node
from resnet_port.errors import ConversionError
from tests.onnx.conftest import refuse


def vgg_like(path) -> None:
    """conv-ReLU-conv-ReLU-pool-Gemm: a classifier, not a ResNet (no BN, no residual)."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.standard_normal((8, 8, 3, 3)).astype(np.float32), "w2"),
        numpy_helper.from_array(rng.standard_normal((10, 8)).astype(np.float32), "fc_w"),
        numpy_helper.from_array(rng.standard_normal(10).astype(np.float32), "fc_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["data", "w1"], ["c1"], name="conv_a", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu_a"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv_b", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu_b"),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "vgg",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
        inits,
    )
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())


def test_a_plain_cnn_is_refused_at_its_first_misfit(tmp_path, capsys):
    # conv-ReLU is a stem whose BN was folded (a fused export); the first misfit is the pool where
    # the residual block's body should go on (no residual Add anywhere).
    path = tmp_path / "vgg.onnx"
    vgg_like(path)
    err = refuse(path, tmp_path, capsys, "node #4 GlobalAveragePool 'pool'", "residual block body")
    assert "conv_b" not in err


def _first(nodes, op):
    return next(n for n in nodes if n.op_type == op)


def test_an_unknown_op_inside_a_block_is_named(build, tmp_path, capsys):
    def insert_sigmoid(nodes, inits):
        relu = [n for n in nodes if n.op_type == "Relu"][2]  # inside the first block
        index = nodes.index(relu)
        out = relu.output[0]
        relu.output[0] = out + "_pre"
        nodes.insert(index + 1, helper.make_node("Sigmoid", [out + "_pre"], [out], name="gate0"))

    net = build(depth=18, mutate=insert_sigmoid)
    refuse(net.path, tmp_path, capsys, "Sigmoid 'gate0'", "op type 'Sigmoid'")


def test_a_block_without_its_residual_sum_is_refused(build, tmp_path, capsys):
    def drop_residual(nodes, inits):
        add = _first(nodes, "Add")
        add.input[0] = add.input[1]  # body + body: the block input is no longer added

    net = build(depth=18, mutate=drop_residual)
    refuse(net.path, tmp_path, capsys, "Add 'plus", "residual Add")


def test_a_softmax_that_is_not_the_end_or_not_over_the_classes_is_refused(build, tmp_path, capsys):
    """A trailing Softmax over the classes is converted (tests/onnx/test_exporter_forms.py); one whose
    probabilities something else reads, or one over another axis, is not a ResNet head."""

    def read_the_probabilities(nodes, inits):
        nodes.append(helper.make_node("Softmax", [nodes[-1].output[0]], ["prob"], name="prob", axis=1))
        nodes.append(helper.make_node("Relu", ["prob"], ["after"], name="after_prob"))

    net = build("read", depth=18, residual="v2", mutate=read_the_probabilities, run=False)
    refuse(net.path, tmp_path, capsys, "Softmax 'prob'", "graph output 'after'")

    def over_the_batch(nodes, inits):
        nodes.append(helper.make_node("Softmax", [nodes[-1].output[0]], ["prob"], name="prob", axis=0))

    net = build("batch", depth=18, residual="v2", mutate=over_the_batch, run=False)
    refuse(net.path, tmp_path, capsys, "Softmax 'prob'", "axis 0")


def test_a_grouped_conv_is_refused(build, tmp_path, capsys):
    """ResNeXt's grouped 3x3 is not a ResNet conv: the conv is named by its output (MXNet leaves it unnamed)."""

    def group_the_3x3(nodes, inits):
        convs = [n for n in nodes if n.op_type == "Conv"]
        conv = convs[2]  # layer1.0.conv2 of a bottleneck net (stem, conv1, conv2, ...)
        weights = {t.name: t for t in inits}
        w = numpy_helper.to_array(weights[conv.input[1]])
        weights[conv.input[1]].CopyFrom(
            numpy_helper.from_array(np.ascontiguousarray(w[:, : w.shape[1] // 2]), conv.input[1])
        )
        for attribute in conv.attribute:
            if attribute.name == "group":
                attribute.i = 2

    net = build(depth=50, residual="v1", mutate=group_the_3x3, run=False)
    refuse(net.path, tmp_path, capsys, "(unnamed, output 'conv", "group 2")


def test_a_side_branch_is_named(build, tmp_path, capsys):
    def side_branch(nodes, inits):
        stem_relu = _first(nodes, "Relu")
        nodes.append(helper.make_node("Relu", [stem_relu.output[0]], ["side"], name="side_relu"))

    net = build(depth=18, mutate=side_branch)
    refuse(net.path, tmp_path, capsys, "Relu 'side_relu'")


def test_a_misplaced_stride_is_refused(build, tmp_path, capsys):
    def stride_stage1(nodes, inits):
        conv = [n for n in nodes if n.op_type == "Conv"][1]  # layer1.0.conv1
        for attribute in conv.attribute:
            if attribute.name == "strides":
                attribute.ints[:] = [2, 2]

    net = build(depth=18, mutate=stride_stage1, run=False)
    refuse(net.path, tmp_path, capsys, "stride 2")


def test_per_activation_batch_norm_is_refused(build, tmp_path, capsys):
    """Opset 7's spatial=0 with (C, H, W) parameters (the spec's meaning) is not a per-channel BN.
    (spatial=0 over (C,) parameters, the pre-2020 zoo files, is converted: tests/onnx/test_torch_export.py.)"""

    def spatial0(nodes, inits):
        bn = _first(nodes, "BatchNormalization")
        spatial = next(a for a in bn.attribute if a.name == "spatial")
        spatial.i = 0  # the builder writes spatial=1 below opset 9
        for i, init in enumerate(inits):
            if init.name in bn.input[1:]:
                array = numpy_helper.to_array(init)
                per_activation = np.repeat(array[:, None, None], 16, 1).repeat(16, 2)  # (C, 16, 16)
                inits[i] = numpy_helper.from_array(per_activation.astype(np.float32), init.name)

    net_path = build(depth=18, opset=7, mutate=spatial0, run=False).path
    refuse(net_path, tmp_path, capsys, "spatial=0", "per activation", "BatchNormalization")


@pytest.mark.parametrize("fraction", [0.0, 0.001, 0.3, 0.7, 0.999])
def test_truncated_files_are_refused(build, tmp_path, capsys, fraction):
    net = build(depth=18)
    data = net.path.read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: int(len(data) * fraction)])
    refuse(cut, tmp_path, capsys)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not an onnx model\n",
        bytes(range(256)) * 4,
        b"\x08\x07\x12\x04junk" + b"\xff" * 64,
        b"PK\x03\x04" + b"\x00" * 100,
    ],
)
def test_garbage_files_are_refused(tmp_path, capsys, content):
    path = tmp_path / "garbage.onnx"
    path.write_bytes(content)
    refuse(path, tmp_path, capsys)


def test_missing_file_and_directory(tmp_path, capsys):
    refuse(tmp_path / "absent.onnx", tmp_path, capsys, "no such file")
    folder = tmp_path / "folder.onnx"
    folder.mkdir()
    refuse(folder, tmp_path, capsys)


def test_two_inputs_are_refused(build, tmp_path, capsys):
    net = build(depth=18)
    import onnx

    model = onnx.load(str(net.path))
    model.graph.input.append(helper.make_tensor_value_info("extra", TensorProto.FLOAT, [1]))
    path = tmp_path / "two_inputs.onnx"
    onnx.save(model, str(path))
    refuse(path, tmp_path, capsys, "one image input", "extra")


def test_a_non_float_input_is_refused(build, tmp_path, capsys):
    import onnx

    model = onnx.load(str(build(depth=18, run=False).path))
    model.graph.input[0].type.tensor_type.elem_type = TensorProto.UINT8
    path = tmp_path / "uint8.onnx"
    onnx.save(model, str(path))
    refuse(path, tmp_path, capsys, "UINT8", "expected FLOAT")


def test_registry_refuses_duplicates_and_unknown_types(build):
    with pytest.raises(RuntimeError, match="registered twice"):
        onnx_op("Conv")(lambda node, graph: None)
    graph = read_graph(build(depth=18).path)
    odd = Node(99, "lstm0", "LSTM", "", ("data",), ("y",))
    with pytest.raises(ConversionError, match=r"node #99 LSTM 'lstm0'.*op type 'LSTM'"):
        parse_node(odd, graph)


def test_library_entry_raises_conversion_error(tmp_path):
    path = tmp_path / "vgg.onnx"
    vgg_like(path)
    with pytest.raises(ConversionError, match="GlobalAveragePool .pool."):
        convert_onnx(path)


@pytest.mark.parametrize("op,attrs,fragment", [
    ("BatchNormalization", {"training_mode": 1}, "training_mode=1"),
    ("BatchNormalization", {"is_test": 0}, "is_test=0"),  # opsets 1-6 wrote the mode this way round
    ("Dropout", {"is_test": 0}, "is_test=0"),
])
def test_training_mode_nodes_are_refused(build, tmp_path, capsys, op, attrs, fragment):
    """A node that normalises with batch statistics (or drops units) computes another function at
    inference; the files of the old opsets say so with is_test=0."""

    def set_mode(nodes, inits):
        if op == "Dropout":
            gemm = next(i for i, n in enumerate(nodes) if n.op_type == "Gemm")
            src = nodes[gemm].input[0]
            nodes.insert(gemm, helper.make_node("Dropout", [src], ["dropped"], name="drop0"))
            nodes[gemm + 1].input[0] = "dropped"
        target = next(n for n in nodes if n.op_type == op)
        for key, value in attrs.items():
            target.attribute.append(helper.make_attribute(key, value))

    net = build(depth=18, mutate=set_mode, run=False)
    refuse(net.path, tmp_path, capsys, fragment)
