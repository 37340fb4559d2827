"""The reference model's forward pass, checked against independent computations written here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from resnet_port.resnet_ref import ResNet, create_model, get_spec, list_archs

torch.set_num_threads(1)


def expected_feature_size(name: str, size: int) -> int:
    """The last stage's spatial size, from the conv/pool arithmetic of each source (not the model)."""
    spec = get_spec(name)
    if spec.stem == "7x7":
        s = (size + 2 * 3 - 7) // 2 + 1
    elif spec.stem == "deep":
        s = (size + 2 * 1 - 3) // 2 + 1
    else:
        s = size
    if spec.stem_pool == "max":
        s = (s + 2 - 3) // 2 + 1
    elif spec.stem_pool == "max_ceil":
        # Caffe: ceil, then drop a last window that would start outside the input.
        out = math.ceil((s - 3) / 2) + 1
        s = out - 1 if (out - 1) * 2 >= s else out
    for _ in spec.layers[1:]:
        s = (s - 1) // 2 + 1  # a 1x1/2 conv, a 3x3/2 pad-1 conv and a ceil 2x2/2 pool all give this
    return s


@pytest.mark.parametrize("name", list_archs())
def test_forward_shapes_on_every_constructor(name):
    sizes = (32, 33, 31, 40) if name.startswith("cifar_") else (224, 227, 193, 256)
    with torch.device("meta"):
        model = create_model(name, num_classes=11).eval()
        for size in sizes:
            feats = model.forward_features(torch.empty(2, 3, size, size))
            logits = model.forward_head(feats)
            f = expected_feature_size(name, size)
            assert tuple(feats.shape) == (2, get_spec(name).num_features, f, f), size
            assert tuple(logits.shape) == (2, 11), size


@pytest.mark.parametrize(
    "name,size",
    [("caffe_resnet50", 227), ("resnet18", 193), ("resnet50_v2", 227), ("mxnet_resnet18", 193),
     ("resnet50_v1d", 227), ("caffe_resnet101", 193), ("cifar_resnet18", 33)],
)
def test_real_forward_at_odd_sizes(name, size):
    torch.manual_seed(0)
    model = create_model(name).eval()
    with torch.inference_mode():
        out = model(torch.randn(1, 3, size, size))
    assert out.shape == (1, 1000) and torch.isfinite(out).all()


def _numpy_max_pool_ceil(x: np.ndarray, k: int = 3, s: int = 2) -> np.ndarray:
    """Caffe's MAX pooling with pad 0: pooled = ceil((H - k) / s) + 1, windows clipped to the input."""
    n, c, h, w = x.shape
    oh, ow = math.ceil((h - k) / s) + 1, math.ceil((w - k) / s) + 1
    out = np.empty((n, c, oh, ow), dtype=x.dtype)
    for i in range(oh):
        for j in range(ow):
            out[:, :, i, j] = x[:, :, i * s : min(i * s + k, h), j * s : min(j * s + k, w)].max(axis=(2, 3))
    return out


def test_caffe_pool1_is_ceil_mode_without_padding():
    torch.manual_seed(0)
    model = create_model("caffe_resnet50").eval()
    x = torch.randn(2, 3, 224, 224) * 50
    with torch.inference_mode():
        pre = model.relu(model.bn1(model.conv1(x)))
        pooled = model.maxpool(pre)
    assert pre.shape[-1] == 112 and pooled.shape[-2:] == (56, 56)
    assert (112 - 3) // 2 + 1 == 55  # floor rounding without padding would give 55
    expected = _numpy_max_pool_ceil(pre.numpy())
    np.testing.assert_array_equal(pooled.numpy(), expected)
    # torchvision's pooling (padding 1, floor) also gives 56x56, but not the same values.
    tv = F.max_pool2d(pre, 3, 2, padding=1)
    assert tv.shape == pooled.shape and (tv - pooled).abs().max() > 1e-3


