"""Plain torchvision / mmcls state dicts, made by independent builders, load into the reference
model (named or inferred architecture) and give the builders' own outputs."""

from __future__ import annotations

import pytest
import torch

from resnet_port.checkpoints import load_model
from resnet_port.checkpoints.plain import fitting_archs, normalise_names
from resnet_port.errors import CheckpointError
from tests.core.independent_builders import (
    mmcls_v1d_forward,
    mmcls_v1d_state_dict,
    torchvision_forward,
    torchvision_state_dict,
)

torch.set_num_threads(1)


@pytest.mark.parametrize("depth,arch", [(18, "resnet18"), (50, "resnet50")])
def test_torchvision_state_dict_loads_as_is_and_matches(tmp_path, depth, arch):
    sd = torchvision_state_dict(depth, num_classes=10, seed=depth)
    path = tmp_path / "tv.pth"
    torch.save(sd, path)
    model, meta = load_model(path)  # architecture inferred from names and shapes
    assert meta.arch == arch and meta.spec.num_classes == 10
    assert meta.source.details["arch_inferred"] is True
    assert meta.preprocessing.channel_order == "RGB" and meta.preprocessing.pixel_max == 1.0
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        torch.testing.assert_close(model(x), torchvision_forward(sd, depth, x), rtol=1e-4, atol=1e-4)
    # the keys really are torchvision's, no renaming needed
    assert set(model.state_dict()) == set(sd)


def test_wrapped_and_prefixed_state_dicts(tmp_path):
    sd = torchvision_state_dict(18, seed=3)
    path = tmp_path / "wrapped.pth"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in sd.items()}}, path)
    model, meta = load_model(path, arch="resnet18")
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), torchvision_forward(sd, 18, x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("prefix", ["net.", "encoder.", "_orig_mod.", "module._orig_mod.", "model.backbone_net."])
def test_any_shared_wrapper_prefix_is_removed(tmp_path, prefix):
    """Training code keeps the network under an attribute of its own choosing (``self.net``), and
    torch.compile saves ``_orig_mod.``: a prefix every key shares, above the ResNet's own names."""
    sd = torchvision_state_dict(18, num_classes=5, seed=4)
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"{prefix}{k}": v for k, v in sd.items()}}, path)
    model, meta = load_model(path)  # inferred: the prefix is gone before the names are read
    assert meta.arch == "resnet18" and meta.spec.num_classes == 5
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        torch.testing.assert_close(model(x), torchvision_forward(sd, 18, x), rtol=1e-4, atol=1e-4)


def test_a_prefix_only_some_keys_share_is_kept():
    """Not a wrapper: the names stay as they are, and the layout reading refuses what does not fit."""
    sd = torchvision_state_dict(18, seed=4)
    mixed = {(f"net.{k}" if k.startswith("layer") else k): v for k, v in sd.items()}
    renamed, _ = normalise_names(mixed)
    assert set(renamed) == set(mixed)


def test_mmcls_v1d_checkpoint_is_renamed_and_matches(tmp_path):
    sd = mmcls_v1d_state_dict(50, num_classes=7, seed=5)
    path = tmp_path / "mmcls.pth"
    torch.save({"meta": {"mmcls_version": "0.25"}, "state_dict": sd}, path)
    model, meta = load_model(path)
    assert meta.arch == "resnet50_v1d" and meta.source.framework == "mmcls"
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        torch.testing.assert_close(model(x), mmcls_v1d_forward(sd, 50, x), rtol=1e-4, atol=1e-4)


def test_ambiguous_and_unknown_layouts_say_which_archs_fit(tmp_path):
    # torchvision resnet101 and Caffe ResNet-101 share every name and shape: a plain file is taken
    # as torchvision's (plain PyTorch files come from there), but both are listed as fitting.
    sd = torchvision_state_dict(101, seed=0)
    renamed, _ = normalise_names(sd)
    assert set(fitting_archs(renamed)) == {"resnet101", "caffe_resnet101", "resnet101_v1b"}  # v1b: GluonCV's alias
    path = tmp_path / "r101.pth"
    torch.save(sd, path)
    _, meta = load_model(path)
    assert meta.arch == "resnet101"
    # A layout that fits nothing is refused with the file named.
    broken = dict(sd)
    broken["layer9.0.conv1.weight"] = torch.zeros(1)
    bad = tmp_path / "bad.pth"
    torch.save(broken, bad)
    with pytest.raises(CheckpointError, match="bad.pth.*no registered architecture"):
        load_model(bad)
    with pytest.raises(CheckpointError, match="unexpected: layer9.0.conv1.weight"):
        load_model(bad, arch="resnet101")


def test_an_unregistered_layout_is_read_into_a_spec_from_names_and_shapes(tmp_path):
    """Half-width bottlenecks (width_per_group 32) fit no registered arch: the spec is read from the
    names and shapes through the shared converter skeleton, and the model equals torchvision's forward."""
    sd = torchvision_state_dict(50, num_classes=6, seed=8, width_per_group=32)
    path = tmp_path / "half.pth"
    torch.save(sd, path)
    model, meta = load_model(path)
    assert meta.arch is None and meta.source.details["arch_inferred"] is True
    spec = meta.spec
    assert (spec.block, spec.layers, spec.base_width, spec.stride_in, spec.num_classes) == ("bottleneck", (3, 4, 6, 3), 32, "3x3", 6)
    assert "no registered arch fits" in meta.notes["architecture"]
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        torch.testing.assert_close(model(x), torchvision_forward(sd, 50, x), rtol=1e-4, atol=1e-4)


