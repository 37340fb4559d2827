"""`audit` on files written by the real frameworks: the Gluon / ONNX files MXNet wrote (peer
fixtures) and the caffemodels BVLC Caffe wrote (the golden files).

Same network, two formats: `equivalent`; the same file format twice: `identical`; a real port with
a bug injected here: that cause, and only it.
"""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
import torch

from resnet_port.checkpoints import save_checkpoint
from tests.caffe.conftest import CAFFE_REF, unpacked
from tests.peers.mxnet_cache import mxnet_fixtures  # noqa: F401 - pytest fixture

pytestmark = [pytest.mark.peer, pytest.mark.slow]


def test_gluon_params_and_its_onnx_export_are_equivalent(mxnet_fixtures, run_audit):  # noqa: F811
    folder = mxnet_fixtures / "gluon_resnet18_v2"  # V2: its input BatchNorm is the trap of the ONNX export
    code, report = run_audit(folder / "model.params", folder / "model.onnx", "-n", "2", "--layers", "fine")
    assert (code, report["verdict"], report["causes"]) == (0, "equivalent", [])
    assert report["top1_agreement"] == 1.0
    assert report["outputs"]["max_rel_diff"] <= 1e-5
    # both converted onto the reference names: every module pairs, none parts
    assert report["first_divergent_layer"] is None
    assert report["layer_summary"]["only_a"] == report["layer_summary"]["only_b"] == []
    assert [row["name"] for row in report["layers"][:2]] == ["data_bn", "conv1"]
    assert "final_bn" in {row["name"] for row in report["layers"]}


def test_two_mxnet_formats_of_one_net_are_identical(mxnet_fixtures, run_audit):  # noqa: F811
    folder = mxnet_fixtures / "gluon_resnet18_v1"
    code, report = run_audit(folder / "model.params", folder / "export-0000.params", "-n", "2")
    assert (code, report["verdict"], report["causes"]) == (0, "identical", [])


def test_stored_gamma_that_mxnet_ignores_changes_nothing(mxnet_fixtures, run_audit):  # noqa: F811
    """Gluon V2's input BatchNorm runs with fix_gamma: its stored gamma (far from 1 in the variant)
    is ignored by MXNet, whose logits for both files are equal; the audit must not blame fix_gamma."""
    folder = mxnet_fixtures / "gluon_resnet18_v2"
    code, report = run_audit(folder / "model.params", folder / "variant_datagamma.params", "-n", "2")
    assert code == 0 and report["causes"] == []
    assert report["verdict"] in ("identical", "equivalent")


MEAN = CAFFE_REF / "ResNet_mean.binaryproto"  # the release's real mean image


@pytest.fixture(scope="module")
def golden_r50(tmp_path_factory):
    """The golden ResNet-50 caffemodel and its conversion (with the real mean image) saved as a
    toolkit checkpoint."""
    from resnet_port.converters.caffe import convert_caffe

    model = unpacked("ResNet-50.caffemodel")
    conversion = convert_caffe(model, mean=MEAN)
    assert conversion.metadata.preprocessing.mean_image is not None
    folder = tmp_path_factory.mktemp("golden")
    port = save_checkpoint(folder / "port.pth", conversion.spec, conversion.state_dict, conversion.metadata)
    yield model, port, conversion, folder
    shutil.rmtree(folder, ignore_errors=True)  # 400 MB: free the disk for the modules after this one


def test_golden_caffemodel_and_its_conversion_are_equivalent(golden_r50, run_audit):
    model, port, _, _ = golden_r50
    code, report = run_audit(model, port, "-n", "2", "--mean-a", str(MEAN))
    assert (code, report["verdict"], report["causes"]) == (0, "equivalent", [])
    assert report["max_abs_diff"] == 0.0
    assert report["first_divergent_layer"] is None and len(report["layers"]) == 2 + 1 + 16 + 2  # stem, blocks, head


def test_golden_caffemodel_and_its_h5_are_identical(golden_r50, run_audit):
    model, _, _, _ = golden_r50
    h5 = unpacked("ResNet-50.caffemodel.h5")
    code, report = run_audit(
        model, h5, "-n", "2", "--mean-a", str(MEAN), "--mean-b", str(MEAN),
        "--prototxt-b", str(CAFFE_REF / "ResNet-50-deploy.prototxt"),
    )
    assert (code, report["verdict"], report["causes"]) == (0, "identical", [])