def test_fixed_gamma_input_bn_ignores_the_stored_gamma():
    torch.manual_seed(0)
    model = create_model("mxnet_resnet18").eval()
    bn = model.data_bn
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([120.0, 115.0, 100.0]))
        bn.running_var.copy_(torch.tensor([3000.0, 2800.0, 3100.0]))
        bn.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
        bn.weight.copy_(torch.tensor([0.01, 5.0, -3.0]))  # must be ignored, as MXNet ignores it
    x = torch.rand(2, 3, 32, 32) * 255
    with torch.inference_mode():
        got = bn(x)
    mean, var = bn.running_mean.view(1, 3, 1, 1), bn.running_var.view(1, 3, 1, 1)
    expected = (x - mean) / torch.sqrt(var + 2e-5) + bn.bias.view(1, 3, 1, 1)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    assert not bn.weight.requires_grad


def test_affine_free_input_bn_has_no_gamma_or_beta():
    model = create_model("resnet50_v2")
    assert model.data_bn.weight is None and model.data_bn.bias is None
    assert "data_bn.running_mean" in model.state_dict() and "data_bn.weight" not in model.state_dict()


def test_caffe_pool5_is_a_fixed_7x7_pool():
    """At 256 input the last map is 8x8: pool5 (7x7/1) leaves 2x2, which global pooling would not."""
    torch.manual_seed(0)
    model = create_model("caffe_resnet50").eval()
    with torch.inference_mode():
        feats = model.forward_features(torch.randn(1, 3, 256, 256))
        logits = model.forward_head(feats)
    f = feats.numpy()[0]
    assert f.shape == (2048, 8, 8)
    windows = [f[:, i : i + 7, j : j + 7].mean(axis=(1, 2)) for i in range(2) for j in range(2)]
    expected = model.fc.weight.detach().numpy() @ np.mean(windows, axis=0) + model.fc.bias.detach().numpy()
    np.testing.assert_allclose(logits.numpy()[0], expected, rtol=1e-4, atol=1e-4)
    global_pool = model.fc(torch.from_numpy(f.mean(axis=(1, 2)))[None]).detach()
    assert (global_pool - logits).abs().max() > 1e-3


def _independent_preact_bottleneck(block, x: torch.Tensor, stride: int) -> torch.Tensor:
    """He et al. 2016, written out: BN-ReLU before each conv, projection from the activated input."""

    def bn(m, t):
        return F.batch_norm(t, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)

    act = F.relu(bn(block.bn1, x))
    shortcut = F.conv2d(act, block.downsample[0].weight, stride=stride) if block.downsample is not None else x
    out = F.conv2d(act, block.conv1.weight)
    out = F.conv2d(F.relu(bn(block.bn2, out)), block.conv2.weight, stride=stride, padding=1)
    out = F.conv2d(F.relu(bn(block.bn3, out)), block.conv3.weight)
    return out + shortcut


def test_pre_activation_bottleneck_matches_the_paper():
    torch.manual_seed(0)
    model = create_model("resnet50_v2").eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d) and m.affine:
            with torch.no_grad():
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    x = torch.randn(2, 256, 16, 16)
    block = model.layer2[0]  # strided, with projection
    with torch.inference_mode():
        torch.testing.assert_close(block(x), _independent_preact_bottleneck(block, x, 2), rtol=1e-5, atol=1e-5)
        inner = torch.randn(2, 512, 8, 8)
        torch.testing.assert_close(model.layer2[1](inner), _independent_preact_bottleneck(model.layer2[1], inner, 1), rtol=1e-5, atol=1e-5)


def test_mxnet_symbolic_projects_on_every_stage_and_gluon_does_not():
    # MXNet's symbolic resnet gives the first unit of stage 1 a projection even at 64 -> 64 channels.
    assert create_model("mxnet_resnet18").layer1[0].downsample is not None
    assert create_model("resnet18_v2").layer1[0].downsample is None


def test_stride_placement_in_bottleneck():
    caffe, tv = create_model("caffe_resnet50"), create_model("resnet50")
    assert caffe.layer2[0].conv1.stride == (2, 2) and caffe.layer2[0].conv2.stride == (1, 1)
    assert tv.layer2[0].conv1.stride == (1, 1) and tv.layer2[0].conv2.stride == (2, 2)
    assert caffe.conv1.bias is not None and create_model("caffe_resnet101").conv1.bias is None


def test_model_refuses_a_non_spec():
    from resnet_port.errors import SpecError

    with pytest.raises(SpecError):
        ResNet({"block": "basic"})  # type: ignore[arg-type]
