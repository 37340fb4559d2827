"""Gluon ``save_parameters`` files (structural names, ``features.4.0.body.0.weight``) to a `Conversion`.

The names are renamed with the tables of `gluon_names`; the architecture is read from the names and
shapes, and the conventions the names cannot show come from Gluon's model zoo code: V1 bottlenecks
stride their first 1x1 conv, every BatchNorm has eps 1e-5, V2's input BatchNorm runs with
``fix_gamma=True`` and a beta that Gluon never trains (zero: the reference's affine-free input BN).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from resnet_port.converters.common import Conversion, ConversionReport, finish_conversion
from resnet_port.converters.mxnet import gluon_names
from resnet_port.converters.mxnet.shared import (
    as_tensor,
    check_arch,
    check_shapes,
    conv_bias_roles,
    input_bn_kind,
    metadata,
    name_or_closest,
    pick_spec,
)
from resnet_port.errors import ConversionError, SpecError
from resnet_port.resnet_ref import ResNetSpec

GLUON_BN_EPS = 1e-5  # gluon.nn.BatchNorm's epsilon, which the model zoo keeps everywhere


def _gluon_spec(path: Path, version: str, sd: dict[str, np.ndarray], input_bn: str) -> ResNetSpec:
    """The spec the renamed names and shapes describe, with Gluon's conventions."""
    def shape(key: str) -> tuple[int, ...]:
        return tuple(sd[key].shape)

    blocks = sorted({(int(m.group(1)), int(m.group(2))) for k in sd if (m := re.match(r"^layer(\d+)\.(\d+)\.", k))})
    if "conv1.weight" not in sd or "fc.weight" not in sd or not blocks:
        missing = [k for k in ("conv1.weight", "fc.weight") if k not in sd] or ["the residual stages"]
        raise ConversionError(f"{path}: a Gluon ResNet {version.upper()} file needs {', '.join(missing)}; not found")
    stages = sorted({s for s, _ in blocks})
    if stages != list(range(1, len(stages) + 1)):
        raise ConversionError(f"{path}: the file holds stages {stages}; expected them numbered from 1 without gaps")
    layers = [sum(1 for s, _ in blocks if s == stage) for stage in stages]
    for stage, count in zip(stages, layers):
        present = sorted(b for s, b in blocks if s == stage)
        if present != list(range(count)):
            raise ConversionError(f"{path}: stage {stage} holds blocks {present}; expected 0..{count - 1}")
    bottleneck = "layer1.0.conv3.weight" in sd
    conv1_width = [shape(f"layer{s}.0.conv1.weight")[0] for s in stages]
    if bottleneck:
        planes = [shape(f"layer{s}.0.conv3.weight")[0] // 4 for s in stages]
        base_width = {64 * w // p for w, p in zip(conv1_width, planes)}
        if len(base_width) != 1:
            raise ConversionError(f"{path}: bottleneck widths {conv1_width} and outputs {planes} disagree between stages")
        widths, base = planes, base_width.pop()
    else:
        widths, base = conv1_width, 64
    try:
        return ResNetSpec(
            block="bottleneck" if bottleneck else "basic",
            layers=tuple(layers),
            residual=version,
            # Gluon BottleneckV1 strides its first 1x1 conv (the paper's layout); V2 its 3x3.  (Basic
            # blocks stride their first conv either way; the value only picks the registered name.)
            stride_in="1x1" if version == "v1" else "3x3",
            stem_width=shape("conv1.weight")[0],
            widths=tuple(widths),
            base_width=base,
            input_bn=input_bn,
            conv_bias=conv_bias_roles(sd),
            bn_eps=GLUON_BN_EPS,
            num_classes=shape("fc.weight")[0],
            in_chans=shape("conv1.weight")[1],
        )
    except SpecError as exc:
        raise ConversionError(f"{path}: the names and shapes describe no valid ResNet: {exc}") from exc


def convert_gluon_parameters(
    path: Path, params: dict[str, np.ndarray], arch: str | None, legacy_names: dict[str, str] | None = None
) -> Conversion:
    """``legacy_names`` (structural -> stored name) when ``params`` were translated from ``save_params``."""
    names = list(params)
    version = gluon_version_or_fail(path, names)
    mapped, unmatched = gluon_names.rename_all(names, version)
    if unmatched:
        more = f" (+{len(unmatched) - 5} more)" if len(unmatched) > 5 else ""
        raise ConversionError(
            f"{path}: tensor(s) {', '.join(unmatched[:5])}{more} fit no Gluon ResNet {version.upper()} name; "
            f"expected names such as features.N.M.{'body.0' if version == 'v1' else 'conv1'}.weight"
        )
    report = ConversionReport("mxnet", [path.name])
    sd_np = {target: params[source] for target, source in mapped.items()}
    if legacy_names:
        mapped = {target: legacy_names[source] for target, source in mapped.items()}
    input_bn_choices = ["none"]
    if version == "v2":
        if "data_bn.bias" not in sd_np:
            raise ConversionError(f"{path}: a Gluon ResNet V2 file needs the input BatchNorm features.0.*; not found")
        # BatchNorm(scale=False, center=False): MXNet runs it with fix_gamma=True (stored gamma unused)
        # and the beta it stores (zero unless someone wrote another value into it).
        input_bn_choices = input_bn_kind(sd_np["data_bn.bias"])
        report.skip(mapped["data_bn.weight"], "fix_gamma=True (Gluon BatchNorm scale=False): MXNet uses gamma = 1")
    spec = pick_spec([_gluon_spec(path, version, sd_np, choice) for choice in input_bn_choices], arch)
    if spec.input_bn == "affine_free":
        for key in ("data_bn.weight", "data_bn.bias"):
            report.skip(mapped.pop(key), "the affine-free input BN has no gamma or beta (beta is zero here)")
            sd_np.pop(key)
    elif spec.input_bn == "fixed_gamma":
        sd_np["data_bn.weight"] = np.ones_like(sd_np["data_bn.weight"])
        report.notes.append("the input BN has a non-zero beta: converted as a fixed-gamma BN that keeps it")
    name = check_arch(spec, arch, str(path), "names and shapes")
    report.arch = name
    name_or_closest(spec, report)
    state_dict = {}
    for target, array in sd_np.items():
        state_dict[target] = as_tensor(mapped.get(target, target), array, path)
        if target in mapped:
            report.map(target, mapped[target])
    check_shapes(path, spec, state_dict, name)
    modules: dict[str, list[str]] = {}
    for target in state_dict:
        modules.setdefault(target.rsplit(".", 1)[0], []).append(target)
    for module, targets in modules.items():
        sources = sorted({mapped[t].rsplit(".", 1)[0] if "." in mapped.get(t, "") else mapped.get(t, t) for t in targets})
        report.layers.append({"name": ", ".join(sources), "type": "gluon parameters", "targets": sorted(targets)})
    details = {"format": "gluon save_params (legacy)" if legacy_names else "gluon save_parameters", "gluon_version": version.upper()}
    meta = metadata(spec, name, [path], details, "gluon")
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


__all__ = ["convert_gluon_parameters"]
