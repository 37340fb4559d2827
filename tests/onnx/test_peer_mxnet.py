"""convert-onnx on the files MXNet's own exporter wrote (tests/peers/make_fixtures.py), refereed by
onnxruntime and MXNet: the real Gluon model zoo ResNets V1/V2 18..152 with non-trivial BN values.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from resnet_port.converters.common import Conversion, run_converted
from resnet_port.converters.onnx import convert_onnx
from tests.onnx.conftest import TOLERANCE, rel_diff, run_onnxruntime

pytestmark = [pytest.mark.peer, pytest.mark.slow]

GLUON = [(depth, version) for version in (1, 2) for depth in (18, 34, 50, 101, 152)]


@pytest.mark.parametrize("depth,version", GLUON, ids=[f"resnet{d}_v{v}" for d, v in GLUON])
def test_mxnet_exports_match_onnxruntime(mxnet_fixtures, depth, version):
    folder = mxnet_fixtures / f"gluon_resnet{depth}_v{version}"
    x = np.load(folder / "input.npy")
    reference = np.load(folder / "logits_onnxruntime.npy")
    conversion = convert_onnx(folder / "model.onnx")
    assert conversion.metadata.arch == f"resnet{depth}_v{version}"
    ours = run_converted(conversion, x).numpy()
    assert rel_diff(reference, ours) <= TOLERANCE
    assert np.array_equal(reference.argmax(1), ours.argmax(1))
    # These files keep the data BN's gamma 1 / beta 0, so MXNet agrees as well.
    mxnet = np.load(folder / "logits_mxnet.npy")
    assert rel_diff(mxnet, ours) <= TOLERANCE


def _with_data_bn(source, target, gamma=None, beta=None):
    """The export as MXNet's exporter writes it when the data BN's stored gamma/beta are not 1/0
    (it copies them, ignoring fix_gamma): the same file with those initializers replaced."""
    model = onnx.load(str(source))
    data_bn = next(n for n in model.graph.node if n.op_type == "BatchNormalization" and n.input[0] == "data")
    for tensor in model.graph.initializer:
        for value, position in ((gamma, 1), (beta, 2)):
            if value is not None and tensor.name == data_bn.input[position]:
                tensor.CopyFrom(numpy_helper.from_array(np.asarray(value, np.float32), tensor.name))
    onnx.save(model, str(target))
    return data_bn


def test_exporter_ignoring_fix_gamma(mxnet_fixtures, tmp_path):
    """MXNet ignores the data BN's stored gamma (fix_gamma); its ONNX exporter does not.

    The converter ports the file: it must equal onnxruntime, which here differs from MXNet.
    MXNet's reading (gamma 1) is the wrong handling of the file and must miss onnxruntime.
    """
    folder = mxnet_fixtures / "gluon_resnet18_v2"
    x = np.load(folder / "input.npy")
    mxnet = np.load(folder / "logits_mxnet_variant_datagamma.npy")  # MXNet with a stored gamma: ignored
    assert rel_diff(np.load(folder / "logits_mxnet.npy"), mxnet) == 0.0
    path = tmp_path / "datagamma.onnx"
    data_bn = _with_data_bn(folder / "model.onnx", path, gamma=[0.4, 2.5, 1.3])
    reference = run_onnxruntime(path, x)
    assert rel_diff(reference, mxnet) > 10 * TOLERANCE  # the exporter pitfall itself

    conversion = convert_onnx(path)
    ours = run_converted(conversion, x).numpy()
    assert rel_diff(reference, ours) <= TOLERANCE
    assert np.array_equal(reference.argmax(1), ours.argmax(1))

    stored = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    mxnet_reading = Conversion(
        conversion.spec.replace(bn_eps_overrides=()),
        {
            **conversion.state_dict,
            "data_bn.running_mean": torch.tensor(stored[data_bn.input[3]]),
            "data_bn.running_var": torch.tensor(stored[data_bn.input[4]]),
        },
        conversion.metadata,
        conversion.report,
    )
    wrong = run_converted(mxnet_reading, x).numpy()
    assert rel_diff(reference, wrong) > 10 * TOLERANCE
    assert rel_diff(mxnet, wrong) <= TOLERANCE  # ...which is exactly what MXNet computes


def test_exported_data_bn_beta_is_applied(mxnet_fixtures, tmp_path):
    """MXNet applies the data BN's beta (variant_databeta); the export carries it and so must the port."""
    folder = mxnet_fixtures / "gluon_resnet18_v2"
    x = np.load(folder / "input.npy")
    mxnet = np.load(folder / "logits_mxnet_variant_databeta.npy")
    path = tmp_path / "databeta.onnx"
    _with_data_bn(folder / "model.onnx", path, beta=[0.5, -0.7, 0.3])
    ours = run_converted(convert_onnx(path), x).numpy()
    assert rel_diff(run_onnxruntime(path, x), ours) <= TOLERANCE
    assert rel_diff(mxnet, ours) <= TOLERANCE


def test_the_fixture_variant_gamma_reproduces_onnxruntime(mxnet_fixtures, tmp_path):
    """The fixture's variant gamma (0.01, 5, -3), as MXNet's exporter would write it: the port equals
    onnxruntime (the negative channel is folded into conv1), and both differ from MXNet."""
    folder = mxnet_fixtures / "gluon_resnet18_v2"
    x = np.load(folder / "input.npy")
    path = tmp_path / "variant.onnx"
    _with_data_bn(folder / "model.onnx", path, gamma=[0.01, 5.0, -3.0])
    reference = run_onnxruntime(path, x)
    ours = run_converted(convert_onnx(path), x).numpy()
    assert rel_diff(reference, ours) <= TOLERANCE
    assert np.array_equal(reference.argmax(1), ours.argmax(1))
    assert rel_diff(np.load(folder / "logits_mxnet_variant_datagamma.npy"), ours) > 10 * TOLERANCE


@pytest.mark.parametrize("depth", [18, 50])
def test_pre_2020_zoo_spatial0_form_matches_mxnet(mxnet_fixtures, tmp_path, depth):
    """MXNet's own export rewritten as its 2018 exporter wrote the zoo's v1 files (opset 7,
    BatchNormalization spatial=0 over (C,) parameters): converted per channel, it equals MXNet's
    logits, and the check runs the node evaluator (onnxruntime cannot be trusted with spatial=0)."""
    from tests.onnx.test_torch_export import as_old_mxnet_export

    folder = mxnet_fixtures / f"gluon_resnet{depth}_v1"
    path = tmp_path / f"resnet{depth}v1-old.onnx"
    assert as_old_mxnet_export(folder / "model.onnx", path) > 0
    x = np.load(folder / "input.npy")
    conversion = convert_onnx(path)
    assert conversion.metadata.arch == f"resnet{depth}_v1"
    ours = run_converted(conversion, x).numpy()
    mxnet = np.load(folder / "logits_mxnet.npy")
    assert rel_diff(mxnet, ours) <= TOLERANCE
    assert np.array_equal(mxnet.argmax(1), ours.argmax(1))
    assert any("spatial=0" in note for note in conversion.report.notes)
