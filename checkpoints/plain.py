"""Plain state dicts from torchvision, timm and mmcls: renamed onto the reference names, and the
architecture inferred from names and shapes when the user does not give it: a registered arch whose
names and shapes are these, else the spec read from them into the shared converter skeleton
(`recognised_spec`): any depth, width, deep or tiered stem, conv or avg-pool shortcut.  Variants the
reference cannot express (attention, groups, GroupNorm, anti-aliasing a checkpoint names) are
refused first, naming the feature (`unsupported_feature`), so that none loads without it.

The renames are a table read top to bottom, applied with anchored patterns; tensors are never
paired by order or by substring.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Mapping

import torch

from resnet_port.checkpoints.metadata import CheckpointMetadata, SourceFile, SourceInfo
from resnet_port.checkpoints.presets import preset_preprocessing
from resnet_port.checkpoints.weight_sources import published_record, source_classes
from resnet_port.errors import CheckpointError, ConversionError
from resnet_port.resnet_ref import ResNet, ResNetSpec, arch_info, get_spec, list_archs

# (anchored pattern, replacement): applied in order to every key.
PREFIX_RENAMES: list[tuple[str, str]] = [
    (r"^module\.", ""),  # DataParallel / DistributedDataParallel
    (r"^model\.", ""),  # Lightning-style wrappers
]
# mmcls / mmpretrain ImageClassifier: backbone + head.fc, deep stem as stem.N.{conv,bn}.
MMCLS_RENAMES: list[tuple[str, str]] = [
    (r"^backbone\.", ""),
    (r"^head\.fc\.", "fc."),
    (r"^stem\.0\.conv\.", "conv1.0."),
    (r"^stem\.0\.bn\.", "conv1.1."),
    (r"^stem\.1\.conv\.", "conv1.3."),
    (r"^stem\.1\.bn\.", "conv1.4."),
    (r"^stem\.2\.conv\.", "conv1.6."),
    (r"^stem\.2\.bn\.", "bn1."),
]
# The ResNet body itself also ends up under these names in timm (`fc`) and torchvision (`fc`).
_MMCLS_DOWNSAMPLE = re.compile(r"^(layer\d+\.\d+\.downsample)\.(\d)\.(.*)$")


_TIMM_AVG_DOWN = re.compile(r"^layer\d+\.\d+\.downsample\.2\.")


def _rename(key: str, table: list[tuple[str, str]]) -> str:
    for pattern, replacement in table:
        key = re.sub(pattern, replacement, key)
    return key


# First name components of the ResNet layouts read here: a state_dict whose every key starts with
# another component (``net.``, ``encoder.``, ``_orig_mod.`` of torch.compile) has its model one level
# down, under a wrapper attribute the training code chose.
LAYOUT_ROOTS = frozenset({"conv1", "bn1", "fc", "data_bn", "backbone", "head", "stem"})
_LAYER = re.compile(r"^layer\d+$")


def _strip_wrappers(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove wrapper prefixes that every key shares, until the keys start where a ResNet does."""
    for _ in range(4):  # e.g. module._orig_mod.model.: a few levels at most
        firsts = {k.split(".", 1)[0] for k in state_dict}
        if len(firsts) != 1 or not all("." in k for k in state_dict):
            return state_dict
        first = firsts.pop()
        if first in LAYOUT_ROOTS or _LAYER.match(first):
            return state_dict
        state_dict = {k.split(".", 1)[1]: v for k, v in state_dict.items()}
    return state_dict


