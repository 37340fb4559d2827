"""GluonCV's ResNets (V1b, V1c, V1d, V1e, V1s) against GluonCV's own model code run by the real MXNet.

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
from resnet_port.converters.mxnet.gluon_graph import run_gluoncv_v1b
from resnet_port.converters.mxnet.ndarray import read_ndarray_file
from resnet_port.resnet_ref import get_spec, list_archs
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
@pytest.mark.parametrize("name,what", [("resnet50_v1b_gn", "GroupNorm"), ("se_resnet18_v1", "squeeze-and-excitation"),
                                       ("cifar_resnet20_v1", "CIFAR ResNet"), ("cifar_resnet20_v2", "CIFAR ResNet")])
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
