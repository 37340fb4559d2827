"""convert_onnx against onnxruntime on ResNets written with onnx.helper (conftest.build_resnet_onnx).

Each pitfall has a test that converts correctly, matches onnxruntime, and then applies the wrong
handling to the converted result and shows the logits move beyond tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from resnet_port.converters.common import Conversion, run_converted
from resnet_port.converters.onnx import convert_onnx
from resnet_port.errors import ConversionError
from tests.onnx.conftest import BLOCKS, TOLERANCE, rel_diff


def assert_matches(net, conversion: Conversion) -> None:
    ours = run_converted(conversion, net.x)
    assert rel_diff(net.logits, ours) <= TOLERANCE
    assert np.array_equal(net.logits.argmax(1), ours.numpy().argmax(1))


def with_changes(conversion: Conversion, spec_changes: dict | None = None, tensors: dict | None = None) -> Conversion:
    """The same conversion with a wrong handling applied (spec fields or tensors replaced)."""
    spec = conversion.spec.replace(**(spec_changes or {}))
    state = dict(conversion.state_dict)
    state.update(tensors or {})
    return Conversion(spec, state, conversion.metadata, conversion.report)


@pytest.mark.parametrize("residual", ["v1", "v2"])
@pytest.mark.parametrize("depth", sorted(BLOCKS))
def test_every_depth_matches_onnxruntime(build, depth, residual):
    net = build(depth=depth, residual=residual)
    conversion = convert_onnx(net.path)
    kind, layers = BLOCKS[depth]
    spec = conversion.spec
    assert (spec.block, spec.layers, spec.residual) == (kind, layers, residual)
    assert spec.input_bn == ("affine_free" if residual == "v2" else "none")
    assert spec.widths == (4, 8, 8, 16) and spec.num_classes == 10 and spec.stem_width == 8
    assert_matches(net, conversion)


@pytest.mark.slow
@pytest.mark.parametrize("depth,residual", [(18, "v1"), (50, "v2")])  # every depth: tests/onnx/test_peer_mxnet.py
def test_gluon_sizes_are_named_as_gluon_archs(build, depth, residual):
    """At Gluon's widths the spec is a registered arch, named with Gluon's name (resnet18_v1, not resnet18)."""
    net = build(depth=depth, residual=residual, widths=(64, 128, 256, 512), stem_width=64, num_classes=1000, batch=1)
    conversion = convert_onnx(net.path)
    assert conversion.metadata.arch == f"resnet{depth}_{residual}"
    if depth == 50:
        assert conversion.spec.stride_in == ("1x1" if residual == "v1" else "3x3")
        assert conversion.spec.conv_bias == (("conv1", "conv3") if residual == "v1" else ())
    assert_matches(net, conversion)


def test_eps_is_read_from_each_node(build):
    # Small variances make eps matter; three different eps values spread over the BNs.
    choices = (1e-3, 2e-5, 1e-5)
    net = build(depth=50, residual="v1", eps=lambda i: choices[i % 3], var_range=(1e-4, 1e-3))
    conversion = convert_onnx(net.path)
    assert_matches(net, conversion)
    spec = conversion.spec
    assert spec.eps_for("bn1") == pytest.approx(1e-3)  # the stem BN is the first node
    assert spec.eps_for("layer1.0.bn1") == pytest.approx(2e-5)
    assert spec.eps_for("layer1.0.bn2") == pytest.approx(1e-5)
    # Wrong: one eps for every BN (the usual default), ignoring the nodes' own values.
    wrong = with_changes(conversion, {"bn_eps": 1e-5, "bn_eps_overrides": ()})
    assert rel_diff(net.logits, run_converted(wrong, net.x)) > 10 * TOLERANCE


def test_eps_float32_value_is_read_as_the_decimal_written(build):
    net = build(depth=18, residual="v2", eps=1e-5)
    spec = convert_onnx(net.path).spec
    assert spec.bn_eps == 1e-5 and spec.bn_eps_overrides == ()  # ONNX stores 9.9999997e-06


def test_conv_biases_are_kept(build):
    # Gluon V1 bottlenecks: biases on conv1 and conv3; here also on the stem and the projections.
    net = build(depth=50, residual="v1", bias_roles=("stem", "conv1", "conv3", "downsample"))
    conversion = convert_onnx(net.path)
    assert conversion.spec.conv_bias == ("conv1", "conv3", "downsample", "stem")
    assert_matches(net, conversion)
    # Wrong: drop the conv biases (zeros in their place).
    zeros = {k: torch.zeros_like(v) for k, v in conversion.state_dict.items() if k.endswith(".bias") and "conv" in k}
    zeros.update({k: torch.zeros_like(v) for k, v in conversion.state_dict.items() if k.endswith("downsample.0.bias")})
    assert rel_diff(net.logits, run_converted(with_changes(conversion, tensors=zeros), net.x)) > 10 * TOLERANCE


def test_input_bn_stored_gamma_beta_reproduce_onnxruntime(build):
    """MXNet's exporter writes Gluon V2's data-BN gamma/beta although fix_gamma ignores them.

    The ONNX file is the source, so the port must equal onnxruntime; MXNet's reading (gamma 1,
    beta 0: the raw statistics in an affine-free BN) is the wrong handling and must move the logits.
    """
    gamma = np.array([0.3, 2.5, 1.7], np.float32)
    beta = np.array([0.2, -0.4, 0.1], np.float32)
    net = build(depth=18, residual="v2", data_gamma=gamma, data_beta=beta)
    conversion = convert_onnx(net.path)
    assert conversion.spec.input_bn == "affine_free"
    assert any("folded" in note for note in conversion.report.notes)
    assert_matches(net, conversion)
    import onnx
    from onnx import numpy_helper

    stored = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(net.path)).graph.initializer}
    bn0 = net.bn_names[0]
    mxnet_reading = {
        "data_bn.running_mean": torch.tensor(stored[f"{bn0}_running_mean"]),
        "data_bn.running_var": torch.tensor(stored[f"{bn0}_running_var"]),
    }
    wrong = with_changes(conversion, {"bn_eps_overrides": ()}, mxnet_reading)
    assert rel_diff(net.logits, run_converted(wrong, net.x)) > 10 * TOLERANCE


def test_input_bn_with_unit_gamma_maps_statistics_unchanged(build):
    net = build(depth=18, residual="v2")
    conversion = convert_onnx(net.path)
    import onnx
    from onnx import numpy_helper

    stored = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(net.path)).graph.initializer}
    bn0 = net.bn_names[0]
    assert np.array_equal(conversion.state_dict["data_bn.running_var"].numpy(), stored[f"{bn0}_running_var"])
    assert conversion.report.mapped["data_bn.running_mean"] == f"{bn0}_running_mean"
    assert_matches(net, conversion)
    # Wrong: drop V2's input BN (as if the net started at the stem conv).
    state = {k: v for k, v in conversion.state_dict.items() if not k.startswith("data_bn.")}
    wrong = Conversion(conversion.spec.replace(input_bn="none"), state, conversion.metadata, conversion.report)
    assert rel_diff(net.logits, run_converted(wrong, net.x)) > 10 * TOLERANCE


def test_input_bn_negative_gamma_is_folded_into_the_stem_conv(build):
    """A negative stored gamma (the fixture's variant is (0.01, 5, -3)) flips its channel: the sign
    goes into conv1's input channels, where zero padding is unaffected by it."""
    net = build(
        depth=18,
        residual="v2",
        data_gamma=np.array([0.01, 5.0, -3.0], np.float32),
        data_beta=np.array([0.5, -0.7, 0.3], np.float32),
    )
    conversion = convert_onnx(net.path)
    assert_matches(net, conversion)
    # Wrong: fold |gamma| but forget the sign.
    flipped = conversion.state_dict["conv1.weight"].clone()
    flipped[:, 2] *= -1
    wrong = with_changes(conversion, tensors={"conv1.weight": flipped})
    assert rel_diff(net.logits, run_converted(wrong, net.x)) > 10 * TOLERANCE


def test_input_bn_zero_gamma_is_refused(build):
    net = build(depth=18, residual="v2", data_gamma=np.array([1.0, 0.0, 1.0], np.float32), run=False)
    with pytest.raises(ConversionError, match=r"channel 1.*zero"):
        convert_onnx(net.path)


def test_stride_position_is_read_from_the_graph(build):
    # torchvision's layout (stride in the 3x3) in a V1 net: recognised, and it matters.
    net = build(depth=50, residual="v1", stride_in="3x3")
    conversion = convert_onnx(net.path)
    assert conversion.spec.stride_in == "3x3"
    assert_matches(net, conversion)
    wrong = with_changes(conversion, {"stride_in": "1x1"})
    assert rel_diff(net.logits, run_converted(wrong, net.x)) > 10 * TOLERANCE


def test_ceil_mode_stem_pool(build):
    net = build(depth=18, residual="v1", stem_pool="max_ceil", size=40)
    conversion = convert_onnx(net.path)
    assert conversion.spec.stem_pool == "max_ceil"
    assert_matches(net, conversion)
    wrong = with_changes(conversion, {"stem_pool": "max"})
    assert rel_diff(net.logits, run_converted(wrong, net.x)) > 10 * TOLERANCE


def test_projection_on_every_first_block(build):
    # Stage 1 keeps its width (8 -> 8, stride 1): only 'first of stage' puts a projection there.
    net = build(depth=18, residual="v2", projection="first_of_stage", widths=(8, 16, 16, 32), stem_width=8)
    conversion = convert_onnx(net.path)
    assert conversion.spec.projection == "first_of_stage"
    assert_matches(net, conversion)
    assert "layer1.0.downsample.0.weight" in conversion.state_dict


@pytest.mark.parametrize(
    "classifier,flatten",
    [
        ("gemm", "reshape"),
        ("gemm", "reshape_constant"),
        ("gemm_transposed_scaled", "flatten"),
        ("matmul_add", "flatten"),
    ],
)
def test_classifier_forms(build, classifier, flatten):
    net = build(depth=18, residual="v1", classifier=classifier, flatten=flatten)
    assert_matches(net, convert_onnx(net.path))


@pytest.mark.parametrize("opset", [7, 9, 13])
def test_older_opsets_as_in_the_onnx_zoo(build, opset):
    """The ONNX zoo's ResNets are opset 7 (BatchNormalization still has `spatial`, Reshape its shape input)."""
    net = build(depth=50, residual="v2", opset=opset, flatten="reshape")
    conversion = convert_onnx(net.path)
    assert conversion.metadata.source.details["opset"] == opset
    assert_matches(net, conversion)


def test_other_input_sizes_and_class_counts(build):
    net = build(depth=34, residual="v2", size=64, num_classes=7, batch=3, seed=5)
    conversion = convert_onnx(net.path)
    assert conversion.spec.num_classes == 7
    prep = conversion.metadata.preprocessing
    assert (prep.resize, prep.crop) == (64, 64)  # CIFAR-size (under 100): the whole image, no resize
    assert_matches(net, conversion)


@pytest.mark.parametrize("size,resize", [(32, 32), (99, 99), (100, 114), (160, 183), (320, 366)])
def test_input_size_sets_resize_and_crop(build, size, resize):
    """A square input the graph fixes is the crop; below 100 pixels nothing is resized (a 32x32 image
    resized to 37 and cropped back loses its border), above it the release's 256/224 ratio holds."""
    net = build(depth=18, residual="v1", size=size, batch=1)
    prep = convert_onnx(net.path).metadata.preprocessing
    assert (prep.resize, prep.crop) == (resize, size)
    assert resize == (size if size < 100 else round(size * 256 / 224))


def test_metadata_is_the_onnx_zoo_preprocessing(build):
    net = build(depth=18, residual="v1", size=224, batch=1)
    meta = convert_onnx(net.path).metadata
    prep = meta.preprocessing
    assert (prep.channel_order, prep.pixel_max) == ("RGB", 1.0)
    assert prep.mean == (0.485, 0.456, 0.406) and prep.std == (0.229, 0.224, 0.225)
    assert (prep.resize, prep.crop) == (256, 224)
    import hashlib

    assert meta.source.framework == "onnx"
    assert meta.source.files[0].sha256 == hashlib.sha256(net.path.read_bytes()).hexdigest()
    assert meta.source.details["input_shape"] == [1, 3, 224, 224]


def test_names_play_no_part(build, tmp_path):
    """Every node and tensor renamed (misleadingly), initializers shuffled: the same conversion."""
    import random

    import onnx

    net = build(depth=50, residual="v1")
    model = onnx.load(str(net.path))
    graph = model.graph
    rng = random.Random(7)
    names = sorted(
        {t for n in graph.node for t in list(n.input) + list(n.output)} | {t.name for t in graph.initializer}
    )
    words = ["fc_weight", "stage4_conv0_weight", "batchnorm0_gamma", "downsample", "data_bn", "conv1", "bias"]
    fresh = {old: f"{rng.choice(words)}_{i}" for i, old in enumerate(rng.sample(names, len(names)))}
    for node in graph.node:
        node.input[:] = [fresh.get(t, t) for t in node.input]
        node.output[:] = [fresh[t] for t in node.output]
        node.name = rng.choice(["", "layer1.0.conv2", "fc"])
    for tensor in graph.initializer:
        tensor.name = fresh[tensor.name]
    for value in list(graph.input) + list(graph.output):
        value.name = fresh.get(value.name, value.name)
    shuffled = list(graph.initializer)
    rng.shuffle(shuffled)
    del graph.initializer[:]
    graph.initializer.extend(shuffled)
    renamed = tmp_path / "renamed.onnx"
    onnx.save(model, str(renamed))

    original, converted = convert_onnx(net.path), convert_onnx(renamed)
    assert converted.spec == original.spec
    assert converted.state_dict.keys() == original.state_dict.keys()
    for key, tensor in original.state_dict.items():
        assert torch.equal(converted.state_dict[key], tensor), key


def test_external_weight_data(build, tmp_path):
    """Weights stored beside the graph (ONNX external data) are read from the file's folder."""
    import onnx

    net = build(depth=18, residual="v2")
    folder = tmp_path / "external"
    folder.mkdir()
    path = folder / "model.onnx"
    onnx.save_model(
        onnx.load(str(net.path)), str(path), save_as_external_data=True, location="weights.bin", size_threshold=0
    )
    assert path.stat().st_size < net.path.stat().st_size / 2
    conversion = convert_onnx(path)
    assert_matches(net, conversion)
    import hashlib

    files = {f.path: f.sha256 for f in conversion.metadata.source.files}  # the weights' digest is recorded too
    assert files["weights.bin"] == hashlib.sha256((folder / "weights.bin").read_bytes()).hexdigest()
    assert set(files) == {"model.onnx", "weights.bin"}
    (folder / "weights.bin").unlink()
    with pytest.raises(ConversionError, match="external weight data"):
        convert_onnx(path)
