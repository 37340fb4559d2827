"""Every Gluon ResNet V1/V2 depth in both save formats, and the symbolic ResNets, against the logits
the real MXNet computed on the same input (tests/peers/make_fixtures.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from resnet_port.checkpoints import load_model
from resnet_port.converters.mxnet import convert_mxnet
from resnet_port.converters.mxnet.cli import main as cli_main
from tests.mxnet.conftest import assert_parity, logits_of, model_of
from tests.peers.mxnet_cache import GLUON_MODELS, SYMBOLIC_MODELS

pytestmark = pytest.mark.peer


def _slow_if_deep(name: str):
    deep = any(f"resnet{d}" in name for d in (101, 152))
    return pytest.param(name, marks=pytest.mark.slow) if deep else name


@pytest.mark.parametrize("name", [_slow_if_deep(n) for n in GLUON_MODELS])
@pytest.mark.parametrize("form", ["save_parameters", "export"])
def test_gluon_matches_mxnet(cache: Path, name: str, form: str) -> None:
    folder = cache / name
    depth, version = name[len("gluon_resnet") :].split("_v")
    if form == "save_parameters":
        conversion = convert_mxnet(folder / "model.params")
    else:
        conversion = convert_mxnet(folder / "export-0000.params", symbol=folder / "export-symbol.json")
    assert conversion.metadata.arch == f"resnet{depth}_v{version}"
    pre = conversion.metadata.preprocessing
    assert (pre.channel_order, pre.pixel_max) == ("RGB", 1.0)
    assert pre.mean == pytest.approx((0.485, 0.456, 0.406)) and pre.std == pytest.approx((0.229, 0.224, 0.225))
    assert_parity(np.load(folder / "logits_mxnet.npy"), logits_of(model_of(conversion), np.load(folder / "input.npy")))


@pytest.mark.parametrize("name", [_slow_if_deep(n) for n in SYMBOLIC_MODELS])
def test_symbolic_matches_mxnet(cache: Path, name: str) -> None:
    folder = cache / name
    depth = name[len("symbolic_resnet") :]
    # The symbol is found beside resnet-D-0000.params, as the old model zoo ships the pair.
    conversion = convert_mxnet(folder / f"resnet-{depth}-0000.params")
    assert conversion.metadata.arch == f"mxnet_resnet{depth}"
    spec = conversion.spec
    assert (spec.input_bn, spec.bn_eps, spec.projection, spec.residual) == ("fixed_gamma", 2e-5, "first_of_stage", "v2")
    pre = conversion.metadata.preprocessing
    assert (pre.channel_order, pre.pixel_max, pre.mean, pre.std) == ("RGB", 255.0, None, None)
    x = np.load(folder / "input.npy")
    assert x.max() > 200  # the fixture feeds raw 0-255 pixels, as the symbolic models take
    assert_parity(np.load(folder / "logits_mxnet.npy"), logits_of(model_of(conversion), x))


@pytest.mark.parametrize("name,args", [
    ("gluon_resnet50_v1", ["model.params", "--arch", "resnet50_v1"]),
    ("symbolic_resnet18", ["resnet-18-0000.params", "--symbol", "resnet-18-symbol.json"]),
])
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_cli_checkpoint_round_trip(cache: Path, tmp_path: Path, name: str, args: list[str], suffix: str) -> None:
    """convert-mxnet -> checkpoint file -> load_model still reproduces MXNet, and the file records its source."""
    folder = cache / name
    argv = [str(folder / a) if a.endswith((".params", ".json")) else a for a in args]
    out = tmp_path / f"model{suffix}"
    verify = ["--verify", str(folder / "input.npy"), str(folder / "logits_mxnet.npy")]
    assert cli_main([*argv, "-o", str(out), "--report", str(tmp_path / "report.json"), *verify]) == 0
    model, meta = load_model(out)
    assert meta.verification["passed"] and meta.verification["max_rel_diff"] <= 1e-4
    assert meta.source.framework == "mxnet" and meta.source.files[0].path == Path(argv[0]).name
    assert (tmp_path / "report.json").is_file()
    assert_parity(np.load(folder / "logits_mxnet.npy"), logits_of(model, np.load(folder / "input.npy")))
