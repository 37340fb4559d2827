"""GluonCV's ResNets (V1b, V1c, V1d, V1e, V1s; the CIFAR V1/V2 nets) against GluonCV's own model code run
by the real MXNet, and Gluon's model-zoo thumbnail nets, whose save_parameters names the CIFAR nets share.

The fixtures (tests/peers/make_gluoncv_fixtures.py) build each net with GluonCV's resnetv1b.py, set
every parameter and BN statistic to seeded non-trivial values, save it both ways (save_parameters and
export) and record MXNet's logits at two input sizes, one of them odd (97: the avg-down pools see a
partial last window there, where GluonCV's ceil_mode=True, count_include_pad=False matters).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from resnet_port.converters.mxnet import convert_mxnet
from resnet_port.converters.mxnet.cli import main
from resnet_port.converters.mxnet.gluon_graph import run_gluon, run_gluoncv_v1b
from resnet_port.converters.mxnet.ndarray import read_ndarray_file
from resnet_port.resnet_ref import build_model, get_spec, list_archs
from tests.mxnet.conftest import logits_of, model_of
from tests.peers.gluoncv_cache import gluoncv_fixtures  # noqa: F401 - re-exported pytest fixture

pytestmark = pytest.mark.peer

TOLERANCE = 1e-5  # of the largest logit, as the issue asks
V1B_FAMILY = {
    # fixture: (registered name, deep stem widths or None, avg down)
    "resnet18_v1b": ("resnet18_v1b", None, False),
    "resnet50_v1b": ("resnet50_v1b", None, False),
    "resnet50_v1c": ("resnet50_v1c", (32, 32, 64), False),
    "resnet50_v1d": ("resnet50_v1d", (32, 32, 64), True),
    "resnet50_v1e": ("resnet50_v1e", (64, 64, 128), True),
    "resnet50_v1s": ("resnet50_v1s", (64, 64, 128), False),
    "small_v1d": (None, (32, 32, 64), True),
}
FILES = {"save_parameters": "{n}.params", "export": "{n}-0000.params"}


@pytest.fixture(scope="module")
def cache(gluoncv_fixtures: Path) -> Path:  # noqa: F811 - the fixture imported above
    return gluoncv_fixtures


def _sizes(cache: Path, name: str) -> list[int]:
    return json.loads((cache / "manifest.json").read_text())["models"][name]["sizes"]


def _close(reference: np.ndarray, ours: np.ndarray) -> float:
    assert ours.shape == reference.shape
    rel = float(np.abs(reference - ours).max() / np.abs(reference).max())
    assert rel <= TOLERANCE, f"max rel diff {rel:.3g} > {TOLERANCE}"
    assert (reference.argmax(1) == ours.argmax(1)).all()
    return rel


@pytest.mark.parametrize("fmt", sorted(FILES))
@pytest.mark.parametrize("name", sorted(V1B_FAMILY))
def test_v1b_family_matches_gluoncv(cache: Path, name: str, fmt: str) -> None:
    conversion = convert_mxnet(cache / name / FILES[fmt].format(n=name))
    registered, stem, avg_down = V1B_FAMILY[name]
    spec = conversion.spec
    assert spec.stride_in == "3x3" or spec.block == "basic"
    assert spec.stem == ("deep" if stem else "7x7")
    if stem:
        assert spec.stem_width == stem[-1]
        assert tuple(conversion.state_dict[k].shape[0] for k in ("conv1.0.weight", "conv1.3.weight", "conv1.6.weight")) == stem
    assert spec.shortcut == ("avgpool_conv" if avg_down else "conv")
    if registered is not None:
        assert get_spec(registered, spec.num_classes) == spec
        if fmt == "save_parameters":
            assert conversion.metadata.arch == registered
    model = model_of(conversion)
    for size in _sizes(cache, name):
        x = np.load(cache / name / f"input_{size}.npy")
        _close(np.load(cache / name / f"logits_{size}.npy"), logits_of(model, x))


@pytest.mark.parametrize("name", ["small_v1d", "resnet50_v1e", "resnet18_v1b"])
def test_float64_referee_matches_mxnet(cache: Path, name: str) -> None:
    """The GluonCV referee convert-mxnet verifies save_parameters files with, against MXNet itself."""
    params = read_ndarray_file(cache / name / f"{name}.params")
    for size in _sizes(cache, name):
        x = np.load(cache / name / f"input_{size}.npy")
        _close(np.load(cache / name / f"logits_{size}.npy"), run_gluoncv_v1b(params, x))


def test_avg_down_counting_the_padding_is_caught_at_an_odd_size(cache: Path) -> None:
    """At 97 px the avg-down windows of layer2.. are partial; dividing them by the full window (a pool
    that counts the overhang as zeros) or rounding down moves the logits far beyond the tolerance (so
    the parity test above would catch either)."""
    conversion = convert_mxnet(cache / "small_v1d" / "small_v1d.params")
    x = np.load(cache / "small_v1d" / "input_97.npy")
    reference = np.load(cache / "small_v1d" / "logits_97.npy")
    def with_pool(**wrong) -> nn.Module:
        model = model_of(conversion)
        for module in model.modules():
            if isinstance(module, nn.Sequential) and isinstance(module[0], nn.AvgPool2d):
                module[0] = nn.AvgPool2d(2, 2, **wrong)
        return model

    ours = logits_of(with_pool(ceil_mode=True, divisor_override=4), x)
    rel = float(np.abs(reference - ours).max() / np.abs(reference).max())
    assert rel > 100 * TOLERANCE, rel
    with pytest.raises(RuntimeError, match="size of tensor"):  # floor: 25 -> 12, the body makes 13
        logits_of(with_pool(ceil_mode=False), x)


def test_deep_stem_width_and_avg_down_are_read_not_assumed(cache: Path) -> None:
    """v1e and v1d differ only in the stem widths, v1s and v1e only in the shortcut."""
    v1d = convert_mxnet(cache / "resnet50_v1d" / "resnet50_v1d-0000.params").spec
    v1e = convert_mxnet(cache / "resnet50_v1e" / "resnet50_v1e-0000.params").spec
    v1s = convert_mxnet(cache / "resnet50_v1s" / "resnet50_v1s-0000.params").spec
    assert v1e == v1d.replace(stem_width=128)
    assert v1e == v1s.replace(shortcut="avgpool_conv")


def test_registry_names() -> None:
    names = set(list_archs())
    for d in (20, 56, 110):
        assert {f"cifar_resnet{d}_v1", f"cifar_resnet{d}_v2"} <= names
        assert get_spec(f"cifar_resnet{d}_v1").depth == d and get_spec(f"cifar_resnet{d}_v2").num_classes == 10
    for d in (18, 34, 50, 101, 152):
        assert get_spec(f"resnet{d}_v1b") == get_spec(f"resnet{d}")  # the alias: torchvision's layout
    for d in (50, 101, 152):
        for v in "cdes":
            assert f"resnet{d}_v1{v}" in names
        assert get_spec(f"resnet{d}_v1s").stem_width == 128 and get_spec(f"resnet{d}_v1e").shortcut == "avgpool_conv"


def test_arch_is_checked(cache: Path) -> None:
    path = cache / "resnet50_v1d" / "resnet50_v1d.params"
    assert convert_mxnet(path, arch="resnet50_v1d").metadata.arch == "resnet50_v1d"
    with pytest.raises(Exception, match="not --arch resnet50_v1e"):
        convert_mxnet(path, arch="resnet50_v1e")


def test_cli_verifies_save_parameters_with_the_gluoncv_referee(cache: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "v1e.pth"
    code = main([str(cache / "resnet50_v1e" / "resnet50_v1e.params"), "-o", str(out), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert out.is_file()
    assert "GluonCV ResNetV1b graph" in captured.out


@pytest.mark.parametrize("fmt", sorted(FILES))
@pytest.mark.parametrize("name,what", [("resnet50_v1b_gn", "GroupNorm"), ("se_resnet18_v1", "squeeze-and-excitation")])
def test_group_norm_and_se_variants_are_refused_by_name(cache: Path, tmp_path: Path, capsys, name: str, what: str, fmt: str) -> None:
    out = tmp_path / "out.pth"
    code = main([str(cache / name / FILES[fmt].format(n=name)), "-o", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert what in err and name in err and "not supported" in err
    assert not out.exists()


def test_a_wrong_avg_down_pool_is_refused(cache: Path, tmp_path: Path) -> None:
    """An avg-down pool that rounds down ('valid') is not the reference's: refused naming the node."""
    symbol = json.loads((cache / "small_v1d" / "small_v1d-symbol.json").read_text())
    for node in symbol["nodes"]:
        if node["op"] == "Pooling" and node["attrs"].get("count_include_pad") == "False" and node["attrs"]["kernel"] == "(2, 2)":
            node["attrs"]["pooling_convention"] = "valid"
            break
    bad = tmp_path / "bad-symbol.json"
    bad.write_text(json.dumps(symbol))
    with pytest.raises(Exception, match="pooling_convention 'full'"):
        convert_mxnet(cache / "small_v1d" / "small_v1d-0000.params", symbol=bad)


