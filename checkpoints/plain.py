"""Plain state dicts from torchvision, timm and mmcls: renamed onto the reference names, and the
architecture inferred from names and shapes when the user does not give it: a registered arch whose
names and shapes are these, else the spec read from them into the shared converter skeleton
(`recognised_spec`).

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
from resnet_port.checkpoints.weight_sources import published_record
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


def _rename(key: str, table: list[tuple[str, str]]) -> str:
    for pattern, replacement in table:
        key = re.sub(pattern, replacement, key)
    return key


def normalise_names(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    """Reference names for a plain state_dict, and the layout it was recognised as."""
    renamed = {_rename(k, PREFIX_RENAMES): v for k, v in state_dict.items()}
    layout = "torchvision"
    if any(k.startswith("backbone.") for k in renamed):
        layout = "mmcls"
        renamed = {
            _rename(k, MMCLS_RENAMES): v
            for k, v in renamed.items()
            if k.startswith("backbone.") or k.startswith("head.fc.")
        }
        renamed = _mmcls_avg_down(renamed)
    elif any(k.startswith("conv1.0.") for k in renamed):
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


# Plain PyTorch checkpoints come from these families; prefer them when a layout also fits a port
# (Caffe ResNet-101 and torchvision resnet101 share every name and shape).
PLAIN_FAMILIES = ("torchvision", "mmcls", "cifar")


def recognised_spec(path: Path, state_dict: Mapping[str, torch.Tensor], layout: str) -> ResNetSpec:
    """The spec a reference-named state dict describes, read from its names and shapes into the
    shared skeleton (`converters.names`) and decided by `converters.build`, with the conventions of
    these layouts: post-activation, bottleneck stride in the 3x3, BN eps 1e-5, the 3x3/2 max pool
    after a 7x7 or deep stem and none after a 3x3 stem (the CIFAR nets).  For a layout no registered
    arch fits (other widths or depths); raises `ConversionError` when the names make no ResNet."""
    # Imported here: converters build on checkpoints, not the other way round at import time.
    from resnet_port.converters.build import build
    from resnet_port.converters.common import ConversionReport
    from resnet_port.converters.names import MAX_POOL_3X3_2, LayoutConventions, skeleton_from_names
    from resnet_port.converters.skeleton import SourceTensor

    stem = state_dict.get("conv1.weight")
    cifar_stem = stem is not None and stem.ndim == 4 and stem.shape[-1] == 3
    conventions = LayoutConventions(
        layout=f"{layout} state dict", residual="v1", stride_in="3x3", bn_eps=1e-5,
        stem_pool=None if cifar_stem else MAX_POOL_3X3_2,
    )
    tensors = {
        key: SourceTensor((value.detach().cpu().float() if value.is_floating_point() else value.detach().cpu()).numpy(), key)
        for key, value in state_dict.items()
    }
    return build(skeleton_from_names(tensors, str(path), conventions), ConversionReport(layout)).spec


def metadata_for_plain(
    path: Path, tensors: Mapping[str, torch.Tensor], arch: str | None, preset: str | None
) -> tuple[dict[str, torch.Tensor], CheckpointMetadata]:
    state_dict, layout = normalise_names(tensors)
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
    family = preset or ("timm" if layout == "timm" else "mmcls" if layout == "mmcls" else default_family)
    metadata = CheckpointMetadata(
        spec=spec,
        arch=arch,
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
    return state_dict, metadata
