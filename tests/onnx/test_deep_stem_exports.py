"""convert-onnx on PyTorch exports of the timm / mmcls ResNets with a deep (or tiered) stem and the
avg-down shortcut (resnet18d, resnet26t, resnet50_v1d, ...).

Each net is written here as its library's state dict (`tests.core.any_resnet_builders`, written apart
from the reference model), loaded the way a user loads it, exported with `torch.onnx.export`
(TorchScript exporter, opset 17, and the dynamo exporter) at an odd input size where the avg-down
pool's ceil_mode matters, and converted.  Referees: onnxruntime on the file, and the builders'
independent float64 forward of the original state dict.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import helper

from resnet_port.checkpoints import load_model
from resnet_port.converters.common import run_converted
from resnet_port.converters.onnx import convert_onnx
from resnet_port.converters.onnx.cli import main
from resnet_port.converters.onnx.graph import read_graph
from resnet_port.converters.onnx.interpret import run_graph
from resnet_port.resnet_ref import get_spec
from tests.core.any_resnet_builders import Net, forward, state_dict
from tests.onnx.conftest import TOLERANCE, rel_diff, run_onnxruntime

SIZE = 33  # odd: the avg-down pools of stages 2.. see a partial last window
NETS = {
    # name: (net, registered arch of the converted spec)
    "resnet18d": (Net("basic", (2, 2, 2, 2), (32, 32, 64), avg_down=True), "resnet18d"),
    "resnet10t": (Net("basic", (1, 1, 1, 1), (24, 32, 64), avg_down=True), "resnet10t"),
    "small_v1d": (Net("bottleneck", (1, 1, 1, 1), (32, 32, 64), avg_down=True), None),
    "small_v1c": (Net("bottleneck", (1, 2, 1, 1), (32, 32, 64)), None),
}


def _export(name: str, tmp_path, dynamo: bool):
    net, _ = NETS[name]
    sd = state_dict(net, "timm", seed=5)
    torch.save(sd, tmp_path / "sd.pth")
    model, _ = load_model(tmp_path / "sd.pth")
    path = tmp_path / f"{name}{'-dynamo' if dynamo else ''}.onnx"
    x = torch.randn(2, 3, SIZE, SIZE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        options = {} if dynamo else {"opset_version": 17}
        torch.onnx.export(model.eval(), (x,), str(path), dynamo=dynamo, input_names=["input"], output_names=["logits"], **options)
    return path, sd, net


def _probe() -> np.ndarray:
    return np.random.default_rng(3).standard_normal((2, 3, SIZE, SIZE)).astype(np.float32)


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
@pytest.mark.parametrize("name", sorted(NETS))
def test_deep_stem_and_avg_down_exports_convert_exactly(tmp_path, name, dynamo):
    path, sd, net = _export(name, tmp_path, dynamo)
    conversion = convert_onnx(path)  # verified against onnxruntime by default
    spec = conversion.spec
    assert spec.stem == "deep" and spec.deep_stem_widths == net.stem
    assert spec.shortcut == ("avgpool_conv" if net.avg_down else "conv")
    assert (spec.block, spec.layers) == (net.block, net.layers)
    if net.block == "bottleneck":
        assert spec.stride_in == "3x3"  # timm's / mmcls's stride in the 3x3
    if NETS[name][1]:
        # the registered net but for the biases the exporter's BN folding gave every conv
        registered = get_spec(NETS[name][1], net.classes)
        assert spec.replace(conv_bias=(), stride_in=registered.stride_in) == registered
    x = _probe()
    ours = run_converted(conversion, x).numpy()
    independent = forward(sd, net, "timm", torch.from_numpy(x)).numpy()
    assert rel_diff(independent, ours) <= TOLERANCE
    reference = run_onnxruntime(path, x)
    assert rel_diff(reference, ours) <= TOLERANCE
    assert np.array_equal(independent.argmax(1), ours.argmax(1))
    # the node evaluator (the referee where onnxruntime refuses a file) pools the partial windows alike
    assert rel_diff(reference, run_graph(read_graph(path), x)) <= TOLERANCE


def test_a_floor_mode_avg_down_pool_is_refused_naming_it(tmp_path, capsys):
    """A pool that rounds down drops the last row and column at odd sizes: not the reference's."""
    path, _, _ = _export("small_v1d", tmp_path, dynamo=False)
    model = onnx.load(str(path))
    pool = next(n for n in model.graph.node if n.op_type == "AveragePool")
    for attribute in pool.attribute:
        if attribute.name == "ceil_mode":
            attribute.i = 0
    bad = tmp_path / "floor.onnx"
    onnx.save(model, str(bad))
    out = tmp_path / "out.pth"
    assert main([str(bad), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "AveragePool" in err and "ceil_mode=1" in err, err
    assert not out.exists()


def test_a_ceil_mode_head_pool_is_refused(tmp_path, capsys):
    path, _, _ = _export("small_v1c", tmp_path, dynamo=False)
    model = onnx.load(str(path))
    nodes = list(model.graph.node)
    gap = next(n for n in nodes if n.op_type == "GlobalAveragePool")
    # a fixed 2x2 / 1 head pool with ceil_mode=1 (the map is 2x2 at this size)
    nodes[nodes.index(gap)] = helper.make_node(
        "AveragePool", list(gap.input), list(gap.output), name="head", kernel_shape=[2, 2], ceil_mode=1
    )
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    bad = tmp_path / "head.onnx"
    onnx.save(model, str(bad))
    assert main([str(bad), "-o", str(tmp_path / "out.pth")]) == 2
    assert "ceil_mode=1 average pooling in the head" in capsys.readouterr().err