def test_torch_agrees_with_itself_guard() -> None:
    """The reference's avg-down pool is GluonCV's: ceil_mode=True, count_include_pad=False."""
    from resnet_port.resnet_ref import build_model

    model = build_model(get_spec("resnet50_v1d"))
    pool = model.layer2[0].downsample[0]
    assert isinstance(pool, nn.AvgPool2d) and pool.ceil_mode and not pool.count_include_pad
    x = torch.arange(9.0).view(1, 1, 3, 3)
    # independent: windows [0,1,3,4], [2,5], [6,7], [8] averaged over the cells they cover
    expected = torch.tensor([[[[2.0, 3.5], [6.5, 8.0]]]])
    assert torch.equal(pool(x), expected)


@pytest.mark.parametrize("name,fmt,top1", [("resnet50_v1d", "save_parameters", 79.15), ("resnet50_v1c", "export", 78.03),
                                           ("resnet18_v1b", "export", 70.94)])
def test_published_rows_travel_with_the_checkpoint(cache: Path, name: str, fmt: str, top1: float) -> None:
    """GluonCV's model zoo table (ResNet.csv) rows, for validate --compare-published."""
    meta = convert_mxnet(cache / name / FILES[fmt].format(n=name)).metadata
    assert meta.arch == name
    assert meta.published["weight_source"] == "gluoncv"
    assert [round(100 - r["top1_error"], 2) for r in meta.published["results"]] == [top1]


