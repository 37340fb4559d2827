"""converters.build, tested once for every source: hand-made skeletons -> the spec fields each rule
decides, and the built weights against an independent forward pass of the skeleton written here
(torch.nn.functional, float64), never against the reference model's own code path alone."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from resnet_port.converters.build import build, majority_eps, stages
from resnet_port.converters.common import ConversionReport
from resnet_port.converters.skeleton import (
    BatchNorm,
    Block,
    Conv,
    ConvBN,
    Linear,
    Pool,
    Shortcut,
    Skeleton,
    SourceLayer,
    SourceTensor,
)
from resnet_port.errors import ConversionError
from resnet_port.resnet_ref import build_model, state_dict_problems


class Maker:
    """Skeletons of small ResNets, with seeded weights and a source name on every tensor."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.count = 0

    def _name(self, kind: str) -> str:
        self.count += 1
        return f"{kind}{self.count}"

    def conv(self, cin: int, cout: int, k: int, stride: int = 1, bias: bool = False) -> Conv:
        name = self._name("conv")
        w = (self.rng.standard_normal((cout, cin, k, k)) * (2.0 / (cin * k * k)) ** 0.5).astype(np.float32)
        b = SourceTensor(self.rng.standard_normal(cout).astype(np.float32) * 0.1, f"{name}/b") if bias else None
        return Conv(f"layer {name!r}", SourceLayer(name, "Conv"), SourceTensor(w, f"{name}/w"), b, (stride, stride), (k // 2,) * 4)

    def bn(self, c: int, eps: float = 1e-5, **kwargs) -> BatchNorm:
        name = self._name("bn")
        r = self.rng
        fields = dict(
            gamma=SourceTensor(r.uniform(0.5, 1.5, c).astype(np.float32), f"{name}/gamma"),
            beta=SourceTensor((r.standard_normal(c) * 0.1).astype(np.float32), f"{name}/beta"),
        )
        fields.update(kwargs)
        return BatchNorm(
            f"layer {name!r}", [SourceLayer(name, "BN")], eps,
            SourceTensor((r.standard_normal(c) * 0.1).astype(np.float32), f"{name}/mean"),
            SourceTensor(r.uniform(0.5, 1.5, c).astype(np.float32), f"{name}/var"),
            **fields,
        )

    def skeleton(
        self,
        block: str = "basic",
        residual: str = "v1",
        layers=(1, 1),
        widths=(4, 8),
        stem_width: int = 4,
        stride_in: str = "1x1",
        project_first: bool = False,
        biases: tuple[str, ...] = (),
        stem: str = "7x7",
        avg_down: bool = False,
        classes: int = 5,
        base_width: int = 64,
    ) -> Skeleton:
        exp = 4 if block == "bottleneck" else 1
        if stem == "deep":
            mid = stem_width // 2
            stem_units = [
                ConvBN(self.conv(3, mid, 3, 2, "stem" in biases), self.bn(mid)),
                ConvBN(self.conv(mid, mid, 3, 1, "stem" in biases), self.bn(mid)),
                ConvBN(self.conv(mid, stem_width, 3, 1, "stem" in biases), self.bn(stem_width)),
            ]
        else:
            k, s = (7, 2) if stem == "7x7" else (3, 1)
            stem_units = [ConvBN(self.conv(3, stem_width, k, s, "stem" in biases), self.bn(stem_width))]
        blocks = []
        cin = stem_width
        for si, (count, planes) in enumerate(zip(layers, widths)):
            for b in range(count):
                stride = 2 if si > 0 and b == 0 else 1
                out = planes * exp
                if block == "bottleneck":
                    inner = planes * base_width // 64
                    s1, s2 = (stride, 1) if stride_in == "1x1" else (1, stride)
                    shapes = [(cin, inner, 1, s1), (inner, inner, 3, s2), (inner, out, 1, 1)]
                else:
                    shapes = [(cin, planes, 3, stride), (planes, planes, 3, 1)]
                body = []
                for i, (a, o, k, s) in enumerate(shapes):
                    conv = self.conv(a, o, k, s, f"conv{i + 1}" in biases)
                    if residual == "v1":
                        body.append(ConvBN(conv, self.bn(o)))
                    else:
                        body.append(ConvBN(conv, self.bn(a)))
                shortcut = Shortcut()
                if stride != 1 or cin != out or (project_first and b == 0):
                    if avg_down and stride != 1:
                        shortcut = Shortcut("avgpool_conv", self.conv(cin, out, 1, 1, "downsample" in biases), self.bn(out), stride)
                    else:
                        conv = self.conv(cin, out, 1, stride, "downsample" in biases)
                        shortcut = Shortcut("conv", conv, self.bn(out) if residual == "v1" else None, stride)
                blocks.append(Block(f"block{len(blocks)}", residual, body, shortcut))
                cin = out
        fc_w = SourceTensor((self.rng.standard_normal((classes, cin)) * 0.1).astype(np.float32), "fc/w")
        fc_b = SourceTensor((self.rng.standard_normal(classes) * 0.1).astype(np.float32), "fc/b")
        return Skeleton(
            where="hand.net",
            stem=stem_units,
            stem_pool=Pool("layer 'pool'", "max", (3, 3), (2, 2), (1, 1, 1, 1)) if stem != "3x3" else None,
            blocks=blocks,
            head_pool=Pool("layer 'gap'", "avg", global_pool=True),
            classifier=Linear("layer 'fc'", SourceLayer("fc", "Dense"), fc_w, fc_b),
            final_bn=self.bn(cin) if residual == "v2" else None,
        )


# -- an independent forward pass of a skeleton -----------------------------------------------------


def _t(tensor: SourceTensor | None) -> torch.Tensor | None:
    return None if tensor is None else torch.from_numpy(tensor.array.astype(np.float64))


def _conv(c: Conv, x: torch.Tensor) -> torch.Tensor:
    return F.conv2d(x, _t(c.weight), _t(c.bias), stride=c.stride, padding=c.pad[0])


def _bn(b: BatchNorm, x: torch.Tensor) -> torch.Tensor:
    gamma = None if b.gamma is None or b.fix_gamma else _t(b.gamma)
    return F.batch_norm(x, _t(b.running_mean), _t(b.running_var), gamma, _t(b.beta), False, 0.0, b.eps)


def skeleton_forward(s: Skeleton, x: torch.Tensor) -> torch.Tensor:
    if s.input_bn is not None:
        x = _bn(s.input_bn, x)
    for i, unit in enumerate(s.stem):
        x = _conv(unit.conv, x)
        if unit.bn is not None:
            x = _bn(unit.bn, x)
        if s.stem_relu or i < len(s.stem) - 1:
            x = F.relu(x)
    if s.stem_pool is not None:
        p = s.stem_pool
        x = F.max_pool2d(x, p.kernel, p.stride, p.pad[0], ceil_mode=p.ceil)
    for block in s.blocks:
        sc = block.shortcut
        if block.residual == "v1":
            out = x
            for i, unit in enumerate(block.body):
                out = _bn(unit.bn, _conv(unit.conv, out))
                out = F.relu(out) if i < len(block.body) - 1 else out
            short = x
            if sc.kind == "conv":
                short = _bn(sc.bn, _conv(sc.conv, x))
            elif sc.kind == "avgpool_conv":
                pooled = F.avg_pool2d(x, sc.stride, sc.stride, ceil_mode=True, count_include_pad=False)
                short = _bn(sc.bn, _conv(sc.conv, pooled))
            x = F.relu(out + short)
        else:
            pre = F.relu(_bn(block.body[0].bn, x))
            short = x if sc.kind == "identity" else _conv(sc.conv, x if sc.reads == "block_input" else pre)
            out = _conv(block.body[0].conv, pre)
            for unit in block.body[1:]:
                out = _conv(unit.conv, F.relu(_bn(unit.bn, out)))
            x = out + short
    if s.final_bn is not None:
        x = F.relu(_bn(s.final_bn, x))
    x = x.mean(dim=(2, 3))
    return F.linear(x, _t(s.classifier.weight), _t(s.classifier.bias))


def built_forward(built, x: torch.Tensor) -> torch.Tensor:
    model = build_model(built.spec).double().eval()
    full = model.state_dict()
    full.update({k: v.double() for k, v in built.state_dict.items()})
    model.load_state_dict(full)
    with torch.no_grad():
        return model(x)


def run(skeleton: Skeleton, arch: str | None = None):
    return build(skeleton, ConversionReport("test"), arch=arch)


def assert_same_network(skeleton: Skeleton, built, size: int = 32) -> None:
    assert state_dict_problems(built.spec, built.state_dict) == ""
    x = torch.from_numpy(np.random.default_rng(7).standard_normal((2, skeleton.in_channels, size, size)))
    # The built weights are float32: compare against the skeleton at float32 precision.
    expected, got = skeleton_forward(skeleton, x), built_forward(built, x)
    assert torch.allclose(expected, got, rtol=1e-5, atol=1e-5 * float(expected.abs().max())), (expected - got).abs().max()


# -- the rules --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, expected",
    [
        (dict(block="basic", residual="v1"), dict(block="basic", residual="v1", layers=(1, 1), widths=(4, 8))),
        (dict(block="basic", residual="v2", layers=(2, 1, 2), widths=(4, 8, 16)), dict(residual="v2", layers=(2, 1, 2), widths=(4, 8, 16))),
        (dict(block="bottleneck", stride_in="1x1", layers=(1, 2)), dict(block="bottleneck", stride_in="1x1", layers=(1, 2))),
        (dict(block="bottleneck", stride_in="3x3"), dict(stride_in="3x3")),
        (dict(block="bottleneck", base_width=128), dict(base_width=128)),
        (dict(block="bottleneck", residual="v2", stride_in="3x3"), dict(residual="v2", stride_in="3x3")),
        (dict(stem="3x3"), dict(stem="3x3", stem_pool="none")),
        (dict(stem="deep", stem_width=8, widths=(8, 16)), dict(stem="deep", stem_width=8)),
        (dict(block="bottleneck", avg_down=True, stride_in="3x3"), dict(shortcut="avgpool_conv")),
        (dict(biases=("stem", "conv1", "downsample")), dict(conv_bias=("conv1", "downsample", "stem"))),
    ],
)
def test_spec_fields_and_weights_follow_the_skeleton(options, expected):
    skeleton = Maker().skeleton(**options)
    built = run(skeleton)
    for field, value in expected.items():
        assert getattr(built.spec, field) == value, field
    assert_same_network(skeleton, built)


def test_a_tensor_goes_from_its_source_name_to_its_reference_key():
    skeleton = Maker().skeleton(block="bottleneck", layers=(1, 1))
    built = run(skeleton)
    conv = skeleton.blocks[1].body[0].conv  # stage 2, block 0, body role conv1
    assert built.report.mapped["layer2.0.conv1.weight"] == conv.weight.ref
    assert torch.equal(built.state_dict["layer2.0.conv1.weight"], torch.from_numpy(conv.weight.array))
    bn = skeleton.blocks[1].shortcut.bn
    assert built.report.mapped["layer2.0.downsample.1.running_var"] == bn.running_var.ref
    assert built.block_names == ["layer1.0", "layer2.0"]


def test_stage_split_rule_stride_or_width_change():
    m = Maker()
    skeleton = m.skeleton(layers=(2, 3, 1), widths=(4, 8, 16))
    assert [len(stage) for stage in stages(skeleton)] == [2, 3, 1]
    # A width change at stride 1 starts a stage too: the reference's later stages start at stride 2,
    # so such a stage is refused, naming its first block.
    odd = m.skeleton(layers=(1, 1), widths=(4, 4))
    wide = m.skeleton(layers=(1,), widths=(8,), stem_width=4)
    odd.blocks = [odd.blocks[0], wide.blocks[0]]  # 4 -> 8 channels at stride 1 (with a projection)
    odd.classifier = wide.classifier
    assert [len(stage) for stage in stages(odd)] == [1, 1]
    with pytest.raises(ConversionError, match=r"^hand.net: block0: block 0 of stage 2 has stride 1"):
        run(odd)


def test_a_strided_first_block_is_refused():
    skeleton = Maker().skeleton()
    first = skeleton.blocks[0]
    first.body[0].conv.stride = (2, 2)
    first.shortcut = Shortcut("conv", Maker(1).conv(4, 4, 1, 2), Maker(1).bn(4), 2)
    with pytest.raises(ConversionError, match="the first block has stride 2"):
        run(skeleton)


def test_eps_majority_with_one_odd_override():
    skeleton = Maker().skeleton(block="bottleneck", layers=(1, 1))
    skeleton.blocks[1].body[1].bn.eps = 2e-5  # layer2.0.bn2 alone
    spec = run(skeleton).spec
    assert spec.bn_eps == 1e-5
    assert spec.bn_eps_overrides == (("layer2.0.bn2", 2e-5),)


def test_eps_tie_goes_to_the_smallest_value():
    assert majority_eps({"a": 1e-3, "b": 1e-5, "c": 1e-3, "d": 1e-5}) == (1e-5, (("a", 1e-3), ("c", 1e-3)))
    assert majority_eps({"a": 1e-5, "b": 2e-5, "c": 2e-5}) == (2e-5, (("a", 1e-5),))
    # On a skeleton: 1 stem BN + 2 body BNs + 1 final BN; half at 1e-3, half at 2e-5 -> 2e-5.
    skeleton = Maker().skeleton(residual="v2", layers=(1,), widths=(4,))
    skeleton.stem[0].bn.eps = 1e-3
    skeleton.blocks[0].body[0].bn.eps = 1e-3
    skeleton.blocks[0].body[1].bn.eps = 2e-5
    skeleton.final_bn.eps = 2e-5
    spec = run(skeleton).spec
    assert spec.bn_eps == 2e-5
    assert dict(spec.bn_eps_overrides) == {"bn1": 1e-3, "layer1.0.bn1": 1e-3}
    assert_same_network(skeleton, run(skeleton))


def test_a_bias_role_is_filled_with_zeros_where_a_conv_lacks_one():
    skeleton = Maker().skeleton(layers=(2, 1))
    skeleton.blocks[2].body[0].conv.bias = SourceTensor(np.full(8, 0.5, np.float32), "only/bias")
    built = run(skeleton)
    assert built.spec.conv_bias == ("conv1",)
    assert torch.equal(built.state_dict["layer1.1.conv1.bias"], torch.zeros(4))
    assert any("layer1.1.conv1.bias set to zeros" in n for n in built.report.notes)
    assert_same_network(skeleton, built)


def test_projection_policy():
    # Every stage's first block projects, also where an identity fits (stage 1: 4 -> 4 channels).
    skeleton = Maker().skeleton(project_first=True)
    built = run(skeleton)
    assert built.spec.projection == "first_of_stage"
    assert_same_network(skeleton, built)
    # Bottlenecks always project on stage 1: both policies are this network; unregistered -> when_needed.
    assert run(Maker().skeleton(block="bottleneck")).spec.projection == "when_needed"
    # A projection on a later block where no shape changes fits neither policy.
    bad = Maker().skeleton(layers=(2, 1))
    bad.blocks[1].shortcut = Shortcut("conv", Maker(2).conv(4, 4, 1), Maker(2).bn(4), 1)
    with pytest.raises(ConversionError, match="block1: a projection shortcut where neither"):
        run(bad)


def test_registered_names_and_the_readings_that_pick_them():
    from resnet_port.resnet_ref import get_spec

    # Gluon V1 ResNet-18 layout (basic blocks: the stride reading is free) -> resnet18_v1.
    m = Maker()
    skeleton = m.skeleton(layers=(2, 2, 2, 2), widths=(64, 128, 256, 512), stem_width=64, classes=1000)
    built = run(skeleton)
    assert built.arch == "resnet18_v1" and built.spec == get_spec("resnet18_v1")
    # --arch picks the torchvision reading of the same network.
    assert run(skeleton, arch="resnet18").spec == get_spec("resnet18")


def test_input_bn_readings():
    m = Maker()
    # fix_gamma with a zero beta: affine-free or fixed-gamma; unregistered -> affine-free first.
    skeleton = m.skeleton(residual="v2")
    zero = SourceTensor(np.zeros(3, np.float32), "data/beta")
    skeleton.input_bn = m.bn(3, gamma=SourceTensor(np.full(3, 7.0, np.float32), "data/gamma"), beta=zero, fix_gamma=True)
    built = run(skeleton)
    assert built.spec.input_bn == "affine_free" and "data_bn.weight" not in built.state_dict
    assert {"source": "data/gamma", "reason": "the affine-free input BN has no gamma; the source ignores it (fix_gamma)"} in built.report.skipped
    assert_same_network(skeleton, built)
    # A non-zero beta: only the fixed-gamma BN holds it; gamma written as ones.
    skeleton.input_bn.beta = SourceTensor(np.array([0.1, -0.2, 0.3], np.float32), "data/beta")
    built = run(skeleton)
    assert built.spec.input_bn == "fixed_gamma"
    assert torch.equal(built.state_dict["data_bn.weight"], torch.ones(3))
    assert_same_network(skeleton, built)


def test_a_learnt_input_bn_is_folded_exactly_with_negative_gamma():
    m = Maker()
    skeleton = m.skeleton()
    skeleton.input_bn = m.bn(3, eps=1e-3, gamma=SourceTensor(np.array([0.4, -2.5, 1.3], np.float32), "g"))
    built = run(skeleton)
    assert built.spec.input_bn == "affine_free"
    assert any("folded" in n for n in built.report.notes)
    assert "sign(input BN gamma)" in built.report.mapped["conv1.weight"]
    assert_same_network(skeleton, built)


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (lambda s: setattr(s.blocks[0].body[1].conv, "dilation", (2, 2)), "layer 'conv5': 3x3 body convolution (conv2) is kernel 3x3, pad [1, 1, 1, 1], dilation (2, 2)"),
        (lambda s: setattr(s.blocks[1].body[1].conv, "stride", (2, 2)), "block1: strides more than one body convolution"),
        (lambda s: setattr(s, "stem_pool", dataclasses.replace(s.stem_pool, ceil=True)), "layer 'pool': the stem pool"),
        (lambda s: setattr(s, "head_pool", dataclasses.replace(s.head_pool, kind="max")), "layer 'gap': the head pool"),
        (lambda s: setattr(s.blocks[1], "shortcut", Shortcut()), "block1: changes the shape (4->8 channels, stride 2)"),
        (lambda s: setattr(s.blocks[0].body[0], "bn", None), "layer 'conv3': has no BatchNorm after conv1"),
    ],
)
def test_misfits_are_refused_naming_the_layer(edit, fragment):
    skeleton = Maker().skeleton()
    edit(skeleton)
    with pytest.raises(ConversionError) as info:
        run(skeleton)
    assert str(info.value).startswith("hand.net: ") and fragment in str(info.value), str(info.value)