# timm's ResNetV2 (resnetv2_18 .. resnetv2_152d: pre-activation blocks, BatchNormAct2d): stem.conv or
# stem.conv1-3/norm1-2 (its deep stem ends at the bare third conv), stages.S.blocks.B.{normK,convK},
# downsample.conv (bare: the BN is the next block's norm1), the final norm, a 1x1-conv head.fc.
TIMM_V2_RENAMES: list[tuple[str, str]] = [
    (r"^stem\.conv\.", "conv1."),
    (r"^stem\.conv1\.", "conv1.0."),
    (r"^stem\.norm1\.", "conv1.1."),
    (r"^stem\.conv2\.", "conv1.3."),
    (r"^stem\.norm2\.", "conv1.4."),
    (r"^stem\.conv3\.", "conv1.6."),
    (r"^(layer\d+\.\d+)\.norm(\d)\.", r"\1.bn\2."),
    (r"^norm\.", "final_bn."),
    (r"^head\.fc\.", "fc."),
]
_TIMM_V2_STAGE = re.compile(r"^stages\.(\d+)\.blocks\.(\d+)\.")


TIMM_V2_AVG_DOWN = (
    "average-pool projections assumed: timm's resnetv2 nets with a deep or tiered stem use avg_down, and "
    "downsample.conv has the same name and shape either way"
)


