"""The conventions that make a port silently wrong, each shown to matter on MXNet's own numbers:
the right handling reproduces MXNet, the wrong handling (written out here) moves the logits far
beyond the tolerance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from resnet_port.converters.mxnet import convert_mxnet, read_ndarray_file
from resnet_port.resnet_ref import build_model
from tests.mxnet.conftest import assert_moves, assert_parity, logits_of, model_of

pytestmark = pytest.mark.peer


def _symbolic(cache: Path, depth: int = 18):
    folder = cache / f"symbolic_resnet{depth}"
    conversion = convert_mxnet(folder / f"resnet-{depth}-0000.params", symbol=folder / f"resnet-{depth}-symbol.json")
    return folder, conversion, np.load(folder / "input.npy"), np.load(folder / "logits_mxnet.npy")


def test_fix_gamma_symbolic_data_bn(cache: Path) -> None:
    """bn_data has fix_gamma=True: MXNet uses gamma = 1 whatever the file stores."""
    folder, conversion, x, reference = _symbolic(cache)
    stored = read_ndarray_file(folder / "resnet-18-0000.params")["arg:bn_data_gamma"]
    assert np.abs(stored - 1).max() > 0.5  # the fixture stores a gamma far from 1
    assert torch.equal(conversion.state_dict["data_bn.weight"], torch.ones(3))
    assert_parity(reference, logits_of(model_of(conversion), x))
    # Wrong: honour the stored gamma (an ordinary affine BatchNorm with it).
    model = model_of(conversion)
    wrong_bn = nn.BatchNorm2d(3, eps=model.data_bn.eps).eval()
    wrong_bn.load_state_dict({**model.data_bn.state_dict(), "weight": torch.from_numpy(stored)})
    model.data_bn = wrong_bn
    assert_moves(reference, logits_of(model, x))


def test_eps_2e5_not_1e5(cache: Path) -> None:
    """The classic symbolic ResNet's BatchNorms have eps 2e-5; PyTorch's default 1e-5 is wrong."""
    _, conversion, x, reference = _symbolic(cache)
    assert conversion.spec.bn_eps == 2e-5 and not conversion.spec.bn_eps_overrides
    assert_parity(reference, logits_of(model_of(conversion), x))
    wrong = model_of(conversion, conversion.spec.replace(bn_eps=1e-5))
    assert_moves(reference, logits_of(wrong, x))


def test_symbolic_input_is_raw_pixels(cache: Path) -> None:
    """The symbolic model normalises inside (its data BN): feeding it ImageNet-normalised input is wrong."""
    _, conversion, x, reference = _symbolic(cache)
    mean = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
    std = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]
    assert_moves(reference, logits_of(model_of(conversion), (x / 255.0 - mean) / std))


def test_gluon_v1_bottleneck_conv_biases(cache: Path) -> None:
    """Gluon BottleneckV1's two 1x1 body convs have biases; dropping them is wrong."""
    folder = cache / "gluon_resnet50_v1"
    conversion = convert_mxnet(folder / "model.params")
    assert conversion.spec.conv_bias == ("conv1", "conv3")
    x, reference = np.load(folder / "input.npy"), np.load(folder / "logits_mxnet.npy")
    assert_parity(reference, logits_of(model_of(conversion), x))
    no_bias = {k: v for k, v in conversion.state_dict.items() if not (k.endswith((".conv1.bias", ".conv3.bias")))}
    wrong = build_model(conversion.spec.replace(conv_bias=()))
    wrong.load_state_dict({**wrong.state_dict(), **no_bias})
    assert_moves(reference, logits_of(wrong.eval(), x))


def test_gluon_v1_stride_in_first_1x1(cache: Path) -> None:
    """Gluon V1 strides the first 1x1 conv of a bottleneck; torchvision's 3x3 placement is wrong here."""
    folder = cache / "gluon_resnet50_v1"
    conversion = convert_mxnet(folder / "model.params")
    assert conversion.spec.stride_in == "1x1"
    wrong = model_of(conversion, conversion.spec.replace(stride_in="3x3"))
    assert_moves(np.load(folder / "logits_mxnet.npy"), logits_of(wrong, np.load(folder / "input.npy")))


