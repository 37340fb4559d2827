"""convert_mxnet: an MXNet params file (and its symbol, if any) to a `Conversion`.

Two sources:

- Gluon ``save_parameters`` files (structural names, ``features.4.0.body.0.weight``): renamed with the
  tables of `gluon_names`; the architecture is read from the names and shapes, and the conventions
  the names cannot show come from Gluon's model zoo code: V1 bottlenecks stride their first 1x1, every
  BatchNorm has eps 1e-5, V2's input BatchNorm runs with ``fix_gamma=True`` and a beta that Gluon never
  trains (zero: the reference's affine-free input BN).
- ``arg:``/``aux:`` files with a symbol JSON (the classic ``resnet-N`` pairs, Gluon's ``export()``):
  the architecture, eps, fix_gamma, biases and pooling are read from the graph (`recognise`), and
  each node's parameters taken by its operator function (`ops`).

The converted model takes exactly what the source network takes: normalised RGB for Gluon, 0-255 RGB
for the classic symbolic models (their data BN normalises inside); the metadata says which.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from checkpoints import CheckpointMetadata, SourceFile, SourceInfo, preset_preprocessing
from converters.common import Conversion, ConversionReport, finish_conversion
from converters.mxnet import gluon_names, ops
from converters.mxnet.ndarray import read_ndarray_file
from converters.mxnet.recognise import Recognised, recognise
from converters.mxnet.symbol import read_symbol_json
from resnet_port.errors import ConversionError, SpecError
from resnet_ref import ResNetSpec, arch_info, find_arch, get_spec, list_archs, state_dict_problems

GLUON_BN_EPS = 1e-5  # gluon.nn.BatchNorm's epsilon, which the model zoo keeps everywhere
FLOAT_KINDS = "f"


# -- shared -------------------------------------------------------------------------------------------
def _as_tensor(name: str, array: np.ndarray, path: Path) -> torch.Tensor:
    if array.dtype.kind not in FLOAT_KINDS:
        raise ConversionError(f"{path}: tensor {name!r} has dtype {array.dtype}; expected a floating-point type")
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def spec_differences(spec: ResNetSpec, other: ResNetSpec) -> list[str]:
    """The fields in which ``other`` differs from ``spec`` (the class count aside)."""
    mine, theirs = spec.to_dict(), other.replace(num_classes=spec.num_classes).to_dict()
    return [key for key in mine if mine[key] != theirs[key]]


def closest_archs(spec: ResNetSpec, count: int = 3) -> list[tuple[str, list[str]]]:
    """The registered archs nearest to an unregistered spec, with the fields that differ."""
    ranked = sorted((len(d), name, d) for name in list_archs() if (d := spec_differences(spec, get_spec(name))))
    return [(name, diffs) for _, name, diffs in ranked[:count]]


def _name_or_closest(spec: ResNetSpec, report: ConversionReport) -> None:
    """When no registered arch is this network, say which come nearest and how they differ."""
    if find_arch(spec) is None:
        near = "; ".join(f"{name} (differs in {', '.join(diffs)})" for name, diffs in closest_archs(spec))
        report.notes.append(f"no registered arch has this layout; the closest: {near}")


def _check_arch(spec: ResNetSpec, arch: str | None, where: str, found_by: str) -> str | None:
    """The registered name of ``spec``; with ``arch`` given, refuse it unless it is the same network."""
    found = find_arch(spec)
    if arch is None:
        return found
    wanted = get_spec(arch, spec.num_classes)
    if wanted != spec:
        wanted_d, spec_d = wanted.to_dict(), spec.to_dict()
        diffs = [f"{k}: {spec_d[k]!r} in the file, {wanted_d[k]!r} in {arch}" for k in spec_d if spec_d[k] != wanted_d[k]]
        raise ConversionError(
            f"{where}: the {found_by} describe{'s' if found_by == 'symbol' else ''} {found or 'an unregistered ResNet'}, "
            f"not --arch {arch} ({'; '.join(diffs[:4])})"
        )
    return arch


def _metadata(spec: ResNetSpec, arch: str | None, files: list[Path], details: dict, family: str) -> CheckpointMetadata:
    return CheckpointMetadata(
        spec=spec,
        arch=arch,
        preprocessing=preset_preprocessing(family),
        source=SourceInfo(framework="mxnet", files=[SourceFile.of(p) for p in files], details=details),
    )


def _conv_bias_roles(sd: dict[str, np.ndarray]) -> tuple[str, ...]:
    """The spec's conv_bias roles of the convs that carry a bias in the renamed tensors."""
    roles = set()
    for key in sd:
        if key == "conv1.bias":
            roles.add("stem")
        elif match := re.match(r"^layer\d+\.\d+\.(conv[123]|downsample\.0)\.bias$", key):
            roles.add("downsample" if match.group(1) == "downsample.0" else match.group(1))
    return tuple(sorted(roles))