# -- GluonCV's CIFAR ResNets and Gluon's thumbnail nets ------------------------------------------------
CIFAR_FAMILY = {
    # fixture: (registered name or None, stem_norm, v2_shortcut_input, depth)
    "cifar_resnet20_v1": ("cifar_resnet20_v1", "bn", "preactivated", 20),
    "cifar_resnet20_v2": ("cifar_resnet20_v2", "none", "block_input", 20),
    "cifar_resnet56_v2": ("cifar_resnet56_v2", "none", "block_input", 56),
    "thumb_resnet18_v1": ("resnet18_v1_thumbnail", "none", "preactivated", 18),
    "thumb_resnet18_v2": ("resnet18_v2_thumbnail", "none", "preactivated", 18),
    "thumb_small_v2": (None, "none", "preactivated", None),
}
CIFAR_FILES = {**FILES, "save_params": "{n}-legacy.params"}  # the pre-1.3 format: stage1_conv0_weight, ...


@pytest.mark.parametrize("fmt", sorted(CIFAR_FILES))
@pytest.mark.parametrize("name", sorted(CIFAR_FAMILY))
def test_cifar_and_thumbnail_nets_match_mxnet(cache: Path, name: str, fmt: str) -> None:
    """Both formats of each net: the stem GluonCV/Gluon built (conv-BN without ReLU, or the bare conv), the
    projections of the raw (CIFAR V2) or pre-activated (model zoo V2) input, MXNet's logits within 1e-5."""
    registered, stem_norm, reads, depth = CIFAR_FAMILY[name]
    conversion = convert_mxnet(cache / name / CIFAR_FILES[fmt].format(n=name))
    spec = conversion.spec
    assert (spec.stem, spec.stem_pool, spec.stem_norm, spec.v2_shortcut_input) == ("3x3", "none", stem_norm, reads)
    if depth:
        assert spec.depth == depth
    if registered:
        # the fixtures' input BN has a non-zero beta (MXNet applies it): folded, so the registered name holds
        assert conversion.metadata.arch == registered and get_spec(registered, spec.num_classes) == spec
    if name.startswith("cifar_"):
        assert conversion.metadata.preprocessing.crop == 32 and conversion.metadata.preprocessing.mean[0] == 0.4914
        # CIFAR-10's labels in the dataset's order, not ImageNet's
        assert conversion.metadata.class_order == "cifar10" and conversion.metadata.classes[0] == "airplane"
    else:
        assert conversion.metadata.class_order == "imagenet1k_wnid_sorted"
    model = model_of(conversion)
    for size in _sizes(cache, name):
        x = np.load(cache / name / f"input_{size}.npy")
        _close(np.load(cache / name / f"logits_{size}.npy"), logits_of(model, x))


