"""Every ResNet timm, torchvision and mmcls define, from plain state dicts: the spec is read from the
names and shapes (block, stage depths, widths, 7x7 / deep / tiered stem and its widths, avg-down or
conv shortcut, classes), the registered name is reported when the spec equals one, and the loaded
model equals an independent functional forward of each layout (tests/core/any_resnet_builders.py).
Variants the reference cannot express are refused with one line naming the feature."""

from __future__ import annotations

import pytest
import torch

from resnet_port.checkpoints import load_model
from resnet_port.errors import CheckpointError, SpecError
from resnet_port.resnet_ref import ResNet, ResNetSpec, get_spec
from tests.core.any_resnet_builders import Net, forward, state_dict

torch.set_num_threads(1)

TIERED = (24, 32, 64)
DEEP = (32, 32, 64)


def close(ours: torch.Tensor, ref: torch.Tensor) -> None:
    """<= 1e-5 relative to the logits' scale (both in float64)."""
    scale = ref.abs().max().item()
    assert (ours.double() - ref).abs().max().item() <= 1e-5 * scale, (ours, ref)


# (layout, net, registered name the spec equals or None, spec facts to check)
CASES = [
    ("timm", Net("basic", (1, 1, 1, 1), TIERED, avg_down=True), "resnet10t"),
    ("timm", Net("bottleneck", (1, 1, 1, 1), TIERED, avg_down=True), "resnet14t"),
    ("timm", Net("basic", (2, 2, 2, 2), DEEP, avg_down=True), "resnet18d"),
    ("timm", Net("bottleneck", (2, 2, 2, 2)), "resnet26"),
    ("timm", Net("bottleneck", (2, 2, 2, 2), TIERED, avg_down=True), "resnet26t"),
    ("timm", Net("bottleneck", (3, 4, 6, 3), (64, 64, 128)), "resnet50s"),
    ("timm", Net("bottleneck", (3, 4, 6, 3), DEEP, avg_down=True), "resnet50_v1d"),
    # shapes no name has: other tiers, depths, a wide deep-stem net
    ("timm", Net("basic", (1, 2, 1, 1), (16, 24, 48), avg_down=True, classes=5), None),
    ("timm", Net("bottleneck", (1, 1, 2, 1), DEEP, avg_down=False, base_width=128), None),
    ("torchvision", Net("basic", (1, 1, 1, 1)), None),
    ("torchvision", Net("bottleneck", (2, 2, 2, 2)), "resnet26"),
    ("torchvision", Net("bottleneck", (2, 3, 1, 2), base_width=128), None),
    ("mmcls", Net("basic", (2, 2, 2, 2), DEEP, avg_down=True), "resnet18d"),
    ("mmcls", Net("bottleneck", (2, 2, 2, 2), DEEP, avg_down=True), "resnet26d"),
    ("mmcls", Net("bottleneck", (3, 4, 6, 3), DEEP), "resnet50_v1c"),
    ("mmcls", Net("bottleneck", (1, 1, 1, 1), (64, 64, 128), avg_down=True), None),
    ("mmcls", Net("basic", (1, 1, 1, 1)), None),
]


@pytest.mark.parametrize("layout,net,name", CASES, ids=[f"{c[0]}-{c[2] or 'unregistered'}-{i}" for i, c in enumerate(CASES)])
def test_any_layout_loads_with_the_spec_read_from_names_and_shapes(tmp_path, layout, net, name):
    sd = state_dict(net, layout, seed=len(net.layers) + sum(net.layers))
    path = tmp_path / f"{layout}.pth"
    torch.save(sd, path)
    model, meta = load_model(path)
    spec = meta.spec
    assert meta.arch == name and meta.source.details["arch_inferred"] is True
    # timm nets without a deep stem or avg-down have torchvision's names exactly
    assert meta.source.framework == (layout if layout != "timm" or net.stem or net.avg_down else "torchvision")
    assert (spec.block, spec.layers, spec.num_classes) == (net.block, net.layers, net.classes)
    assert spec.shortcut == ("avgpool_conv" if net.avg_down else "conv")
    if net.stem:
        assert spec.stem == "deep" and spec.deep_stem_widths == net.stem
    else:
        assert spec.stem == "7x7" and spec.stem_width == 64
    assert spec.base_width == net.base_width
    if name is not None:
        assert spec == get_spec(name, net.classes)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.inference_mode():
        close(model.double()(x), forward(sd, net, layout, x))