def test_a_cifar_stem_records_cifar_preprocessing_whoever_saved_it(tmp_path):
    """mmcls ResNet_CIFAR (conv1 3x3/1, no max pool) saved as an mmcls runner file: the layout says
    mmcls, the stem says 32x32 images; with 10 classes, CIFAR-10's label order."""
    sd = torchvision_state_dict(18, num_classes=10, seed=6)
    sd["conv1.weight"] = torch.randn(64, 3, 3, 3, generator=torch.Generator().manual_seed(7))
    renamed = {(f"head.{k}" if k.startswith("fc.") else f"backbone.{k}"): v for k, v in sd.items()}
    path = tmp_path / "mmcls_cifar.pth"
    torch.save({"meta": {"mmcls_version": "0.25.0"}, "state_dict": renamed}, path)
    _, meta = load_model(path)
    assert meta.arch == "cifar_resnet18" and meta.source.framework == "mmcls"
    pre = meta.preprocessing
    assert (pre.resize, pre.crop, pre.pixel_max) == (32, 32, 255.0) and pre.mean == (125.307, 122.961, 113.8575)
    assert meta.class_order == "cifar10" and meta.classes[0] == "airplane"
    _, imagenet = load_model(path, preset="mmcls")  # the user's word wins
    assert imagenet.preprocessing.crop == 224


def test_pytorch_cifar_training_checkpoint(tmp_path):
    """kuangliu/pytorch-cifar's ResNet18 (copied by many repositories): torchvision's block names but
    ``shortcut.0/.1`` and ``linear``, saved as ``{'net': DataParallel state, 'acc', 'epoch'}``."""
    sd = torchvision_state_dict(18, num_classes=10, seed=8)
    sd["conv1.weight"] = torch.randn(64, 3, 3, 3, generator=torch.Generator().manual_seed(9)) * 0.2
    kuangliu = {
        "module." + k.replace(".downsample.", ".shortcut.").replace("fc.", "linear."): v for k, v in sd.items()
    }
    assert "module.layer2.0.shortcut.0.weight" in kuangliu and "module.linear.weight" in kuangliu
    path = tmp_path / "ckpt.pth"
    torch.save({"net": kuangliu, "acc": 95.04, "epoch": 199}, path)
    model, meta = load_model(path)
    assert meta.arch == "cifar_resnet18" and meta.source.framework == "pytorch-cifar"
    assert meta.preprocessing.crop == 32 and meta.class_order == "cifar10"
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(10))
    with torch.inference_mode():
        torch.testing.assert_close(model(x), torchvision_forward(sd, 18, x, cifar_stem=True), rtol=1e-4, atol=1e-4)


def test_quantized_state_dicts_are_refused_in_one_line(tmp_path):
    """torchvision's quantized ResNets (torch.ao): qint8 weights, scale / zero_point buffers."""
    import warnings

    sd = torchvision_state_dict(18, seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch deprecates quantized tensors; files of them exist
        sd["conv1.weight"] = torch.quantize_per_tensor(sd["conv1.weight"], 0.01, 0, torch.qint8)
    sd["conv1.scale"], sd["conv1.zero_point"] = torch.tensor(0.01), torch.tensor(0)
    path = tmp_path / "resnet18_fbgemm.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match="quantized weights") as info:
        load_model(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_half_and_double_precision_files_load_as_float32(tmp_path, dtype):
    sd = torchvision_state_dict(18, num_classes=10, seed=11)
    stored = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in sd.items()}
    path = tmp_path / "r18.pth"
    torch.save(stored, path)
    model, meta = load_model(path)
    assert meta.arch == "resnet18" and next(model.parameters()).dtype == torch.float32
    rounded = {k: (v.float() if v.is_floating_point() else v) for k, v in stored.items()}
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(12))
    with torch.inference_mode():
        torch.testing.assert_close(model(x), torchvision_forward(rounded, 18, x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.int32, torch.complex64])
def test_integer_or_complex_weights_are_refused(tmp_path, dtype):
    """Loading would cast them silently (dropping fractions or imaginary parts): a damaged file."""
    sd = torchvision_state_dict(18, num_classes=10, seed=11)
    sd["layer1.0.conv1.weight"] = (sd["layer1.0.conv1.weight"] * 100).to(dtype)
    path = tmp_path / "r18.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match=r"not floating-point: layer1\.0\.conv1\.weight"):
        load_model(path)


def test_non_finite_weights_are_refused_naming_the_tensor(tmp_path):
    """A diverged run saved NaNs: every logit would be NaN; inspect and load say where."""
    sd = torchvision_state_dict(18, num_classes=10, seed=13)
    sd["layer3.1.bn2.running_var"][5] = float("inf")
    sd["fc.weight"][0, :3] = float("nan")
    path = tmp_path / "diverged.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match=r"not finite .*layer3\.1\.bn2\.running_var \(1 of 256 values\).*fc\.weight \(3 of"):
        load_model(path)
