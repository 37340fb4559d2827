"""convert-onnx on the files PyTorch and its tools write, and on the pre-2020 ONNX zoo's spatial=0 files.

Each file is written here the way the tool writes it: `torch.onnx.export` of a torchvision-layout
ResNet (the reference model, whose parameter names are torchvision's) with the TorchScript exporter
(opset 17) and the dynamo exporter; onnx-simplifier on the TorchScript export (and the same
simplified form written with the onnx helper API, so the case is covered without onnxsim); and, for
spatial=0, a real export's BatchNormalization nodes edited with the onnx API as MXNet's old exporter
wrote them (opset 7, ``spatial=0``, per-channel (C,) parameters).

Every converted model is compared with the file's referee (onnxruntime; the node evaluator for
spatial=0, which onnxruntime refuses) and with `functional_resnet`, a float64 forward written here
from the original model's torchvision-named state dict with torch.nn.functional only.
"""

from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper

from resnet_port.converters.common import run_converted
from resnet_port.converters.onnx import convert_onnx
from resnet_port.converters.onnx.cli import main
from resnet_port.converters.onnx.graph import read_graph
from resnet_port.converters.onnx.interpret import run_graph
from resnet_port.converters.onnx.verify import verify_conversion
from resnet_port.errors import ConversionError
from resnet_port.resnet_ref import build_model, get_spec
from tests.onnx.conftest import TOLERANCE, refuse, rel_diff, run_onnxruntime, seed_batchnorms

# Small widths keep exports and referees fast; the layouts are torchvision's resnet18/34/50/101.
LAYOUTS = {
    "resnet18": dict(widths=(4, 8, 8, 16), stem_width=8),
    "resnet34": dict(widths=(4, 4, 8, 8), stem_width=8),
    "resnet50": dict(widths=(4, 8, 8, 16), stem_width=8),
}
SIZE = 32
EPS = 1e-5


def reference_model(arch: str, seed: int = 0, default_bns: str = "") -> torch.nn.Module:
    """The reference ResNet in torchvision's layout with non-trivial BN values (so a BN mapped wrongly,
    or a fold ignored, moves the logits).  BNs whose name starts with ``default_bns`` keep their
    initial values, so the exporter's folded biases repeat and it shares them through Identity nodes."""
    spec = dataclasses.replace(get_spec(arch, 10), **LAYOUTS[arch])
    torch.manual_seed(seed)
    model = build_model(spec).eval()
    seed_batchnorms(model, seed + 1, skip_prefix=default_bns)
    return model