@pytest.mark.parametrize("name", ["cifar_resnet20_v1", "cifar_resnet20_v2", "thumb_resnet18_v1", "thumb_resnet18_v2", "thumb_small_v2"])
def test_gluon_referee_follows_each_class(cache: Path, name: str) -> None:
    """The float64 referee of save_parameters files (GluonCV's CIFAR classes, the model zoo's thumbnail
    ones), against MXNet itself; reading a CIFAR V2 file with the model zoo's projections must fail."""
    params = read_ndarray_file(cache / name / f"{name}.params")
    raw = CIFAR_FAMILY[name][2] == "block_input"
    for size in _sizes(cache, name):
        x = np.load(cache / name / f"input_{size}.npy")
        reference = np.load(cache / name / f"logits_{size}.npy")
        _close(reference, run_gluon(params, x, v2_raw_projection=raw))
        if raw:
            wrong = run_gluon(params, x, v2_raw_projection=False)
            assert np.abs(wrong - reference).max() > 100 * TOLERANCE * np.abs(reference).max()


def test_cifar_v2_projection_and_v1_stem_relu_matter(cache: Path) -> None:
    """Built with the model zoo's pre-activated projection, or with a ReLU after the CIFAR V1 stem BN,
    the port is far off MXNet: the parity tests above would catch either mistake."""
    for name, field, wrong in [("cifar_resnet20_v2", "v2_shortcut_input", "preactivated"), ("cifar_resnet20_v1", "stem_norm", "bn_relu")]:
        conversion = convert_mxnet(cache / name / f"{name}.params")
        model = build_model(conversion.spec.replace(**{field: wrong}))
        model.load_state_dict(conversion.state_dict, strict=False)
        x = np.load(cache / name / "input_32.npy")
        reference = np.load(cache / name / "logits_32.npy")
        assert np.abs(logits_of(model.eval(), x) - reference).max() > 100 * TOLERANCE * np.abs(reference).max(), name


