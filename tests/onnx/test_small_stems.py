"""convert-onnx on GluonCV's and Gluon's nets beyond the model zoo's: the nets whose stem is not
conv-BN-ReLU, GluonCV's CIFAR ResNets (V1: conv-BN and no ReLU; V2: the bare conv, and projections of
the raw block input) and Gluon's thumbnail nets (the bare 3x3/1 conv); and GluonCV's ResNetV1b family
(deep stems, avg-down) as MXNet's exporter writes it.

Two kinds of file: MXNet's own ONNX export of each net, built by GluonCV's / Gluon's code
(tests/peers/make_gluoncv_fixtures.py; refereed by onnxruntime on the file and by MXNet's logits), and
PyTorch's fused export of the same layouts (every BN after a conv folded into it), refereed by
onnxruntime and by the un-exported model.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from resnet_port.converters.common import run_converted
from resnet_port.converters.onnx import convert_onnx
from resnet_port.resnet_ref import build_model, get_spec
from tests.onnx.conftest import TOLERANCE, rel_diff, run_onnxruntime, seed_batchnorms
from tests.peers.gluoncv_cache import gluoncv_fixtures  # noqa: F401 - re-exported pytest fixture

MXNET_EXPORTS = {
    # fixture: (registered arch, stem_norm, v2_shortcut_input)
    "cifar_resnet20_v1": ("cifar_resnet20_v1", "bn", "preactivated"),
    "cifar_resnet20_v2": ("cifar_resnet20_v2", "none", "block_input"),
    "cifar_resnet56_v2": ("cifar_resnet56_v2", "none", "block_input"),
    "thumb_resnet18_v1": ("resnet18_v1_thumbnail", "none", "preactivated"),
    "thumb_resnet18_v2": ("resnet18_v2_thumbnail", "none", "preactivated"),
    "thumb_small_v2": (None, "none", "preactivated"),
}


@pytest.mark.peer
@pytest.mark.parametrize("name", sorted(MXNET_EXPORTS))
def test_mxnet_exports_of_small_stem_nets(gluoncv_fixtures: Path, name: str) -> None:  # noqa: F811
    """The stem ends where its output first feeds two branches; a conv -> BN -> ReLU that the first v2
    block's projection and body share is that block's pre-activation (thumb_small_v2), not a stem."""
    path = gluoncv_fixtures / name / f"{name}.onnx"
    registered, stem_norm, reads = MXNET_EXPORTS[name]
    conversion = convert_onnx(path)
    spec = conversion.spec
    assert (spec.stem, spec.stem_norm, spec.stem_pool, spec.v2_shortcut_input) == ("3x3", stem_norm, "none", reads)
    if registered:
        assert conversion.metadata.arch == registered
    cifar = name.startswith("cifar_")  # GluonCV's CIFAR-10 transforms and labels travel with those
    assert (conversion.metadata.class_order == "cifar10") == cifar
    assert (conversion.metadata.preprocessing.mean[0] == 0.4914) == cifar
    x = np.load(gluoncv_fixtures / name / "input_32.npy")
    ours = run_converted(conversion, x).numpy()
    assert rel_diff(run_onnxruntime(path, x), ours) <= TOLERANCE
    mxnet = np.load(gluoncv_fixtures / name / "logits_32.npy")
    assert rel_diff(mxnet, ours) <= 1e-5 and np.array_equal(mxnet.argmax(1), ours.argmax(1))


SIZE = 17  # odd, small: every stride-2 stage rounds


def _model(arch: str, **changes) -> torch.nn.Module:
    spec = dataclasses.replace(get_spec(arch), **changes)
    torch.manual_seed(0)
    model = build_model(spec).eval()
    seed_batchnorms(model, 1)
    return model


@pytest.mark.parametrize(
    "arch, changes",
    [
        ("cifar_resnet20_v1", {}),
        ("cifar_resnet20_v2", {}),
        ("resnet18_v2_thumbnail", dict(widths=(8, 8, 16, 16), stem_width=8)),
        ("resnet50_v2_thumbnail", dict(layers=(1, 2, 1, 1), widths=(4, 8, 8, 16), stem_width=8)),
    ],
)
def test_pytorch_fused_exports_of_small_stem_nets(tmp_path, arch, changes):
    """PyTorch folds the CIFAR V1 stem BN into the conv: the bare conv with its bias is that network
    exactly (read as stem_norm "none"); the V2 projections keep reading the raw or pre-activated input."""
    model = _model(arch, **changes)
    path = tmp_path / f"{arch}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(2, 3, SIZE, SIZE),), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"])
    conversion = convert_onnx(path)
    spec = conversion.spec
    assert spec.v2_shortcut_input == model.spec.v2_shortcut_input and spec.stem_norm in ("none", model.spec.stem_norm)
    x = np.random.default_rng(2).standard_normal((2, 3, SIZE, SIZE)).astype(np.float32)
    ours = run_converted(conversion, x).numpy()
    with torch.no_grad():
        original = model(torch.from_numpy(x)).numpy()
    assert rel_diff(original, ours) <= TOLERANCE and rel_diff(run_onnxruntime(path, x), ours) <= TOLERANCE
    assert np.array_equal(original.argmax(1), ours.argmax(1))


V1B_EXPORTS = {
    # fixture: (the name GluonCV gives it, stem, shortcut)
    "resnet18_v1b": ("resnet18_v1b", "7x7", "conv"),
    "resnet50_v1b": ("resnet50_v1b", "7x7", "conv"),
    "resnet50_v1c": ("resnet50_v1c", "deep", "conv"),
    "resnet50_v1d": ("resnet50_v1d", "deep", "avgpool_conv"),
    "resnet50_v1e": ("resnet50_v1e", "deep", "avgpool_conv"),
    "resnet50_v1s": ("resnet50_v1s", "deep", "conv"),
    "small_v1d": (None, "deep", "avgpool_conv"),
}


@pytest.mark.peer
@pytest.mark.parametrize("name", sorted(V1B_EXPORTS))
def test_mxnet_exports_of_the_gluoncv_v1b_family(gluoncv_fixtures: Path, name: str) -> None:  # noqa: F811
    """MXNet's ONNX export of each GluonCV net: the deep stem and the avg-down pool (AveragePool with
    ceil_mode=1; small_v1d at 33 px, where the last window is partial) read from the graph; named as GluonCV names
    it (resnet18_v1b, not the same network's resnet18_v1) with GluonCV's published rows."""
    path = gluoncv_fixtures / name / f"{name}.onnx"
    registered, stem, shortcut = V1B_EXPORTS[name]
    conversion = convert_onnx(path)
    assert (conversion.spec.stem, conversion.spec.shortcut) == (stem, shortcut)
    assert conversion.metadata.arch == registered
    if registered in ("resnet18_v1b", "resnet50_v1d"):
        assert conversion.metadata.published["weight_source"] == "gluoncv" and conversion.metadata.published["results"]
    manifest = json.loads((gluoncv_fixtures / "manifest.json").read_text())
    size = manifest["models"][name]["sizes"][0]  # the export's fixed input size
    x = np.load(gluoncv_fixtures / name / f"input_{size}.npy")
    ours = run_converted(conversion, x).numpy()
    assert rel_diff(run_onnxruntime(path, x), ours) <= TOLERANCE
    mxnet = np.load(gluoncv_fixtures / name / f"logits_{size}.npy")
    assert rel_diff(mxnet, ours) <= 1e-5 and np.array_equal(mxnet.argmax(1), ours.argmax(1))
