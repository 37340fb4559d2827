"""Gluon ``save_parameters`` files (structural names, ``features.4.0.body.0.weight``) to a `Conversion`.

The names are renamed with the tables of `gluon_names`; the skeleton is read from the names and
shapes (`converters.names`) and built by `converters.build`; the conventions the names cannot show
come from Gluon's model zoo code (`gluon_conventions`): V1 bottlenecks
stride their first 1x1 conv, every BatchNorm has eps 1e-5, V2's input BatchNorm runs with
``fix_gamma=True`` and a beta that Gluon never trains (zero: the reference's affine-free input BN).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from resnet_port.converters.build import build
from resnet_port.converters.common import Conversion, ConversionReport, family_name, finish_conversion
from resnet_port.converters.mxnet import gluon_names
from resnet_port.converters.mxnet.shared import check_arch, check_shapes, metadata, name_or_closest
from resnet_port.converters.names import MAX_POOL_3X3_2, LayoutConventions, skeleton_from_names
from resnet_port.converters.skeleton import SourceTensor
from resnet_port.errors import ConversionError
from resnet_port.resnet_ref import ResNetSpec, find_arch, get_spec, list_archs

GLUON_BN_EPS = 1e-5  # gluon.nn.BatchNorm's epsilon, which the model zoo keeps everywhere


def gluon_conventions(version: str, stem: gluon_names.GluonStem | None = None, v2_shortcut_input: str = "preactivated") -> LayoutConventions:
    """What Gluon's model zoo (and GluonCV's CIFAR) code decides and its names cannot show."""
    stem = stem or gluon_names.gluon_stem(version, gluon_names.GLUON_V1_FIRST_STAGE if version == "v1" else gluon_names.GLUON_V2_FIRST_STAGE)
    return LayoutConventions(
        layout=stem.what,
        residual=version,
        # Gluon BottleneckV1 strides its first 1x1 conv (the paper's layout); V2 its 3x3.
        stride_in="1x1" if version == "v1" else "3x3",
        bn_eps=GLUON_BN_EPS,
        # V2's input BatchNorm(scale=False, center=False): MXNet runs it with fix_gamma=True.
        input_bn_fix_gamma=True,
        stem_norm=stem.stem_norm,
        stem_pool=MAX_POOL_3X3_2 if stem.pooled else None,
        v2_shortcut_input=v2_shortcut_input,
    )


def gluon_readings(path: Path, version: str, names: list[str]) -> list[tuple[LayoutConventions, bool]]:
    """The readings of a structural-name file, each (conventions, GluonCV CIFAR net?), from where its
    first stage sits; most files have one.

    A V2 file whose stages start at features.2 was built by GluonCV's CIFARResNetV2 or by Gluon's
    ResNetV2(thumbnail=True): the names are the same, the projections are not (CIFAR projects the
    raw block input, the model zoo the pre-activated one).  Both readings are returned, the likelier
    first: GluonCV's for basic blocks (its CIFAR nets are the published ones), the model zoo's for
    bottlenecks (GluonCV's CIFAR nets have none).  `convert_gluon_parameters` takes the one ``--arch``
    or the registry names, else the first.
    """
    first = gluon_names.first_stage(names)
    stem = gluon_names.gluon_stem(version, first)
    if stem is None:
        known = ", ".join(f"features.{i} ({s.what})" for (v, i), s in gluon_names.GLUON_STEMS.items() if v == version)
        raise ConversionError(
            f"{path}: the first stage of this Gluon ResNet {version.upper()} file is features.{first}; its classes start "
            f"their stages at {known}"
        )
    if (version, first) != ("v2", 2):
        return [(gluon_conventions(version, stem), (version, first) == ("v1", 2))]
    cifar = (gluon_conventions(version, stem, "block_input"), True)
    thumbnail = (gluon_conventions(version, stem, "preactivated"), False)
    bottleneck = any(re.match(r"^features\.\d+\.\d+\.conv3\.", n) for n in names)
    return [thumbnail, cifar] if bottleneck else [cifar, thumbnail]


def gluoncv_conventions() -> LayoutConventions:
    """What GluonCV's ResNetV1b code decides and its names cannot show."""
    return LayoutConventions(
        layout="GluonCV ResNetV1b",
        residual="v1",
        stride_in="3x3",  # BottleneckV1b strides its 3x3 (conv2), as torchvision does
        bn_eps=GLUON_BN_EPS,  # gluon.nn.BatchNorm's default; GluonCV passes no epsilon
    )


def convert_gluoncv_parameters(path: Path, params: dict[str, np.ndarray], arch: str | None) -> Conversion:
    """A GluonCV ResNetV1b-family ``save_parameters`` file (conv1.0.weight, layer1.0.bn1.gamma, ...)."""
    mapped, unmatched = gluon_names.rename_gluoncv_v1b(list(params))
    if unmatched:
        more = f" (+{len(unmatched) - 5} more)" if len(unmatched) > 5 else ""
        raise ConversionError(
            f"{path}: tensor(s) {', '.join(unmatched[:5])}{more} fit no GluonCV ResNetV1b name; expected conv1[.K].weight, "
            "bn1.*, layerS.B.convK.weight, layerS.B.bnK.*, layerS.B.downsample.K.*, fc.*"
        )
    tensors = {target: SourceTensor(params[source], source) for target, source in mapped.items()}
    skeleton = skeleton_from_names(tensors, str(path), gluoncv_conventions())
    report = ConversionReport("mxnet", [path.name])
    spec, state_dict, report = build(skeleton, report, arch)  # arch picks among equivalent readings
    name = check_arch(spec, arch, str(path), "names and shapes")
    if arch is None:
        spec, name = family_name(spec, "gluoncv", name)
    report.arch = name
    name_or_closest(spec, report)
    check_shapes(path, spec, state_dict, name)
    details = {"format": "gluoncv save_parameters", "gluon_version": "V1b"}
    meta = metadata(spec, name, [path], details, "gluoncv", report)
    return finish_conversion(spec, state_dict, meta, report, str(path))


def refuse_unsupported(path: Path, names: list[str]) -> None:
    """GroupNorm and SE variants: refused by name, in one line."""
    why = gluon_names.unsupported_variant(names)
    if why:
        raise ConversionError(f"{path}: {why}; not supported")


def convert_gluon_parameters(
    path: Path, params: dict[str, np.ndarray], arch: str | None, legacy_names: dict[str, str] | None = None
) -> Conversion:
    """``legacy_names`` (structural -> stored name) when ``params`` were translated from ``save_params``."""
    names = list(params)
    refuse_unsupported(path, names)
    if not legacy_names and gluon_names.is_gluoncv_v1b(names):
        return convert_gluoncv_parameters(path, params, arch)
    version = gluon_version_or_fail(path, names)
    mapped, unmatched = gluon_names.rename_all(names, version)
    if unmatched:
        more = f" (+{len(unmatched) - 5} more)" if len(unmatched) > 5 else ""
        raise ConversionError(
            f"{path}: tensor(s) {', '.join(unmatched[:5])}{more} fit no Gluon ResNet {version.upper()} name; "
            f"expected names such as features.N.M.{'body.0' if version == 'v1' else 'conv1'}.weight"
        )
    if version == "v2" and "data_bn.running_mean" not in mapped:
        raise ConversionError(f"{path}: a Gluon ResNet V2 file needs the input BatchNorm features.0.*; not found")
    tensors = {
        target: SourceTensor(params[source], legacy_names[source] if legacy_names else source)
        for target, source in mapped.items()
    }
    readings = gluon_readings(path, version, names)
    built = []
    for conventions, cifar in readings:
        report = ConversionReport("mxnet", [path.name])
        spec, state_dict, report = build(skeleton_from_names(tensors, str(path), conventions), report)
        built.append((spec, state_dict, report, conventions, cifar))
    # Several readings (the CIFAR / thumbnail V2 layout): the one --arch names, else a registered one, else the first.
    wanted = get_spec(arch) if arch else None
    chosen = next((b for b in built if wanted is not None and b[0] == wanted.replace(num_classes=b[0].num_classes)), None)
    chosen = chosen or next((b for b in built if wanted is None and find_arch(b[0])), built[0])
    spec, state_dict, report, conventions, cifar = chosen
    name = check_arch(spec, arch, str(path), "names and shapes")
    report.arch = name
    name_or_closest(spec, report)
    check_shapes(path, spec, state_dict, name)
    if len(built) > 1:
        other = "a cifar_resnetN_v2" if not cifar else "a resnetN_v2_thumbnail"
        report.notes.append(
            f"read as {'GluonCV CIFARResNetV2 (projections of the raw block input)' if cifar else 'Gluon ResNetV2(thumbnail=True) (projections of the pre-activated input)'}: "
            f"the two classes save the same names; --arch {other} name picks the other"
        )
    details = {
        "format": "gluon save_params (legacy)" if legacy_names else "gluon save_parameters",
        "gluon_version": version.upper(),
        "gluon_class": conventions.layout.split(" / ")[0 if cifar else -1],
    }
    meta = metadata(spec, name, [path], details, "gluoncv-cifar" if cifar else "gluon", report)
    return finish_conversion(spec, state_dict, meta, report, str(path))


def gluon_version_or_fail(path: Path, names: list[str]) -> str:
    version = gluon_names.gluon_version(names)
    if version is None:
        shown = ", ".join(names[:4]) + (" ..." if len(names) > 4 else "")
        raise ConversionError(
            f"{path}: the names ({shown}) fit no Gluon ResNet V1 or V2 layout; expected features.N.M.body.K.* (V1) or "
            "features.N.M.bn1.* (V2) from save_parameters, or arg:/aux: names with a --symbol file"
        )
    return version


__all__ = [
    "convert_gluon_parameters", "convert_gluoncv_parameters", "gluon_conventions", "gluon_readings", "gluoncv_conventions",
]