def test_golden_port_with_bn_factor_left_in_is_named(golden_r50, run_audit):
    """A port that kept Caffe's BatchNorm blobs as stored (mean*s, var*s, s = 999.982)."""
    model, _, conversion, folder = golden_r50
    bad = dict(conversion.state_dict)
    for key, value in conversion.state_dict.items():
        if key.endswith(("running_mean", "running_var")):
            bad[key] = value * torch.tensor(999.982, dtype=torch.float32)
    port = save_checkpoint(folder / "bad_bn.pth", conversion.spec, bad, conversion.metadata)
    code, report = run_audit(model, port, "-n", "1", "--mean-a", str(MEAN))
    assert (code, report["verdict"]) == (1, "different")
    assert [c["key"] for c in report["causes"]] == ["bn_scale_factor"]
    # every BN's statistics were scaled: the outputs part at the first BN, the stem's
    assert report["first_divergent_layer"] == report["causes"][0]["first_layer"] == "bn1"


def test_golden_port_with_per_channel_means_is_named(golden_r50, run_audit):
    """A port that replaced the release's mean image by its three channel averages (a common
    shortcut: 104, 117, 123 are its rounded averages)."""
    model, _, conversion, folder = golden_r50
    pre = conversion.metadata.preprocessing
    averages = tuple(float(v) for v in np.asarray(pre.mean_image, dtype=np.float64).mean(axis=(1, 2)))
    meta = dataclasses.replace(conversion.metadata, preprocessing=dataclasses.replace(pre, mean_image=None, mean=averages))
    port = save_checkpoint(folder / "means.pth", conversion.spec, conversion.state_dict, meta)
    code, report = run_audit(model, port, "-n", "1", "--mean-a", str(MEAN))
    assert (code, report["verdict"]) == (1, "different")
    assert [c["key"] for c in report["causes"]] == ["mean_image"]
    assert report["first_divergent_layer"] == report["causes"][0]["first_layer"] == "conv1"  # what conv1 reads


def test_golden_weights_poured_into_torchvision_resnet50_name_three_causes(golden_r50, run_audit):
    """The classic naive port: Caffe's tensors loaded into torchvision's resnet50 (stride in the
    3x3, floor pooling, no conv1 bias).  Three bugs at once, each found in turn."""
    from resnet_port.checkpoints import CheckpointMetadata
    from resnet_port.resnet_ref import get_spec

    model, _, conversion, folder = golden_r50
    spec = get_spec("resnet50")
    naive = {k: v for k, v in conversion.state_dict.items() if k != "conv1.bias"}
    meta = CheckpointMetadata(spec=spec, arch="resnet50", preprocessing=conversion.metadata.preprocessing)
    port = save_checkpoint(folder / "naive.pth", spec, naive, meta)
    code, report = run_audit(model, port, "-n", "1", "--mean-a", str(MEAN))
    assert (code, report["verdict"]) == (1, "different")
    assert sorted(c["key"] for c in report["causes"]) == ["missing_bias", "pool_rounding", "stride_placement"]
    assert report["causes"][-1]["rel_logit_diff_after_fix"] <= 1e-4
    # conv1 lost its bias, the stem pool rounds down, the first strided block strides its 3x3
    assert report["first_divergent_layer"] == "conv1"
    where = {c["key"]: c["first_layer"] for c in report["causes"]}
    assert where == {"missing_bias": "conv1", "pool_rounding": "maxpool", "stride_placement": "layer2.0"}


def test_caffe_side_takes_mean_values(tmp_path, run_audit):
    """A Caffe net converted with --mean-values: auditing the caffemodel against the port needs the same
    per-channel mean on the Caffe side (--mean-values-a), or the two sides see different inputs."""
    from resnet_port.converters.caffe import convert_caffe, parse_prototxt, write_caffemodel
    from tests.caffe.netgen import resnet_prototxt, weights_for

    text = resnet_prototxt(stem="deep", block="basic", widths=(8, 8, 16, 16), stem_width=8, input_size=64, pool5=2)
    prototxt = tmp_path / "deep.prototxt"
    prototxt.write_text(text)
    model = write_caffemodel(tmp_path / "deep.caffemodel", parse_prototxt(text), weights_for(parse_prototxt(text), seed=2))
    conversion = convert_caffe(model, prototxt=prototxt, mean_values=[104, 117, 123])
    port = save_checkpoint(tmp_path / "deep.pth", conversion.spec, conversion.state_dict, conversion.metadata)
    code, report = run_audit(model, port, "-n", "2", "--prototxt-a", str(prototxt), "--mean-values-a", "104", "117", "123")
    assert (code, report["verdict"]) == (0, "equivalent")
    code, report = run_audit(model, port, "-n", "2", "--prototxt-a", str(prototxt))
    assert report["verdict"] != "equivalent"