# -- stems without BN-ReLU and v2 projections of the raw input (GluonCV's CIFAR nets) ----------------


def _cifar_like(residual: str, stem_norm: str, reads: str = "preactivated", seed: int = 3) -> Skeleton:
    m = Maker(seed)
    skel = m.skeleton(residual=residual, stem="3x3", layers=(2, 2, 1), widths=(4, 8, 16))
    if residual == "v2":
        skel.input_bn = m.bn(3)
    unit = skel.stem[0]
    if stem_norm == "none":
        skel.stem = [ConvBN(unit.conv, None)]
    skel.stem_relu = stem_norm == "bn_relu"
    for block in skel.blocks:
        block.shortcut.reads = reads
    return skel


@pytest.mark.parametrize(
    "residual, stem_norm, reads",
    [("v1", "bn", "preactivated"), ("v1", "none", "preactivated"), ("v2", "none", "block_input"),
     ("v2", "none", "preactivated"), ("v2", "bn", "block_input")],
)
def test_stem_norm_and_v2_shortcut_input_are_read_and_built(residual, stem_norm, reads):
    skel = _cifar_like(residual, stem_norm, reads)
    built = run(skel)
    assert built.spec.stem_norm == stem_norm
    assert built.spec.v2_shortcut_input == (reads if residual == "v2" else "preactivated")
    assert ("bn1.running_mean" in built.state_dict) == (stem_norm != "none")
    assert_same_network(skel, built)