def test_the_tiered_stem_widths_are_the_specs_and_the_model_builds_them():
    spec = get_spec("resnet50t")
    assert spec.stem_widths == (24, 32) and spec.deep_stem_widths == (24, 32, 64)
    model = ResNet(spec)
    assert tuple(model.conv1[0].weight.shape) == (24, 3, 3, 3)
    assert tuple(model.conv1[3].weight.shape) == (32, 24, 3, 3)
    assert tuple(model.conv1[6].weight.shape) == (64, 32, 3, 3)
    # the default deep stem, however written, is one spec (so registered names are found)
    assert ResNetSpec(stem="deep", stem_widths=(32, 32)) == ResNetSpec(stem="deep") == get_spec("resnet50_v1c")
    assert ResNetSpec(stem="deep", stem_widths=(24, 32)) != ResNetSpec(stem="deep")
    # the field travels with the spec (JSON), and specs written before it existed still read
    assert ResNetSpec.from_json(spec.to_json()) == spec
    old = get_spec("resnet50_v1d").to_dict()
    del old["stem_widths"]
    assert ResNetSpec.from_dict(old) == get_spec("resnet50_v1d")
    with pytest.raises(SpecError, match="stem_widths"):
        ResNetSpec(stem="7x7", stem_widths=(24, 32))
    with pytest.raises(SpecError, match="stem_widths"):
        ResNetSpec(stem="deep", stem_widths=(24,))


def _grouped(sd: dict) -> dict:
    """A ResNeXt's state dict: every bottleneck 3x3 grouped (32 groups)."""
    out = dict(sd)
    for key, value in sd.items():
        if key.endswith(".conv2.weight"):
            out[key] = value[:, : value.shape[1] // 32].contiguous()
    return out


def _se(sd: dict) -> dict:
    out = dict(sd)
    out["layer1.0.se.fc1.weight"] = torch.zeros(16, 256, 1, 1)
    out["layer1.0.se.fc1.bias"] = torch.zeros(16)
    return out


def _eca(sd: dict) -> dict:
    return {**sd, "layer2.0.se.conv.weight": torch.zeros(1, 1, 3)}


def _group_norm(sd: dict) -> dict:
    return {k: v for k, v in sd.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}


def _mmcls_se(sd: dict) -> dict:
    return {**sd, "backbone.layer1.0.se_layer.conv1.conv.weight": torch.zeros(16, 256, 1, 1)}


@pytest.mark.parametrize(
    "layout,edit,feature",
    [
        ("timm", _se, "squeeze-and-excitation attention .*layer1.0.se.fc1"),
        ("timm", _eca, "ECA channel attention .*layer2.0.se.conv.weight"),
        ("torchvision", _grouped, r"grouped 3x3 convolutions \(ResNeXt: layer1.0.conv2.weight has shape \(64, 2, 3, 3\), 32 groups"),
        ("timm", _group_norm, r"a normalisation without running statistics at conv1.1 \(GroupNorm"),
        ("mmcls", _mmcls_se, "squeeze-and-excitation attention .*se_layer"),
    ],
)
def test_features_the_reference_cannot_express_are_refused_in_one_line(tmp_path, layout, edit, feature):
    net = Net("bottleneck", (1, 1, 1, 1), () if layout == "torchvision" else DEEP)
    path = tmp_path / "variant.pth"
    torch.save(edit(state_dict(net, layout)), path)
    with pytest.raises(CheckpointError, match=f"variant.pth: not loadable as a reference ResNet: {feature}") as info:
        load_model(path)
    assert "\n" not in str(info.value)
    with pytest.raises(CheckpointError, match="not loadable"):
        load_model(path, arch="resnet50")  # a named arch does not make the feature go away


def test_anti_aliased_timm_nets_are_refused_when_the_file_or_user_names_them(tmp_path):
    """timm's resnetaa*/resnetblur* add no parameter (a fixed blur or average pool before each
    stride): their weights are indistinguishable from the plain net's, so the arch a timm train.py
    checkpoint records (or --arch) decides; a plain arch in the same container loads."""
    net = Net("bottleneck", (3, 4, 6, 3), DEEP, avg_down=True)
    sd = state_dict(net, "timm")
    for arch, loads in (("resnetaa50d", False), ("resnetblur50", False), ("resnet50d", True)):
        path = tmp_path / f"{arch}.pth.tar"
        torch.save({"epoch": 3, "arch": arch, "state_dict": sd, "version": 2, "optimizer": {}}, path)
        if loads:
            model, meta = load_model(path)
            assert meta.arch == "resnet50_v1d"
        else:
            with pytest.raises(CheckpointError, match=f"names arch '{arch}', which has anti-aliased downsampling"):
                load_model(path)
    bare = tmp_path / "bare.pth"
    torch.save(sd, bare)
    with pytest.raises(CheckpointError, match="anti-aliased"):
        load_model(bare, arch="resnetaa50d")


def test_inspect_checkpoint_shows_the_stem_widths_and_shortcut_it_read(tmp_path):
    from resnet_port.checkpoints.inspect import format_summary, summarize

    for net, expected in (
        (Net("basic", (1, 1, 1, 1), TIERED, avg_down=True), "deep 24-32-64 (pool max"),
        (Net("bottleneck", (1, 1, 1, 1), (64, 64, 128)), "deep 64-64-128 (pool max"),
    ):
        path = tmp_path / "net.pth"
        torch.save(state_dict(net, "timm"), path)
        text = format_summary(summarize(path))
        line = next(x for x in text.splitlines() if x.startswith("stem"))
        assert expected in line and line.endswith("shortcut " + ("avgpool_conv" if net.avg_down else "conv")), line