def functional_resnet(state: dict[str, torch.Tensor], x: np.ndarray) -> np.ndarray:
    """torchvision's ResNet forward in float64 from its state dict alone (v1, stride in the 3x3)."""
    p = {k: v.double() for k, v in state.items()}

    def bn(t, name):
        return F.batch_norm(t, p[f"{name}.running_mean"], p[f"{name}.running_var"], p[f"{name}.weight"], p[f"{name}.bias"], False, 0.0, EPS)

    def conv(t, name, stride=1):
        w = p[f"{name}.weight"]
        return F.conv2d(t, w, p.get(f"{name}.bias"), stride, w.shape[-1] // 2)

    t = torch.from_numpy(x).double()
    t = F.max_pool2d(F.relu(bn(conv(t, "conv1", 2), "bn1")), 3, 2, 1)
    for stage in range(1, 5):
        b = 0
        while f"layer{stage}.{b}.conv1.weight" in p:
            pre = f"layer{stage}.{b}"
            stride = 2 if stage > 1 and b == 0 else 1
            bottleneck = f"{pre}.conv3.weight" in p
            out = F.relu(bn(conv(t, f"{pre}.conv1", 1 if bottleneck else stride), f"{pre}.bn1"))
            out = bn(conv(out, f"{pre}.conv2", stride if bottleneck else 1), f"{pre}.bn2")
            if bottleneck:
                out = bn(conv(F.relu(out), f"{pre}.conv3"), f"{pre}.bn3")
            short = t
            if f"{pre}.downsample.0.weight" in p:
                short = bn(conv(t, f"{pre}.downsample.0", stride), f"{pre}.downsample.1")
            t = F.relu(out + short)
            b += 1
    t = t.mean((2, 3))
    return F.linear(t, p["fc.weight"], p["fc.bias"]).numpy()


def export(model: torch.nn.Module, path, dynamo: bool = False, **options) -> None:
    x = torch.randn(2, 3, SIZE, SIZE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(model, (x,), str(path), dynamo=True, input_names=["input"], output_names=["logits"], verbose=False, **options)
        else:
            torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=options.pop("opset_version", 17),
                              input_names=["input"], output_names=["logits"], **options)


def ops(path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node]


def probe(seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((2, 3, SIZE, SIZE)).astype(np.float32)


def check_fused(path, model, expect_bias: bool = True):
    """The fused file converts, matches onnxruntime and the functional forward, and its BNs are identities."""
    conversion = convert_onnx(path)
    x = probe()
    ours = run_converted(conversion, x).numpy()
    ort = run_onnxruntime(path, x)
    independent = functional_resnet(model.state_dict(), x)
    assert rel_diff(ort, ours) <= TOLERANCE
    assert rel_diff(independent, ours) <= TOLERANCE
    assert np.array_equal(independent.argmax(1), ours.argmax(1))
    record = verify_conversion(conversion, path)
    assert record["passed"] and record["referee"].startswith("onnxruntime")

    state = conversion.state_dict
    eps = conversion.spec.bn_eps
    assert eps == pytest.approx(EPS)
    bn_names = [k[: -len(".running_var")] for k in state if k.endswith(".running_var")]
    assert len(bn_names) == sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    for name in bn_names:
        assert torch.equal(state[f"{name}.weight"], torch.ones_like(state[f"{name}.weight"])), name
        assert torch.equal(state[f"{name}.bias"], torch.zeros_like(state[f"{name}.bias"])), name
        assert torch.equal(state[f"{name}.running_mean"], torch.zeros_like(state[f"{name}.running_mean"])), name
        assert torch.equal(state[f"{name}.running_var"], torch.full_like(state[f"{name}.running_var"], np.float32(1 - eps))), name
    # Each conv holds the original weight scaled by its BN (computed here from the original model),
    # so every tensor went to the right place; the bias is beta - mean * scale.
    original = model.state_dict()
    for conv_name, bn_name in [("conv1", "bn1"), ("layer1.0.conv2", "layer1.0.bn2"), ("layer2.0.downsample.0", "layer2.0.downsample.1")]:
        g, b, m, v = (original[f"{bn_name}.{k}"].double() for k in ("weight", "bias", "running_mean", "running_var"))
        scale = g / torch.sqrt(v + EPS)
        expected_w = original[f"{conv_name}.weight"].double() * scale.view(-1, 1, 1, 1)
        assert torch.allclose(state[f"{conv_name}.weight"].double(), expected_w, rtol=1e-5, atol=1e-6), conv_name
        if expect_bias:
            assert torch.allclose(state[f"{conv_name}.bias"].double(), b - m * scale, rtol=1e-5, atol=1e-6), conv_name
    notes = " ".join(conversion.report.notes)
    assert "folded into the conv" in notes and "recalibrate-bn starts from no statistics" in notes
    assert conversion.metadata.source.details["folded_batchnorms"] == len(bn_names)
    return conversion


@pytest.mark.parametrize("arch", ["resnet18", "resnet34", "resnet50"])
def test_torchscript_export_is_fused_and_converts_exactly(tmp_path, arch):
    model = reference_model(arch)
    path = tmp_path / f"{arch}.onnx"
    export(model, path)
    found = ops(path)
    assert "BatchNormalization" not in found and "Conv" in found  # the exporter folded every BN
    conversion = check_fused(path, model)
    # conv biases in every role the fused graph has them
    roles = {"stem", "conv1", "conv2", "downsample"} | ({"conv3"} if arch == "resnet50" else set())
    assert set(conversion.spec.conv_bias) == roles
    assert conversion.spec.layers == get_spec(arch).layers
    assert conversion.spec.block == ("bottleneck" if arch == "resnet50" else "basic")


def test_identity_nodes_on_initializers_are_followed(tmp_path):
    """Default BNs fold to equal biases, which the exporter shares through Identity nodes."""
    model = reference_model("resnet18", default_bns="layer1")
    path = tmp_path / "shared.onnx"
    export(model, path)
    assert ops(path).count("Identity") >= 2
    conversion = check_fused(path, model)
    graph = read_graph(path)
    assert graph.aliases  # the Identity outputs, followed to their initializer
    # the report names the initializer behind an alias, never the alias
    assert all(ref not in graph.aliases for ref in conversion.report.mapped.values())


def test_dynamic_batch_export(tmp_path):
    model = reference_model("resnet18", seed=4)
    path = tmp_path / "dynamic.onnx"
    export(model, path, dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    check_fused(path, model)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_dynamo_export_converts_exactly(tmp_path, arch):
    import onnxscript  # noqa: F401 - in the test extra; plain import so that a missing one fails

    model = reference_model(arch, seed=2)
    path = tmp_path / f"{arch}_dynamo.onnx"
    export(model, path, dynamo=True)
    found = ops(path)
    assert "BatchNormalization" not in found and "ReduceMean" in found
    check_fused(path, model)


def test_onnxsim_output_converts(tmp_path):
    import onnxsim

    model = reference_model("resnet50", seed=5, default_bns="layer2")
    path = tmp_path / "traced.onnx"
    export(model, path)
    simplified, ok = onnxsim.simplify(onnx.load(str(path)))
    assert ok
    sim_path = tmp_path / "simplified.onnx"
    onnx.save(simplified, str(sim_path))
    assert "Identity" not in ops(sim_path) and "BatchNormalization" not in ops(sim_path)
    check_fused(sim_path, model)


def test_simplified_form_written_with_the_helper_api(tmp_path):
    """onnx-simplifier's form without onnxsim: Identity nodes removed, readers renamed to the initializer."""
    model = reference_model("resnet18", seed=6, default_bns="layer3")
    path = tmp_path / "traced.onnx"
    export(model, path)
    proto = onnx.load(str(path))
    source = {n.output[0]: n.input[0] for n in proto.graph.node if n.op_type == "Identity"}
    assert source
    kept = [n for n in proto.graph.node if n.op_type != "Identity"]
    for node in kept:
        for i, name in enumerate(node.input):
            if name in source:
                node.input[i] = source[name]
    del proto.graph.node[:]
    proto.graph.node.extend(kept)
    onnx.checker.check_model(proto)
    sim_path = tmp_path / "simplified.onnx"
    onnx.save(proto, str(sim_path))
    check_fused(sim_path, model)


def test_cli_converts_a_fused_export(tmp_path, capsys):
    model = reference_model("resnet18", seed=7)
    path = tmp_path / "r18.onnx"
    export(model, path)
    out = tmp_path / "r18.pth"
    assert main([str(path), "-o", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert out.exists()
    assert summary["verification"]["passed"]
    text = tmp_path / "r18_text.pth"
    assert main([str(path), "-o", str(text)]) == 0
    printed = capsys.readouterr().out
    assert "note:" in printed and "recalibrate-bn starts from no statistics" in printed


def test_fused_export_with_a_wrong_bias_isrefuse(tmp_path, capsys):
    model = reference_model("resnet18", seed=8)
    path = tmp_path / "r18.onnx"
    export(model, path)
    proto = onnx.load(str(path))
    conv = next(n for n in proto.graph.node if n.op_type == "Conv")
    for i, init in enumerate(proto.graph.initializer):
        if init.name == conv.input[2]:
            proto.graph.initializer[i].CopyFrom(numpy_helper.from_array(np.zeros(3, np.float32), init.name))
    bad = tmp_path / "bad.onnx"
    onnx.save(proto, str(bad))
    refuse(bad, tmp_path, capsys, "bias has 3 values", "Conv")


def test_fused_export_with_the_sum_relu_removed_isrefuse(tmp_path, capsys):
    """A fused graph is still held to the ResNet pattern: an Add straight into the next block is no v1 block."""
    model = reference_model("resnet18", seed=9)
    path = tmp_path / "r18.onnx"
    export(model, path)
    proto = onnx.load(str(path))
    nodes = list(proto.graph.node)
    add = next(n for n in nodes if n.op_type == "Add")
    relu = next(n for n in nodes if n.op_type == "Relu" and n.input[0] == add.output[0])
    for node in nodes:
        for i, name in enumerate(node.input):
            if name == relu.output[0]:
                node.input[i] = add.output[0]
    nodes.remove(relu)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    bad = tmp_path / "bad.onnx"
    onnx.save(proto, str(bad))
    refuse(bad, tmp_path, capsys, "ReLU after the residual sum")


# -- pre-2020 ONNX zoo v1 files: BatchNormalization spatial=0 over per-channel parameters -------------

OPSET7_DROPPED = {"MaxPool": ("ceil_mode", "dilations"), "BatchNormalization": ("training_mode",)}


def as_old_mxnet_export(source, target) -> int:
    """The file as MXNet's 2018 exporter wrote the zoo's v1 models: opset 7, every BatchNormalization
    with ``spatial=0`` over its per-channel (C,) parameters; attributes opset 7 lacks removed."""
    proto = onnx.load(str(source))
    count = 0
    for node in proto.graph.node:
        drop = OPSET7_DROPPED.get(node.op_type, ())
        kept = [a for a in node.attribute if a.name not in drop]
        del node.attribute[:]
        node.attribute.extend(kept)
        if node.op_type == "BatchNormalization":
            node.attribute.append(helper.make_attribute("spatial", 0))
            count += 1
    del proto.opset_import[:]
    proto.opset_import.extend([helper.make_opsetid("", 7)])
    proto.ir_version = 3
    onnx.save(proto, str(target))
    return count


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_spatial0_per_channel_files_convert_with_a_note(tmp_path, arch):
    model = reference_model(arch, seed=11)
    kept = tmp_path / "kept.onnx"
    # TrainingMode.PRESERVE on an eval model keeps the BatchNormalization nodes (no folding).
    export(model, kept, training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)
    assert "BatchNormalization" in ops(kept)
    path = tmp_path / "old_zoo.onnx"
    count = as_old_mxnet_export(kept, path)
    assert count == sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())

    # onnxruntime refuses a spatial=0 BatchNormalization it cannot fuse into a conv (its kernel wants
    # (C, H, W) parameters); here every BN follows a conv and its optimiser may fuse them first, so
    # whether it runs says nothing: the node evaluator referees these files.
    conversion = convert_onnx(path)
    x = probe()
    ours = run_converted(conversion, x).numpy()
    evaluated = run_graph(read_graph(path), x)
    independent = functional_resnet(model.state_dict(), x)
    assert rel_diff(evaluated, ours) <= TOLERANCE
    assert rel_diff(independent, ours) <= TOLERANCE
    assert rel_diff(independent, evaluated) <= 1e-9  # the evaluator reads spatial=0 per channel
    record = verify_conversion(conversion, path)
    assert record["passed"] and "spatial=0" in record["referee"] and "onnxruntime" in record["referee"]
    assert conversion.metadata.source.details["spatial0_batchnorms"] == count
    notes = " ".join(conversion.report.notes)
    assert "spatial=0" in notes and "per channel" in notes
    # the BN parameters are the file's own (C,) values, not identities
    original = model.state_dict()
    for key in ("bn1.weight", "layer1.0.bn2.running_var", "layer4.0.downsample.1.running_mean"):
        assert torch.allclose(conversion.state_dict[key], original[key]), key
    assert conversion.spec.conv_bias == ()


def test_spatial0_cli_writes_the_checkpoint(tmp_path, capsys):
    model = reference_model("resnet18", seed=12)
    kept = tmp_path / "kept.onnx"
    export(model, kept, training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)
    path = tmp_path / "old_zoo.onnx"
    as_old_mxnet_export(kept, path)
    out = tmp_path / "r18.pth"
    assert main([str(path), "-o", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["verification"]["passed"] and "spatial=0" in summary["verification"]["referee"]


def test_a_wrong_port_of_a_spatial0_file_fails_the_check(tmp_path):
    """The evaluator referee catches a BN value mapped wrongly on these files."""
    model = reference_model("resnet18", seed=13)
    kept = tmp_path / "kept.onnx"
    export(model, kept, training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)
    path = tmp_path / "old_zoo.onnx"
    as_old_mxnet_export(kept, path)
    conversion = convert_onnx(path)
    conversion.state_dict["layer2.0.bn1.running_mean"] += 0.5
    from resnet_port.converters.verify import VerificationFailed

    with pytest.raises(VerificationFailed):
        verify_conversion(conversion, path)


def test_spatial0_per_activation_parameters_stayrefuse(tmp_path, capsys):
    model = reference_model("resnet18", seed=14)
    kept = tmp_path / "kept.onnx"
    export(model, kept, training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)
    path = tmp_path / "old.onnx"
    as_old_mxnet_export(kept, path)
    proto = onnx.load(str(path))
    bn = next(n for n in proto.graph.node if n.op_type == "BatchNormalization")
    for i, init in enumerate(proto.graph.initializer):
        if init.name in bn.input[1:]:
            array = numpy_helper.to_array(init)
            proto.graph.initializer[i].CopyFrom(
                numpy_helper.from_array(np.ascontiguousarray(np.broadcast_to(array[:, None, None], (array.shape[0], 16, 16))), init.name)
            )
    bad = tmp_path / "bad.onnx"
    onnx.save(proto, str(bad))
    refuse(bad, tmp_path, capsys, "spatial=0", "per activation")
    with pytest.raises(ConversionError, match="per activation"):
        convert_onnx(bad)


def assert_matches_runtime_and_source(conversion, path, model) -> None:
    """The port computes what onnxruntime computes on the file, and what the exported model computed."""
    x = probe()
    ours = run_converted(conversion, x).numpy()
    assert rel_diff(run_onnxruntime(path, x), ours) <= TOLERANCE
    with torch.inference_mode():
        source = model.double()(torch.from_numpy(x).double()).numpy()
    assert rel_diff(source, ours) <= TOLERANCE


@pytest.mark.parametrize("arch,folded", [("resnet18_v2", 9), ("resnet50_v2", 33)])
def test_pre_activation_export_folds_the_inner_bns(tmp_path, arch, folded):
    """In a v2 net only the BN right after a conv (the stem's, bn2/bn3 before the next conv) can be
    folded; the pre-activation BNs and the final BN stay BatchNormalization nodes."""
    spec = dataclasses.replace(get_spec(arch, 10), widths=(4, 8, 8, 16), stem_width=8)
    torch.manual_seed(0)
    model = build_model(spec).eval()
    seed_batchnorms(model, 1)
    path = tmp_path / f"{arch}.onnx"
    export(model, path)
    assert "BatchNormalization" in ops(path)
    conversion = convert_onnx(path)
    assert conversion.metadata.source.details["folded_batchnorms"] == folded
    assert_matches_runtime_and_source(conversion, path, model)
    assert conversion.spec.residual == "v2" and "stem" in conversion.spec.conv_bias
    # a kept BN keeps its values; the pre-activation of layer1.0 is one
    original = model.state_dict()
    assert torch.allclose(conversion.state_dict["layer1.0.bn1.running_var"], original["layer1.0.bn1.running_var"].float())


@pytest.mark.parametrize("arch,folded", [("resnetv2_18", 8), ("resnetv2_50d", 34), ("resnetv2_50t", 34)])
def test_timm_resnetv2_exports_with_a_bn_less_stem(tmp_path, arch, folded):
    """timm's ResNetV2 layout: the stem has no BN or ReLU of its own (the 7x7 conv, or the deep stem's
    bare third conv, feeds the max pool), and the deep-stem nets average-pool before each strided
    projection.  Exported by torch.onnx from the reference model, refereed by onnxruntime and the
    source model; the deep stem's first two BNs and every bn2/bn3 are folded by the exporter."""
    base = get_spec(arch, 10)
    stem = {} if base.stem != "deep" else {"stem_widths": (4, 6) if base.stem_widths else ()}
    spec = dataclasses.replace(base, widths=(4, 8, 8, 16), stem_width=8, **stem)
    torch.manual_seed(0)
    model = build_model(spec).eval()
    seed_batchnorms(model, 2)
    path = tmp_path / f"{arch}.onnx"
    export(model, path)
    found = ops(path)
    assert "MaxPool" in found and ("AveragePool" in found) == (spec.shortcut == "avgpool_conv")
    conversion = convert_onnx(path)
    assert conversion.metadata.source.details["folded_batchnorms"] == folded
    got = conversion.spec
    assert (got.residual, got.stem, got.stem_norm, got.shortcut) == ("v2", spec.stem, "none", spec.shortcut)
    assert got.stem_widths == spec.stem_widths
    assert ("stem" in got.conv_bias) == (spec.stem == "deep")  # only the deep stem has BNs to fold into its convs
    assert_matches_runtime_and_source(conversion, path, model)


@pytest.mark.slow
def test_dynamo_export_with_a_dynamic_batch(tmp_path):
    import onnxscript  # noqa: F401

    model = reference_model("resnet18", seed=15)
    path = tmp_path / "dynamic_dynamo.onnx"
    export(model, path, dynamo=True, dynamic_shapes=({0: torch.export.Dim("batch")},))
    assert "BatchNormalization" not in ops(path)
    assert not isinstance(read_graph(path).input_shape[0], int) or read_graph(path).input_shape[0] <= 0
    check_fused(path, model)
