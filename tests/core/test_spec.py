"""The spec: every registered arch round-trips through dict/JSON; invalid values are refused by name."""

from __future__ import annotations

import json

import pytest

from resnet_port.errors import SpecError
from resnet_port.resnet_ref import ResNetSpec, arch_info, build_model, create_model, find_arch, get_spec, list_archs

REQUIRED_ARCHS = (
    ["caffe_resnet50", "caffe_resnet101", "caffe_resnet152"]
    + [f"resnet{d}_v{v}" for d in (18, 34, 50, 101, 152) for v in (1, 2)]
    + [f"mxnet_resnet{d}" for d in (18, 34, 50, 101, 152, 200)]
    + [f"resnet{d}" for d in (18, 34, 50, 101, 152, 200)]
    + [f"resnet{d}_v1{c}" for d in (50, 101, 152) for c in "cd"]
    + ["wide_resnet50_2", "wide_resnet101_2"]
    + [f"cifar_resnet{d}" for d in (18, 34, 50, 101, 152)]
)


def test_every_required_arch_is_registered():
    missing = sorted(set(REQUIRED_ARCHS) - set(list_archs()))
    assert not missing


@pytest.mark.parametrize("name", list_archs())
def test_spec_round_trips_through_json(name):
    spec = get_spec(name, num_classes=17)
    text = json.dumps(spec.to_dict())
    again = ResNetSpec.from_dict(json.loads(text))
    assert again == spec
    assert ResNetSpec.from_json(spec.to_json()) == spec
    found = find_arch(again)
    # An alias (GluonCV's resnetN_v1b is torchvision's resnetN) finds the name registered first.
    assert found == name or (get_spec(found, num_classes=17) == spec and list_archs().index(found) < list_archs().index(name))


def test_presets_differ_where_their_sources_differ():
    caffe, tv, gluon = get_spec("caffe_resnet50"), get_spec("resnet50"), get_spec("resnet50_v1")
    assert (caffe.stride_in, tv.stride_in, gluon.stride_in) == ("1x1", "3x3", "1x1")
    assert caffe.stem_pool == "max_ceil" and tv.stem_pool == "max"
    assert caffe.conv_bias == ("stem",) and get_spec("caffe_resnet101").conv_bias == ()
    assert gluon.conv_bias == ("conv1", "conv3") and get_spec("resnet18_v1").conv_bias == ()
    assert get_spec("mxnet_resnet50").bn_eps == 2e-5 and get_spec("resnet50_v2").bn_eps == 1e-5
    assert get_spec("mxnet_resnet50").input_bn == "fixed_gamma"
    assert get_spec("resnet50_v2").input_bn == "affine_free"
    assert caffe.head_pool == "fixed" and tv.head_pool == "global"
    assert get_spec("resnet200").layers == (3, 24, 36, 3)


@pytest.mark.parametrize(
    "field,value",
    [
        ("block", "triple"),
        ("residual", "v3"),
        ("stride_in", "7x7"),
        ("stem", "huge"),
        ("stem_pool", "avg"),
        ("stem_norm", "relu"),
        ("shortcut", "none"),
        ("v2_shortcut_input", "pooled"),
        ("input_bn", "yes"),
        ("head_pool", "max"),
        ("conv_bias", ("fc",)),
        ("layers", (3, 0, 6, 3)),
        ("bn_eps", 0.0),
        ("num_classes", 0),
    ],
)
def test_invalid_spec_values_are_refused_by_name(field, value):
    data = get_spec("resnet50").to_dict()
    data[field] = value
    with pytest.raises(SpecError, match=field):
        ResNetSpec.from_dict(data)


def test_unknown_fields_and_archs_are_refused():
    data = get_spec("resnet50").to_dict()
    data["dilation"] = 2
    with pytest.raises(SpecError, match="dilation"):
        ResNetSpec.from_dict(data)
    with pytest.raises(SpecError, match="resnet51"):
        create_model("resnet51")
    with pytest.raises(SpecError, match="not valid JSON"):
        ResNetSpec.from_json("{nope")


def test_eps_override_must_name_a_batchnorm():
    spec = get_spec("resnet18").replace(bn_eps_overrides=(("layer1.0.bn2", 1e-3),))
    model = build_model(spec)
    assert model.layer1[0].bn2.eps == 1e-3 and model.layer1[0].bn1.eps == 1e-5
    with pytest.raises(SpecError, match="layer1.0.conv2"):
        build_model(spec.replace(bn_eps_overrides=(("layer1.0.conv2", 1e-3),)))


def test_arch_info_has_a_family_and_note():
    for name in list_archs():
        info = arch_info(name)
        assert info.family in {"torchvision", "timm", "mmcls", "gluon", "gluoncv", "mxnet", "caffe", "cifar"}
        assert info.note


def test_stem_norm_and_v2_shortcut_input_combinations():
    """The deep stem always ends with BN-ReLU; only v2 nets project the raw block input.  A spec saved
    before these fields existed reads back with the old behaviour (the defaults)."""
    with pytest.raises(SpecError, match="stem_norm"):
        get_spec("resnet50_v1c").replace(stem_norm="bn")
    with pytest.raises(SpecError, match="stem_norm"):  # a bare deep stem only before pre-activation blocks
        get_spec("resnet50_v1c").replace(stem_norm="none")
    assert get_spec("resnetv2_50d").stem_norm == "none"
    with pytest.raises(SpecError, match="v2_shortcut_input"):
        get_spec("resnet50").replace(v2_shortcut_input="block_input")
    old = get_spec("resnet50_v2").to_dict()
    del old["stem_norm"], old["v2_shortcut_input"]
    assert ResNetSpec.from_dict(old) == get_spec("resnet50_v2")
    assert "bn1.running_mean" not in build_model(get_spec("cifar_resnet20_v2")).state_dict()
    assert get_spec("cifar_resnet20_v1").num_classes == 10 and get_spec("cifar_resnet20_v1", 100).num_classes == 100


def test_v2_avg_pool_shortcut_pools_then_projects():
    """timm resnetv2_*d: the shortcut of a strided v2 block average-pools (2x2/2, ceil, padding not
    counted) and then applies a bare 1x1 conv to the pre-activated input; computed here by hand."""
    import torch
    import torch.nn.functional as F

    spec = get_spec("resnetv2_18d").replace(layers=(1, 1, 1, 1), num_classes=3)
    model = build_model(spec).eval()
    block = model.layer2[0]
    assert isinstance(block.downsample[0], torch.nn.AvgPool2d) and "layer2.0.downsample.1.weight" in model.state_dict()
    assert model.layer1[0].downsample is None  # 64 -> 64, stride 1: an identity shortcut
    x = torch.randn(1, 64, 9, 9, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for bn in (block.bn1,):
            bn.running_mean.uniform_(-0.2, 0.2), bn.running_var.uniform_(0.5, 2.0)
        pre = F.relu(F.batch_norm(x, block.bn1.running_mean, block.bn1.running_var, block.bn1.weight, block.bn1.bias, eps=block.bn1.eps))
        pooled = F.avg_pool2d(pre, 2, 2, ceil_mode=True, count_include_pad=False)  # 9 -> 5, the last window partial
        expected = F.conv2d(pooled, block.downsample[1].weight)
        got = block.downsample(pre)
    assert got.shape == (1, 128, 5, 5)
    torch.testing.assert_close(got, expected)