@pytest.mark.parametrize("field, wrong", [("stem_norm", "bn_relu"), ("v2_shortcut_input", "preactivated")])
def test_ignoring_the_new_fields_changes_the_network(field, wrong):
    """The reference model must honour each field: built with the default instead, the output differs."""
    skel = _cifar_like("v2", "bn", "block_input") if field == "v2_shortcut_input" else _cifar_like("v1", "bn")
    built = run(skel)
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((2, 3, 16, 16)))
    wrong_built = dataclasses.replace(built, spec=built.spec.replace(**{field: wrong}))
    assert not torch.allclose(built_forward(built, x), built_forward(wrong_built, x), atol=1e-4)
    assert torch.allclose(skeleton_forward(skel, x), built_forward(built, x), rtol=1e-5, atol=1e-4)


def test_a_deep_stem_without_relu_or_bn_is_refused():
    skel = Maker(0).skeleton(stem="deep", stem_width=8)
    skel.stem_relu = False
    with pytest.raises(ConversionError, match="deep stem ends with BN-ReLU"):
        run(skel)
    skel = Maker(0).skeleton()
    skel.stem = [ConvBN(skel.stem[0].conv, None)]
    with pytest.raises(ConversionError, match="no BatchNorm after it"):
        run(skel)


def test_mixed_v2_projection_inputs_are_refused():
    skel = _cifar_like("v2", "none", "preactivated")
    projecting = [b for b in skel.blocks if b.shortcut.conv is not None]
    projecting[-1].shortcut.reads = "block_input"
    with pytest.raises(ConversionError, match="projects its raw input"):
        run(skel)