def _timm_v2_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Reference names for a timm ResNetV2 state dict.

    timm's DownsampleAvg (pool, then the 1x1 conv) and DownsampleConv (the strided conv) save the same
    ``downsample.conv`` name and shape; every resnetv2 timm defines with a deep or tiered stem
    averages (``avg_down=True``), every one with the 7x7 stem does not, so the stem decides."""
    deep = "stem.conv1.weight" in state
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        key = _TIMM_V2_STAGE.sub(lambda m: f"layer{int(m.group(1)) + 1}.{m.group(2)}.", key)
        key = re.sub(r"\.downsample\.conv\.", ".downsample.1." if deep else ".downsample.0.", key)
        key = _rename(key, TIMM_V2_RENAMES)
        if key == "fc.weight" and value.ndim == 4 and tuple(value.shape[2:]) == (1, 1):
            value = value.reshape(value.shape[0], value.shape[1])  # the classifier as a 1x1 conv (use_conv=True)
        out[key] = value
    return out


# The CIFAR ResNets of kuangliu/pytorch-cifar and the many repositories that copy it: torchvision's
# block names, but ``shortcut.0/.1`` for the projection and ``linear`` for the classifier.
PYTORCH_CIFAR_RENAMES: list[tuple[str, str]] = [
    (r"^(layer\d+\.\d+)\.shortcut\.", r"\1.downsample."),
    (r"^linear\.", "fc."),
]


def is_pytorch_cifar(state_dict: Mapping[str, torch.Tensor]) -> bool:
    return "linear.weight" in state_dict and "fc.weight" not in state_dict and "conv1.weight" in state_dict


def is_timm_v2(state_dict: Mapping[str, torch.Tensor]) -> bool:
    return any(k.startswith("stages.0.blocks.0.") for k in state_dict) and any(k.startswith("stem.conv") for k in state_dict)


def normalise_names(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    """Reference names for a plain state_dict, and the layout it was recognised as."""
    renamed = _strip_wrappers({_rename(k, PREFIX_RENAMES): v for k, v in state_dict.items()})
    layout = "torchvision"
    if is_timm_v2(renamed):
        return _timm_v2_names(renamed), "timm-v2"
    if is_pytorch_cifar(renamed):
        return {_rename(k, PYTORCH_CIFAR_RENAMES): v for k, v in renamed.items()}, "pytorch-cifar"
    if any(k.startswith("backbone.") for k in renamed):
        layout = "mmcls"
        renamed = {
            _rename(k, MMCLS_RENAMES): v
            for k, v in renamed.items()
            if k.startswith("backbone.") or k.startswith("head.fc.")
        }
        renamed = _mmcls_avg_down(renamed)
    elif any(k.startswith("conv1.0.") or _TIMM_AVG_DOWN.match(k) for k in renamed):
        # timm's own modules: the deep stem, or the avg-down shortcut's conv + BN at .1/.2.  A timm
        # net with neither (resnet26, resnet50) has torchvision's names and shapes exactly.
        layout = "timm"
    return renamed, layout


def _mmcls_avg_down(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """mmcls V1d omits the pool slot where the stride is 1 (downsample.0 is then the conv);
    timm and the reference keep an Identity there, so the conv is always ``downsample.1``."""
    avg_down = any(m and m.group(2) == "2" for m in map(_MMCLS_DOWNSAMPLE.match, state))
    if not avg_down:
        return state
    blocks_with_pool = {m.group(1) for m in map(_MMCLS_DOWNSAMPLE.match, state) if m and m.group(2) == "2"}
    out = {}
    for key, value in state.items():
        m = _MMCLS_DOWNSAMPLE.match(key)
        if m and m.group(1) not in blocks_with_pool:
            key = f"{m.group(1)}.{int(m.group(2)) + 1}.{m.group(3)}"
        out[key] = value
    return out


@functools.lru_cache(maxsize=256)
def _shapes_of(arch: str, num_classes: int) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = ResNet(get_spec(arch, num_classes))
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}


_BLOCK_KEY = re.compile(r"^layer(\d+)\.(\d+)\.")


def _blocks_per_stage(keys) -> tuple[int, ...]:
    """(blocks in layer1, layer2, ...) as the names say; a cheap filter before building candidates."""
    seen: dict[int, set[int]] = {}
    for key in keys:
        m = _BLOCK_KEY.match(key)
        if m:
            seen.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    return tuple(len(seen[s]) for s in sorted(seen))


def fitting_archs(state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """Every registered arch whose parameter names and shapes equal those of ``state_dict``."""
    fc = state_dict.get("fc.weight")
    if fc is None or fc.ndim != 2:
        return []
    num_classes = int(fc.shape[0])
    layers = _blocks_per_stage(state_dict)
    have = {k: tuple(v.shape) for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
    return [
        name
        for name in list_archs()
        if arch_info(name).spec.layers == layers and _shapes_of(name, num_classes) == have
    ]


# Parts of timm / torchvision / mmcls ResNet variants that the reference ResNet has no place for,
# recognised by the module names they leave in a state dict: (anchored pattern, the feature).
_FOREIGN_MODULES: list[tuple[str, str]] = [
    (r"^layer\d+\.\d+\.se\.conv\.", "ECA channel attention (timm ecaresnet*: se.conv)"),
    (r"^layer\d+\.\d+\.se\.", "squeeze-and-excitation attention (timm seresnet*/resnetrs*: se.fc1/fc2)"),
    (r"^layer\d+\.\d+\.se_layer\.", "squeeze-and-excitation attention (mmcls SEResNet: se_layer)"),
    (r"^layer\d+\.\d+\.(attn|attention|eca|cbam|gc|sk)\.", "an attention module in the blocks"),
    (r"^layer\d+\.\d+\.conv2\.(radix|fc1|rsoftmax)", "split attention (ResNeSt)"),
    (r"^layer\d+\.\d+\.aa\.", "anti-aliased downsampling (timm resnetaa*/resnetblur*: aa)"),
    (r"^(layer\d+\.\d+\.bn\d|final_bn|conv1\.[14])\.v$", "EvoNorm instead of BatchNorm (timm resnetv2_*_evos)"),
    (r"^(layer\d+\.\d+\.bn\d|final_bn|conv1\.[14])\.tau$", "FilterResponseNorm instead of BatchNorm (timm resnetv2_*_frn)"),
]
# timm builds these without a parameter of their own (a blur or average pool before a stride), so a
# bare state dict of one equals the plain net's; a timm train.py file names its arch, and that is refused.
_FEATURELESS_TIMM = [
    (r"^(se)?resnet(aa|blur)", "anti-aliased downsampling (a fixed blur/average pool before each stride)"),
    (r"^ecaresnet", "ECA channel attention"),
    (r"^(se)?resnext", "grouped 3x3 convolutions (ResNeXt)"),
    (r"^se", "squeeze-and-excitation attention"),
    (r"^resnetrs", "squeeze-and-excitation attention and ResNet-RS stem"),
    (r"_gn$", "GroupNorm instead of BatchNorm"),
    (r"^resnetv2_.*_bit$", "weight-standardised convolutions and GroupNorm (BiT)"),
    (r"_evos$", "EvoNorm instead of BatchNorm"),
    (r"_frn$", "FilterResponseNorm instead of BatchNorm"),
]


def unsupported_feature(state_dict: Mapping[str, torch.Tensor], source_arch: str | None = None) -> str | None:
    """The first feature of these reference-named tensors (or of the arch a timm training checkpoint
    names) that the reference ResNet cannot express, in words; None when there is none.  Such a file
    is refused, never loaded without its attention, groups or norm."""
    quantized = next((k for k, v in state_dict.items() if isinstance(v, torch.Tensor) and v.is_quantized), None)
    if quantized is not None or any(".zero_point" in k or "_packed_params" in k for k in state_dict):
        key = quantized or next(k for k in state_dict if ".zero_point" in k or "_packed_params" in k)
        return (
            f"quantized weights (a torch.ao / torchvision quantization model, e.g. {key}); the reference ResNet is "
            "a float network: convert the float checkpoint the quantized one was made from"
        )
    if source_arch:
        base = source_arch.split(".", 1)[0].removeprefix("timm/")
        for pattern, feature in _FEATURELESS_TIMM:
            if re.search(pattern, base):
                return f"the checkpoint names arch {source_arch!r}, which has {feature}"
    for pattern, feature in _FOREIGN_MODULES:
        for key in state_dict:
            if re.match(pattern, key):
                return f"{feature}, e.g. {key}"
    for key, weight in state_dict.items():
        m = re.match(r"^(layer\d+\.\d+)\.conv2\.weight$", key)
        first = state_dict.get(f"{m.group(1)}.conv1.weight") if m else None
        if m and first is not None and weight.ndim == 4 and first.ndim == 4 and f"{m.group(1)}.conv3.weight" in state_dict:
            inner = int(first.shape[0])
            if int(weight.shape[1]) != inner and int(weight.shape[1]) and inner % int(weight.shape[1]) == 0:
                groups = inner // int(weight.shape[1])
                return (
                    f"grouped 3x3 convolutions (ResNeXt: {key} has shape {tuple(weight.shape)}, {groups} groups of "
                    f"{int(weight.shape[1])} channels); the reference ResNet's convolutions are ungrouped"
                )
    for key in state_dict:
        if key.endswith(".weight") and state_dict[key].ndim == 1 and key.removesuffix("weight") + "running_mean" not in state_dict:
            module = key.removesuffix(".weight")
            if re.match(r"^(bn\d*|final_bn|conv1\.[14]|layer\d+\.\d+\.(bn\d|downsample\.\d))$", module):
                return (
                    f"a normalisation without running statistics at {module} (GroupNorm, as timm resnet50_gn); "
                    "the reference ResNet uses BatchNorm"
                )
    return None


# Plain PyTorch checkpoints come from these families; prefer them when a layout also fits a port
# (Caffe ResNet-101 and torchvision resnet101 share every name and shape).
PLAIN_FAMILIES = ("torchvision", "mmcls", "timm", "cifar")


def recognised_spec(path: Path, state_dict: Mapping[str, torch.Tensor], layout: str) -> ResNetSpec:
    """The spec a reference-named state dict describes, read from its names and shapes into the
    shared skeleton (`converters.names`) and decided by `converters.build`, with the conventions of
    these layouts: post-activation, bottleneck stride in the 3x3, BN eps 1e-5, the 3x3/2 max pool
    after a 7x7 or deep stem and none after a 3x3 stem (the CIFAR nets).  For a layout no registered
    arch fits (other widths or depths, timm's tiered stem); the registered name whose spec equals the
    result is found by `converters.build` itself.  Raises `ConversionError` when the names make no ResNet."""
    # Imported here: converters build on checkpoints, not the other way round at import time.
    from resnet_port.converters.build import build
    from resnet_port.converters.common import ConversionReport
    from resnet_port.converters.names import MAX_POOL_3X3_2, LayoutConventions, skeleton_from_names
    from resnet_port.converters.skeleton import SourceTensor

    stem = state_dict.get("conv1.weight")
    cifar_stem = stem is not None and stem.ndim == 4 and stem.shape[-1] == 3
    v2 = layout == "timm-v2"  # pre-activation; its stem has no BN of its own (the first block's norm1 follows the pool)
    conventions = LayoutConventions(
        layout=f"{layout} state dict", residual="v2" if v2 else "v1", stride_in="3x3", bn_eps=1e-5,
        stem_pool=None if cifar_stem else MAX_POOL_3X3_2, stem_norm="none" if v2 else "bn_relu",
    )
    tensors = {
        key: SourceTensor((value.detach().cpu().float() if value.is_floating_point() else value.detach().cpu()).numpy(), key)
        for key, value in state_dict.items()
    }
    return build(skeleton_from_names(tensors, str(path), conventions), ConversionReport(layout)).spec


def metadata_for_plain(
    path: Path,
    tensors: Mapping[str, torch.Tensor],
    arch: str | None,
    preset: str | None,
    source_arch: str | None = None,
) -> tuple[dict[str, torch.Tensor], CheckpointMetadata]:
    """``source_arch``: the arch a training checkpoint names (timm train.py's ``'arch'``), checked for
    features a state dict cannot show."""
    state_dict, layout = normalise_names(tensors)
    # A named arch (the file's own, else --arch) can tell a parameter-free feature that names cannot.
    feature = unsupported_feature(state_dict, source_arch or arch)
    if feature is not None:
        raise CheckpointError(f"{path}: not loadable as a reference ResNet: {feature}")
    spec = None
    if arch is None:
        fits = fitting_archs(state_dict)
        preferred = [a for a in fits if arch_info(a).family in PLAIN_FAMILIES] or fits
        if len(preferred) > 1:
            raise CheckpointError(f"{path}: several architectures fit ({', '.join(fits)}); pass --arch to choose")
        if not preferred:
            try:
                spec = recognised_spec(path, state_dict, layout)
            except ConversionError as exc:
                raise CheckpointError(
                    f"{path}: no registered architecture has these parameter names and shapes "
                    f"({len(state_dict)} tensors, recognised as a {layout} layout), and they make no ResNet "
                    f"({str(exc).removeprefix(f'{path}: ')}); pass --arch"
                ) from None
        else:
            arch = preferred[0]
        inferred = True
    else:
        inferred = False
    if spec is None:
        info = arch_info(arch)
        num_classes = int(state_dict["fc.weight"].shape[0]) if "fc.weight" in state_dict else info.spec.num_classes
        spec = get_spec(arch, num_classes)
        default_family = info.family
    else:
        default_family = "torchvision"
    # A CIFAR stem (3x3/1, no pool: mmcls ResNet_CIFAR) was trained on 32x32 images, whoever saved it.
    cifar = spec.stem == "3x3" and spec.stem_pool == "none"
    family = preset or (
        "cifar" if cifar else "timm" if layout in ("timm", "timm-v2") else "mmcls" if layout == "mmcls" else default_family
    )
    class_order, classes = source_classes(family, spec.num_classes)
    metadata = CheckpointMetadata(
        spec=spec,
        arch=arch,
        class_order=class_order,
        classes=classes,
        preprocessing=preset_preprocessing(family),
        source=SourceInfo(framework=layout, files=[SourceFile.of(path)], details={"arch_inferred": inferred}),
        notes={"preprocessing": f"preset {family!r}: the file itself carries no preprocessing"},
        # the weight source is known only when the user names it or the layout is one source's own
        published=published_record(arch, preset or ("mmcls" if layout == "mmcls" else None)),
    )
    if arch is None:
        metadata.notes["architecture"] = (
            f"no registered arch fits; the spec is read from the names and shapes ({layout} conventions: "
            "stride in the 3x3, BN eps 1e-5)"
        )
    if layout == "timm-v2":
        metadata.notes["layout"] = "timm ResNetV2 names (stages.S.blocks.B, normK before convK, the final norm)"
        if "conv1.0.weight" in state_dict:
            metadata.notes["projections"] = TIMM_V2_AVG_DOWN
    return state_dict, metadata
