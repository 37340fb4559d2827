"""Real timm (1.0, beside the torchvision peer: see PEERS.md and RESNET_PORT_TIMM_PATH) as the referee:
every ResNet name ``timm.models.resnet`` defines is built (pretrained=False, seeded, every BatchNorm
with non-trivial statistics and affine parameters), its state_dict saved the way timm saves it, and
loaded with the toolkit without naming the arch.  Names the reference can express load and give
timm's logits (<= 1e-5 relative, float64); the others are refused with one line naming the feature.

The classification below is this test's own; `test_every_timm_resnet_name_is_classified` fails when
timm defines a name it does not cover.  Refusals are checked through a real file for one
name per feature, the other names on names and shapes only (built on the meta device), to keep the
run short.
"""

from __future__ import annotations

import re

import pytest
import torch

from resnet_port.checkpoints import load_model
from resnet_port.checkpoints.plain import normalise_names, unsupported_feature
from resnet_port.errors import CheckpointError
from tests.peers.python_peers import import_timm

pytestmark = [pytest.mark.peer, pytest.mark.slow]

PLAIN = [
    "resnet10t", "resnet14t", "resnet18", "resnet18d", "resnet26", "resnet26d", "resnet26t", "resnet34",
    "resnet34d", "resnet50", "resnet50c", "resnet50d", "resnet50s", "resnet50t", "resnet101", "resnet101c",
    "resnet101d", "resnet101s", "resnet152", "resnet152c", "resnet152d", "resnet152s", "resnet200",
    "resnet200d", "wide_resnet50_2", "wide_resnet101_2",
]
# name pattern -> the words the refusal must contain
FEATURES = [
    (r"^eca", "ECA channel attention"),
    (r"^(se|senet|resnetrs)", "squeeze-and-excitation attention"),
    (r"resnext", "grouped 3x3 convolutions"),
    (r"_gn$", "without running statistics"),
    (r"^test_resnet$", "bottleneck block in a net of v1 basic blocks"),
]
# anti-aliasing adds no parameter: refused when a timm train.py checkpoint names the arch
NAMED_ONLY = ["resnetaa34d", "resnetaa50", "resnetaa50d", "resnetaa101d", "resnetblur18", "resnetblur50", "resnetblur50d", "resnetblur101d"]
BIG = re.compile(r"269|270|350|420|senet154|32x16d|32x32d|aa201d")


def feature_of(name: str) -> str:
    for pattern, words in FEATURES:
        if re.search(pattern, name):
            return words
    raise AssertionError(f"{name} has no expected feature")


@pytest.fixture(scope="module")
def timm():
    return import_timm()


def timm_names(timm) -> list[str]:
    return sorted(timm.list_models(module="resnet"))


def build(timm, name: str, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, num_classes=7).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                c = module.num_features
                module.weight.copy_(torch.rand(c, generator=g) + 0.5)  # timm zero-inits the last BN of each block
                module.bias.copy_(torch.rand(c, generator=g) * 0.2 - 0.1)
                module.running_mean.copy_(torch.rand(c, generator=g) * 0.2 - 0.1)
                module.running_var.copy_(torch.rand(c, generator=g) + 0.5)
    return model


def test_every_timm_resnet_name_is_classified(timm):
    names = set(timm_names(timm))
    covered = set(PLAIN) | set(NAMED_ONLY)
    covered |= {n for n in names if any(re.search(p, n) for p, _ in FEATURES)}
    assert names <= covered, sorted(names - covered)
    assert set(PLAIN) <= names and set(NAMED_ONLY) <= names


@pytest.mark.parametrize("name", PLAIN)
def test_plain_timm_resnets_load_and_give_timms_logits(timm, tmp_path, name):
    model = build(timm, name, seed=len(name))
    path = tmp_path / f"{name}.pth"
    torch.save(model.state_dict(), path)
    ours, meta = load_model(path)
    assert meta.arch is not None, name  # every plain timm ResNet now has a registered equal
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with torch.inference_mode():
        ref = model.double()(x)
        got = ours.double()(x)
    assert (got - ref).abs().max().item() <= 1e-5 * ref.abs().max().item(), name


