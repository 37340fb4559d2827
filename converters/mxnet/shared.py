"""What the Gluon and the symbol paths of convert-mxnet share after `converters.build`: checking the
spec against ``--arch``, naming the closest registered archs, the metadata."""

from __future__ import annotations

from pathlib import Path

import torch

from resnet_port.checkpoints import CheckpointMetadata, SourceFile, SourceInfo
from resnet_port.checkpoints.weight_sources import published_record, source_classes, source_preprocessing
from resnet_port.converters.common import ConversionReport, resize_and_crop
from resnet_port.errors import ConversionError
from resnet_port.parity import spec_differences as parity_spec_differences
from resnet_port.resnet_ref import ResNetSpec, find_arch, get_spec, list_archs, state_dict_problems


def spec_differences(spec: ResNetSpec, other: ResNetSpec) -> list[str]:
    """The fields in which ``other`` differs from ``spec`` (the class count aside)."""
    return [d["field"] for d in parity_spec_differences(spec, other, ignore=("num_classes",))]


def closest_archs(spec: ResNetSpec, count: int = 3) -> list[tuple[str, list[str]]]:
    """The registered archs nearest to an unregistered spec, with the fields that differ."""
    ranked = sorted((len(d), name, d) for name in list_archs() if (d := spec_differences(spec, get_spec(name))))
    return [(name, diffs) for _, name, diffs in ranked[:count]]


def name_or_closest(spec: ResNetSpec, report: ConversionReport) -> None:
    """When no registered arch is this network, say which come nearest and how they differ."""
    if find_arch(spec) is None:
        near = "; ".join(f"{name} (differs in {', '.join(diffs)})" for name, diffs in closest_archs(spec))
        report.notes.append(f"no registered arch has this layout; the closest: {near}")


def check_arch(spec: ResNetSpec, arch: str | None, where: str, found_by: str) -> str | None:
    """The registered name of ``spec``; with ``arch`` given, refuse it unless it is the same network."""
    found = find_arch(spec)
    if arch is None:
        return found
    wanted = get_spec(arch, spec.num_classes)
    if wanted != spec:
        diffs = [f"{d['field']}: {d['a']!r} in the file, {d['b']!r} in {arch}" for d in parity_spec_differences(spec, wanted)]
        raise ConversionError(
            f"{where}: the {found_by} describe{'s' if found_by == 'symbol' else ''} {found or 'an unregistered ResNet'}, "
            f"not --arch {arch} ({'; '.join(diffs[:4])})"
        )
    return arch


def metadata(
    spec: ResNetSpec, arch: str | None, files: list[Path], details: dict, family: str, report: ConversionReport | None = None,
) -> CheckpointMetadata:
    class_order, classes = source_classes(family, spec.num_classes)  # GluonCV's CIFAR nets: CIFAR-10's labels
    preprocessing = source_preprocessing(family)
    if family != "gluoncv-cifar" and spec.stem == "3x3" and spec.stem_pool == "none":
        # A thumbnail (CIFAR-style) stem: the net was made for small images, and MXNet files carry no
        # input size.  The same rule as convert-caffe: 32x32, the whole image, no resize.
        preprocessing.resize, preprocessing.crop, _ = resize_and_crop((32, 32))
        if report is not None:
            report.warnings.append(
                "the files give no input size; a CIFAR-style stem (3x3, stride 1, no pool): 32x32 assumed "
                "(resize 32, crop 32); check it against the model's source"
            )
    return CheckpointMetadata(
        spec=spec,
        arch=arch,
        class_order=class_order,
        classes=classes,
        preprocessing=preprocessing,
        published=published_record(arch, family),  # family: "gluon" (Gluon model zoo) or "mxnet" (symbolic)
        source=SourceInfo(framework="mxnet", files=[SourceFile.of(p) for p in files], details=details),
    )


def check_shapes(path: Path, spec: ResNetSpec, state_dict: dict[str, torch.Tensor], name: str | None) -> None:
    problems = state_dict_problems(spec, state_dict)
    if problems:
        raise ConversionError(f"{path}: the tensors do not fit {name or 'the ResNet their names describe'}: {problems}")


__all__ = ["closest_archs", "spec_differences"]