def _input_bn_kind(beta: np.ndarray) -> list[str]:
    """An input BN with fix_gamma: gamma is 1; an all-zero beta makes it the affine-free BN as well."""
    return ["affine_free", "fixed_gamma"] if not np.any(beta) else ["fixed_gamma"]


def _pick_spec(candidates: list[ResNetSpec], arch: str | None) -> ResNetSpec:
    """Of equivalent readings of one network, the one --arch names, else a registered one, else the first."""
    for spec in candidates:
        if arch is not None and arch in list_archs() and get_spec(arch, spec.num_classes) == spec:
            return spec
    for spec in candidates:
        if find_arch(spec) is not None:
            return spec
    return candidates[0]


# -- Gluon save_parameters --------------------------------------------------------------------------
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
            conv_bias=_conv_bias_roles(sd),
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
        input_bn_choices = _input_bn_kind(sd_np["data_bn.bias"])
        report.skip(mapped["data_bn.weight"], "fix_gamma=True (Gluon BatchNorm scale=False): MXNet uses gamma = 1")
    spec = _pick_spec([_gluon_spec(path, version, sd_np, choice) for choice in input_bn_choices], arch)
    if spec.input_bn == "affine_free":
        for key in ("data_bn.weight", "data_bn.bias"):
            report.skip(mapped.pop(key), "the affine-free input BN has no gamma or beta (beta is zero here)")
            sd_np.pop(key)
    elif spec.input_bn == "fixed_gamma":
        sd_np["data_bn.weight"] = np.ones_like(sd_np["data_bn.weight"])
        report.notes.append("the input BN has a non-zero beta: converted as a fixed-gamma BN that keeps it")
    name = _check_arch(spec, arch, str(path), "names and shapes")
    report.arch = name
    _name_or_closest(spec, report)
    state_dict = {}
    for target, array in sd_np.items():
        state_dict[target] = _as_tensor(mapped.get(target, target), array, path)
        if target in mapped:
            report.map(target, mapped[target])
    _check_shapes(path, spec, state_dict, name)
    details = {"format": "gluon save_params (legacy)" if legacy_names else "gluon save_parameters", "gluon_version": version.upper()}
    meta = _metadata(spec, name, [path], details, "gluon")
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


def _check_shapes(path: Path, spec: ResNetSpec, state_dict: dict[str, torch.Tensor], name: str | None) -> None:
    problems = state_dict_problems(spec, state_dict)
    if problems:
        raise ConversionError(f"{path}: the tensors do not fit {name or 'the ResNet their names describe'}: {problems}")