def test_cifar_v2_and_thumbnail_v2_files_are_told_apart(cache: Path) -> None:
    """GluonCV's CIFARResNetV2 and Gluon's ResNetV2(thumbnail=True) save the same names; their projections
    differ.  Each file takes the reading the registry knows (cifar_resnet20_v2, resnet18_v2_thumbnail), a
    bottleneck file the model zoo's (GluonCV's CIFAR nets have none), and the report says so; --arch naming
    the other network is refused, since neither reading is that network."""
    cifar = convert_mxnet(cache / "cifar_resnet20_v2" / "cifar_resnet20_v2.params")
    assert cifar.metadata.source.details["gluon_class"] == "GluonCV CIFARResNetV2"
    assert any("the two classes save the same names" in note for note in cifar.report.notes)
    thumb = convert_mxnet(cache / "thumb_resnet18_v2" / "thumb_resnet18_v2.params")
    assert thumb.spec.v2_shortcut_input == "preactivated" and thumb.metadata.arch == "resnet18_v2_thumbnail"
    # A thumbnail stem is made for small images and the file has no input size: 32x32, whole image, as
    # convert-caffe assumes for the same stem; ImageNet's mean/std (the model zoo's transforms) stay.
    prep = thumb.metadata.preprocessing
    assert (prep.resize, prep.crop, prep.mean) == (32, 32, (0.485, 0.456, 0.406))
    assert any("32x32 assumed" in w for w in thumb.report.warnings)
    assert not any("32x32 assumed" in w for w in cifar.report.warnings)  # GluonCV's CIFAR transforms are known
    bottleneck = convert_mxnet(cache / "thumb_small_v2" / "thumb_small_v2.params")
    assert bottleneck.spec.v2_shortcut_input == "preactivated" and bottleneck.spec.block == "bottleneck"
    assert convert_mxnet(cache / "thumb_resnet18_v2" / "thumb_resnet18_v2.params", arch="resnet18_v2_thumbnail").metadata.arch
    with pytest.raises(Exception, match="not --arch resnet18_v2_thumbnail"):
        convert_mxnet(cache / "cifar_resnet20_v2" / "cifar_resnet20_v2.params", arch="resnet18_v2_thumbnail")


def test_v2_input_bn_beta_is_folded_exactly(cache: Path) -> None:
    """MXNet applies the stored beta of Gluon's BatchNorm(scale=False, center=False) input BN; the
    fixtures set it non-zero.  Read as the registered affine-free BN, beta moves into the running mean
    (m - beta * sqrt(var + eps)); --arch naming the registered net takes that reading; a port that
    dropped beta would be far off MXNet."""
    path = cache / "cifar_resnet20_v2" / "cifar_resnet20_v2.params"
    params = read_ndarray_file(path)
    beta, mean, var = (params[f"features.0.{k}"].astype(np.float64) for k in ("beta", "running_mean", "running_var"))
    assert np.abs(beta).max() > 0.05
    conversion = convert_mxnet(path, arch="cifar_resnet20_v2")
    assert conversion.spec.input_bn == "affine_free"
    expected = mean - beta * np.sqrt(var + 1e-5)
    assert np.allclose(conversion.state_dict["data_bn.running_mean"].numpy(), expected, rtol=1e-6, atol=1e-6)
    assert any("folded exactly" in note for note in conversion.report.notes)
    dropped = dict(conversion.state_dict, **{"data_bn.running_mean": torch.from_numpy(mean.astype(np.float32))})
    model = build_model(conversion.spec)
    model.load_state_dict(dropped, strict=False)
    x = np.load(cache / "cifar_resnet20_v2" / "input_32.npy")
    reference = np.load(cache / "cifar_resnet20_v2" / "logits_32.npy")
    assert np.abs(logits_of(model.eval(), x) - reference).max() > 100 * TOLERANCE * np.abs(reference).max()


def test_cifar_cli_verifies_with_gluoncv_cifar_referee(cache: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "c20.pth"
    code = main([str(cache / "cifar_resnet20_v2" / "cifar_resnet20_v2.params"), "-o", str(out), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "GluonCV CIFARResNetV2 graph" in captured.out
    assert out.is_file()
