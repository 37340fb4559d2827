"""Each pitfall of porting Caffe's ResNets, handled wrongly inside the test, must move the numbers
beyond tolerance against real Caffe's blobs; handled as the converter does, they must not.

Tolerance is the issue's 1e-4 relative (max |diff| / max |Caffe value|).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from resnet_port.converters.caffe import CaffeInterpreter, convert_caffe, read_caffemodel
from resnet_port.resnet_ref import build_model
from tests.caffe.conftest import GOLDEN, unpacked

TOL = 1e-4


def rel(reference, ours) -> float:
    reference = np.asarray(reference, np.float64)
    return float(np.abs(reference - np.asarray(ours, np.float64).reshape(reference.shape)).max() / np.abs(reference).max())


def golden(name: str) -> np.ndarray:
    return np.load(GOLDEN / "ResNet-50_224" / f"{name}.npy")


@pytest.fixture(scope="module")
def r50():
    return convert_caffe(unpacked("ResNet-50.caffemodel"))


def build(spec, state_dict) -> torch.nn.Module:
    model = build_model(spec)
    full = model.state_dict()
    full.update(state_dict)
    model.load_state_dict(full)
    return model.eval()


def stem(model, x) -> dict[str, np.ndarray]:
    with torch.inference_mode():
        raw = model.conv1(torch.from_numpy(x))
        pool1 = model.maxpool(model.relu(model.bn1(raw)))
    return {"conv1": raw.numpy(), "pool1": pool1.numpy()}


def through_stage2(model, x) -> np.ndarray:
    with torch.inference_mode():
        y = model.maxpool(model.relu(model.bn1(model.conv1(torch.from_numpy(x)))))
        return model.layer2[0](model.layer1(y)).numpy()


X = None


def data() -> np.ndarray:
    global X
    if X is None:
        X = golden("data")[:1].copy()
    return X


def test_bn_scale_factor(r50):
    right = stem(build(r50.spec, r50.state_dict), data())["pool1"]
    assert rel(golden("pool1")[:1], right) < TOL
    blobs = read_caffemodel(unpacked("ResNet-50.caffemodel")).blobs["bn_conv1"]
    wrong_sd = dict(r50.state_dict)
    wrong_sd["bn1.running_mean"] = torch.from_numpy(blobs[0].copy())  # mean * s, not divided by s
    wrong_sd["bn1.running_var"] = torch.from_numpy(blobs[1].copy())
    wrong = stem(build(r50.spec, wrong_sd), data())["pool1"]
    assert rel(golden("pool1")[:1], wrong) > 100 * TOL


@pytest.mark.parametrize("eps", [1e-3])
def test_bn_eps(r50, eps):
    assert r50.spec.bn_eps == 1e-5  # Caffe's default: the prototxts set none
    wrong = stem(build(r50.spec.replace(bn_eps=eps), r50.state_dict), data())["pool1"]
    assert rel(golden("pool1")[:1], wrong) > TOL


def test_ceil_mode_pool1_not_padding(r50):
    assert r50.spec.stem_pool == "max_ceil"
    wrong = stem(build(r50.spec.replace(stem_pool="max"), r50.state_dict), data())["pool1"]  # torchvision: pad 1, floor
    assert wrong.shape == golden("pool1")[:1].shape  # same 56x56: only the values tell
    assert rel(golden("pool1")[:1], wrong) > 10 * TOL


def test_stride_in_first_1x1(r50):
    right = through_stage2(build(r50.spec, r50.state_dict), data())
    assert rel(golden("res3a")[:1], right) < TOL
    wrong = through_stage2(build(r50.spec.replace(stride_in="3x3"), r50.state_dict), data())
    assert wrong.shape == right.shape
    assert rel(golden("res3a")[:1], wrong) > 10 * TOL


def test_conv1_bias_kept(r50):
    assert "stem" in r50.spec.conv_bias and "conv1.bias" in r50.state_dict
    right = stem(build(r50.spec, r50.state_dict), data())
    assert rel(golden("conv1")[:1], right["conv1"]) < TOL
    wrong_sd = {k: v for k, v in r50.state_dict.items() if k != "conv1.bias"}
    wrong_spec = r50.spec.replace(conv_bias=())
    wrong = stem(build(wrong_spec, wrong_sd), data())
    assert rel(golden("conv1")[:1], wrong["conv1"]) > TOL
    assert rel(golden("pool1")[:1], wrong["pool1"]) > TOL


def test_channel_order_bgr_and_rgb(r50):
    model = build(r50.spec, r50.state_dict)
    swapped = stem(model, data()[:, ::-1].copy())  # RGB fed to the BGR model
    assert rel(golden("conv1")[:1], swapped["conv1"]) > 100 * TOL
    rgb = convert_caffe(unpacked("ResNet-50.caffemodel"), rgb=True, mean_values=[104, 117, 123])
    assert rgb.metadata.preprocessing.channel_order == "RGB"
    assert rgb.metadata.preprocessing.mean == (123.0, 117.0, 104.0)
    rgb_model = build(rgb.spec, rgb.state_dict)
    right = stem(rgb_model, data()[:, ::-1].copy())
    assert rel(golden("conv1")[:1], right["conv1"]) < 1e-6
    assert rel(golden("pool1")[:1], right["pool1"]) < 1e-6


def test_pool5_is_a_fixed_7x7_pool_not_global(r50):
    """At 256x256 the last map is 8x8: Caffe's 7x7/1 pool5 leaves 2x2 positions; classified one by one
    and averaged (the fully convolutional reading), it differs from global pooling."""
    x = np.random.default_rng(5).uniform(-120, 135, (1, 3, 256, 256)).astype(np.float32)
    caffe = read_caffemodel(unpacked("ResNet-50.caffemodel"))
    res5c = CaffeInterpreter(caffe.net, caffe.blobs).forward({"data": x}, until="res5c_relu")["res5c"].numpy()
    assert res5c.shape[-2:] == (8, 8)
    # Independent head: 7x7 stride-1 windows averaged, the classifier at each, then the mean.
    windows = np.stack([res5c[..., i : i + 7, j : j + 7].mean(axis=(2, 3)) for i in range(2) for j in range(2)], 1)
    weight, bias = caffe.blobs["fc1000"]
    expected = (windows.astype(np.float64) @ weight.T.astype(np.float64) + bias).mean(1)
    with torch.inference_mode():
        right = build(r50.spec, r50.state_dict)(torch.from_numpy(x)).numpy()
        wrong = build(r50.spec.replace(head_pool="global"), r50.state_dict)(torch.from_numpy(x)).numpy()
    assert rel(expected, right) < TOL
    assert rel(expected, wrong) > 10 * TOL