# -- symbol + arg:/aux: params ------------------------------------------------------------------------
def _symbol_spec(
    found: Recognised, sd: dict[str, np.ndarray], eps: dict[str, float], input_bn: str, projection: str, path: Path
) -> ResNetSpec:
    """The spec of the recognised graph.  ``projection`` is "either" when every stage's first unit
    projects (a bottleneck net always must): "first_of_stage" and "when_needed" then build the same
    network, and the caller tries both to find the registered name."""
    units, layers = found.units, found.layers
    block = units[0].block
    first_units, index = [], 0
    for count in layers:
        first_units.append(index)
        index += count
    conv1_width = [sd[f"layer{s + 1}.0.conv1.weight"].shape[0] for s in range(len(layers))]
    if block == "bottleneck":
        planes = [sd[f"layer{s + 1}.0.conv3.weight"].shape[0] // 4 for s in range(len(layers))]
        bases = {64 * w // p for w, p in zip(conv1_width, planes)}
        if len(bases) != 1:
            raise ConversionError(f"{path}: bottleneck widths {conv1_width} and outputs {planes} disagree between stages")
        widths, base = planes, bases.pop()
    else:
        widths, base = conv1_width, 64
    first = units[0]
    stride_at = {u.stride_at for u in units if u.stride_at}
    if len(stride_at) > 1:
        raise ConversionError(f"{path}: units stride in different convs ({', '.join(sorted(stride_at))}); expected one place")
    if block == "bottleneck":
        stride_in = "1x1" if stride_at == {"conv1"} else "3x3"
    else:  # basic blocks stride their first conv either way: follow the registry's convention
        stride_in = "1x1" if first.residual == "v1" else "3x3"
    # A projection on a stage's first unit even where an identity would fit: MXNet's classic layout.
    stem_width = sd["conv1.weight"].shape[0]
    out1 = widths[0] * (4 if block == "bottleneck" else 1)
    if first.shortcut and first.stride == 1 and stem_width == out1:
        projection = "first_of_stage"
    elif projection == "either":
        projection = "first_of_stage"
    else:
        projection = "when_needed"
    counts = Counter(eps.values())
    bn_eps = max(counts, key=lambda value: (counts[value], -value))
    overrides = tuple((name, value) for name, value in eps.items() if value != bn_eps and not (name == "data_bn" and input_bn == "none"))
    try:
        return ResNetSpec(
            block=block,
            layers=layers,
            residual=first.residual,
            stride_in=stride_in,
            stem=found.stem_kind,
            stem_width=stem_width,
            stem_pool=found.stem_pool,
            projection=projection,
            widths=tuple(widths),
            base_width=base,
            input_bn=input_bn,
            conv_bias=_conv_bias_roles(sd),
            bn_eps=bn_eps,
            bn_eps_overrides=overrides,
            head_pool=found.head_pool,
            head_pool_size=found.head_pool_size,
            num_classes=sd["fc.weight"].shape[0],
            in_chans=sd["conv1.weight"].shape[1],
        )
    except SpecError as exc:
        raise ConversionError(f"{path}: the graph describes no valid ResNet: {exc}") from exc


def convert_symbol(params_path: Path, params: dict[str, np.ndarray], symbol_path: Path, arch: str | None) -> Conversion:
    graph = read_symbol_json(symbol_path)
    ops.check_supported(graph)
    found = recognise(graph)
    report = ConversionReport("mxnet", [params_path.name, symbol_path.name])
    ctx = ops.OpContext(graph, params, report)
    sd_np: dict[str, np.ndarray] = {}
    for node, target in found.placements:
        sd_np.update(ops.convert_node(node, target, ctx))
    unused = sorted(set(params) - ctx.used)
    if unused:
        more = f" (+{len(unused) - 5} more)" if len(unused) > 5 else ""
        raise ConversionError(
            f"{params_path}: tensor(s) {', '.join(unused[:5])}{more} are used by no layer of {symbol_path.name}; "
            "is this the symbol file that goes with these parameters?"
        )
    input_bn_choices = ["none"]
    if found.input_bn is not None:
        if "data_bn" not in ctx.fixed_gamma:
            raise ConversionError(
                f"{symbol_path}: {found.input_bn.describe()} is an input BatchNorm with fix_gamma=False (a learnt "
                "gamma); the reference has input BNs with gamma fixed at 1 only"
            )
        input_bn_choices = _input_bn_kind(sd_np["data_bn.bias"])
    stage_starts = [sum(found.layers[:i]) for i in range(len(found.layers))]
    all_project = all(found.units[i].shortcut for i in stage_starts)
    projections = ["when_needed", "either"] if all_project else ["when_needed"]
    candidates = [_symbol_spec(found, sd_np, ctx.bn_eps, c, p, symbol_path) for c in input_bn_choices for p in projections]
    spec = _pick_spec(candidates, arch)
    if spec.input_bn == "affine_free":
        for key in ("data_bn.weight", "data_bn.bias"):
            sd_np.pop(key)
            report.skip(report.mapped.pop(key), "the affine-free input BN has no gamma or beta (beta is zero here)")
    where = f"{params_path} with {symbol_path.name}"
    name = _check_arch(spec, arch, where, "symbol")
    report.arch = name
    _name_or_closest(spec, report)
    state_dict = {k: _as_tensor(report.mapped.get(k, k), v, params_path) for k, v in sd_np.items()}
    _check_shapes(params_path, spec, state_dict, name)
    family = arch_info(name).family if name else ("mxnet" if spec.input_bn == "fixed_gamma" else "gluon")
    if family not in ("mxnet", "gluon"):
        family = "gluon"
    details = {"format": "symbol + params", "symbol": symbol_path.name, "input": "0-255 RGB" if family == "mxnet" else "normalised RGB"}
    meta = _metadata(spec, name, [params_path, symbol_path], details, family)
    if family == "mxnet":
        report.notes.append("takes 0-255 RGB: the data BN normalises inside the network, as in the MXNet graph")
    return finish_conversion(spec, state_dict, meta, report, where)


# -- entry point --------------------------------------------------------------------------------------
def default_symbol_for(params_path: Path) -> Path | None:
    """``prefix-0000.params`` -> ``prefix-symbol.json`` when that file exists (the save_checkpoint pair)."""
    match = re.match(r"^(?P<prefix>.*)-\d{4}\.params$", params_path.name)
    if match:
        candidate = params_path.with_name(f"{match.group('prefix')}-symbol.json")
        if candidate.is_file():
            return candidate
    return None


def convert_mxnet(params_path: str | Path, arch: str | None = None, symbol: str | Path | None = None) -> Conversion:
    """Convert an MXNet params file (Gluon ``save_parameters``, or ``arg:``/``aux:`` with a symbol).

    ``arch`` names the expected architecture (refused if the file is another); without it the
    architecture is read from the file.  ``symbol`` is needed for ``arg:``/``aux:`` files; when it is
    not given, ``prefix-symbol.json`` beside ``prefix-NNNN.params`` is used if present.
    """
    params_path = Path(params_path)
    if arch is not None and arch not in list_archs():
        arch_info(arch)  # raises with close names
    params = read_ndarray_file(params_path)
    if isinstance(params, list):
        raise ConversionError(f"{params_path}: holds {len(params)} unnamed arrays; expected named parameters")
    if not params:
        raise ConversionError(f"{params_path}: holds no parameters")
    prefixed = [n for n in params if n.startswith(("arg:", "aux:"))]
    if symbol is None and prefixed:
        symbol = default_symbol_for(params_path)
        if symbol is None:
            raise ConversionError(
                f"{params_path}: holds arg:/aux: names (an export() or save_checkpoint file); pass its symbol JSON "
                "with --symbol (e.g. resnet-50-symbol.json)"
            )
    if symbol is not None:
        return convert_symbol(params_path, params, Path(symbol), arch)
    if gluon_names.is_legacy(list(params)):
        try:
            structural, legacy_names = gluon_names.legacy_to_structural(params)
        except ValueError as exc:
            raise ConversionError(f"{params_path}: the save_params names do not add up to a Gluon ResNet: {exc}") from exc
        return convert_gluon_parameters(params_path, structural, arch, legacy_names)
    return convert_gluon_parameters(params_path, params, arch)


__all__ = ["closest_archs", "convert_mxnet", "convert_gluon_parameters", "convert_symbol", "default_symbol_for"]