def test_refused_timm_resnets_name_their_feature(timm, tmp_path):
    refused = [n for n in timm_names(timm) if n not in PLAIN and n not in NAMED_ONLY]
    assert len(refused) > 30
    built: set[str] = set()
    for name in refused:
        words = feature_of(name)
        if BIG.search(name) or words in built:
            # one real file per feature; the rest on names and shapes (meta device), for time
            with torch.device("meta"):
                shapes = timm.create_model(name, pretrained=False).state_dict()
            feature = unsupported_feature(normalise_names(shapes)[0])
            assert feature is not None and words in feature, (name, feature)
            continue
        torch.manual_seed(0)
        path = tmp_path / f"{name}.pth"
        torch.save(timm.create_model(name, pretrained=False, num_classes=7).state_dict(), path)
        with pytest.raises(CheckpointError) as info:
            load_model(path)
        message = str(info.value)
        assert words in message and "\n" not in message and f"{name}.pth" in message, (name, message)
        path.unlink()
        built.add(words)
    assert built == {words for _, words in FEATURES}


@pytest.mark.parametrize("name", NAMED_ONLY)
def test_anti_aliased_timm_resnets_are_refused_from_their_train_checkpoint(timm, tmp_path, name):
    state = timm.create_model(name, pretrained=False, num_classes=7).state_dict()
    path = tmp_path / "last.pth.tar"
    torch.save({"epoch": 9, "arch": name, "state_dict": state, "optimizer": {}, "version": 2, "metric": 71.2}, path)
    with pytest.raises(CheckpointError, match=f"names arch '{name}', which has anti-aliased downsampling"):
        load_model(path)


# -- timm's ResNetV2 (resnetv2.py): pre-activation nets ------------------------------------------------
PLAIN_V2 = [f"resnetv2_{d}{s}" for d in (18, 34, 50, 101, 152) for s in ("", "d")] + ["resnetv2_50t"]
FEATURES_V2 = [
    (r"_bit$", "without running statistics"),  # GroupNorm + weight-standardised convs (BiT)
    (r"_gn$", "without running statistics"),
    (r"_evos$", "EvoNorm"),
    (r"_frn$", "FilterResponseNorm"),
]


def test_every_timm_resnetv2_name_is_classified(timm):
    names = set(timm.list_models(module="resnetv2"))
    covered = set(PLAIN_V2) | {n for n in names if any(re.search(p, n) for p, _ in FEATURES_V2)}
    assert names <= covered, sorted(names - covered)
    assert set(PLAIN_V2) <= names


@pytest.mark.parametrize("name", PLAIN_V2)
def test_timm_resnetv2_loads_and_gives_timms_logits(timm, tmp_path, name):
    """Names and shapes alone: the pre-activation blocks, the BN-less stem, the final norm, the 1x1-conv
    head and (deep and tiered stems) the average-pool projections that the names cannot show."""
    model = build(timm, name, seed=len(name) + 1)
    path = tmp_path / f"{name}.pth"
    torch.save(model.state_dict(), path)
    ours, meta = load_model(path)
    assert meta.arch == name and meta.spec.residual == "v2" and meta.spec.stem_norm == "none"
    assert meta.source.framework == "timm-v2"
    assert (meta.spec.shortcut == "avgpool_conv") == (meta.spec.stem == "deep")
    if meta.spec.stem == "deep":
        assert "average-pool projections assumed" in meta.notes["projections"]
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    with torch.inference_mode():
        ref = model.double()(x)
        got = ours.double()(x)
    assert (got - ref).abs().max().item() <= 1e-5 * ref.abs().max().item(), name


def test_timm_resnetv2_variants_without_batchnorm_are_refused(timm, tmp_path):
    refused = [n for n in timm.list_models(module="resnetv2") if n not in PLAIN_V2]
    assert len(refused) >= 8
    for name in refused:
        words = next(w for p, w in FEATURES_V2 if re.search(p, name))
        with torch.device("meta"):
            shapes = timm.create_model(name, pretrained=False).state_dict()
        feature = unsupported_feature(normalise_names(shapes)[0])
        assert feature is not None and words in feature, (name, feature)
    # one real file, saved by timm's train.py: the arch it names is refused too
    torch.manual_seed(0)
    path = tmp_path / "last.pth.tar"
    state = timm.create_model("resnetv2_50x1_bit", pretrained=False, num_classes=7).state_dict()
    torch.save({"epoch": 3, "arch": "resnetv2_50x1_bit", "state_dict": state, "version": 2}, path)
    with pytest.raises(CheckpointError, match="weight-standardised convolutions and GroupNorm"):
        load_model(path)