@pytest.mark.parametrize("form", ["save_parameters", "export"])
def test_gluon_v2_input_bn(cache: Path, form: str) -> None:
    """V2 normalises its input with a BatchNorm (running statistics, no gamma/beta): leaving it out is wrong."""
    folder = cache / "gluon_resnet18_v2"
    if form == "save_parameters":
        conversion = convert_mxnet(folder / "model.params")
    else:
        conversion = convert_mxnet(folder / "export-0000.params", symbol=folder / "export-symbol.json")
    assert conversion.spec.input_bn == "affine_free"
    assert "data_bn.running_var" in conversion.state_dict and "data_bn.weight" not in conversion.state_dict
    x, reference = np.load(folder / "input.npy"), np.load(folder / "logits_mxnet.npy")
    assert_parity(reference, logits_of(model_of(conversion), x))
    model = model_of(conversion)
    model.data_bn = nn.Identity()
    assert_moves(reference, logits_of(model, x))


def test_gluon_v2_input_bn_ignores_stored_gamma(cache: Path) -> None:
    """A V2 file whose input-BN gamma holds (0.01, 5, -3): MXNet ignores it (fix_gamma) and so must we."""
    folder = cache / "gluon_resnet18_v2"
    stored = read_ndarray_file(folder / "variant_datagamma.params")["features.0.gamma"]
    assert stored.tolist() == pytest.approx([0.01, 5.0, -3.0])
    conversion = convert_mxnet(folder / "variant_datagamma.params")
    x, reference = np.load(folder / "input.npy"), np.load(folder / "logits_mxnet_variant_datagamma.npy")
    assert_parity(reference, logits_of(model_of(conversion), x))
    model = model_of(conversion)
    wrong_bn = nn.BatchNorm2d(3, eps=model.data_bn.eps).eval()
    wrong_bn.load_state_dict({**model.data_bn.state_dict(), "weight": torch.from_numpy(stored), "bias": torch.zeros(3)})
    model.data_bn = wrong_bn
    assert_moves(reference, logits_of(model, x))


def test_gluon_v2_input_bn_keeps_a_nonzero_beta(cache: Path) -> None:
    """MXNet uses the input BN's stored beta even though Gluon never trains it: a non-zero one is folded
    exactly into the affine-free BN's mean (so the file is still resnet18_v2), or kept by a fixed-gamma BN
    when --arch names no registered net; a port that dropped it moves the logits."""
    folder = cache / "gluon_resnet18_v2"
    path = folder / "variant_databeta.params"
    conversion = convert_mxnet(path)
    assert conversion.spec.input_bn == "affine_free" and conversion.metadata.arch == "resnet18_v2"
    assert "folded exactly" in " ".join(conversion.report.notes)
    x, reference = np.load(folder / "input.npy"), np.load(folder / "logits_mxnet_variant_databeta.npy")
    assert_parity(reference, logits_of(model_of(conversion), x))
    by_arch = convert_mxnet(path, arch="resnet18_v2")  # --arch resnetN_v2, as a user asks for it
    assert by_arch.spec == conversion.spec
    assert torch.equal(by_arch.state_dict["data_bn.running_mean"], conversion.state_dict["data_bn.running_mean"])
    params = read_ndarray_file(path)
    dropped = dict(conversion.state_dict, **{"data_bn.running_mean": torch.from_numpy(params["features.0.running_mean"])})
    wrong = build_model(conversion.spec)
    wrong.load_state_dict({**wrong.state_dict(), **dropped})
    assert_moves(reference, logits_of(wrong.eval(), x))


def test_gluon_eps_is_1e5(cache: Path) -> None:
    """Gluon writes eps=1e-5 into every BatchNorm of its export; MXNet's symbol default 1e-3 would be wrong."""
    folder = cache / "gluon_resnet50_v2"
    conversion = convert_mxnet(folder / "export-0000.params", symbol=folder / "export-symbol.json")
    assert conversion.spec.bn_eps == 1e-5
    wrong = model_of(conversion, conversion.spec.replace(bn_eps=1e-3))
    assert_moves(np.load(folder / "logits_mxnet.npy"), logits_of(wrong, np.load(folder / "input.npy")))
