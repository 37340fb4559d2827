"""``arg:``/``aux:`` params with a symbol JSON (the classic ``resnet-N`` pairs, Gluon's ``export()``)
to a `Conversion`: the architecture, eps, fix_gamma, biases and pooling are read from the graph
(`recognise`), and each node's parameters taken by its operator function (`ops`)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from resnet_port.converters.common import Conversion, ConversionReport, finish_conversion
from resnet_port.converters.mxnet import ops
from resnet_port.converters.mxnet.recognise import Recognised, recognise
from resnet_port.converters.mxnet.shared import as_tensor, check_arch, check_shapes, conv_bias_roles, input_bn_kind, metadata, name_or_closest, pick_spec
from resnet_port.converters.mxnet.symbol import read_symbol_json
from resnet_port.errors import ConversionError, SpecError
from resnet_port.resnet_ref import ResNetSpec, arch_info


def _symbol_spec(
    found: Recognised, sd: dict[str, np.ndarray], eps: dict[str, float], input_bn: str, projection: str, path: Path
) -> ResNetSpec:
    """The spec of the recognised graph.  ``projection`` is "either" when every stage's first unit
    projects (a bottleneck net always must): "first_of_stage" and "when_needed" then build the same
    network, and the caller tries both to find the registered name."""
    units, layers = found.units, found.layers
    block = units[0].block
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
    overrides = tuple((name, value) for name, value in eps.items() if value != bn_eps)
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
            conv_bias=conv_bias_roles(sd),
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
        input_bn_choices = input_bn_kind(sd_np["data_bn.bias"])
    stage_starts = [sum(found.layers[:i]) for i in range(len(found.layers))]
    all_project = all(found.units[i].shortcut for i in stage_starts)
    projections = ["when_needed", "either"] if all_project else ["when_needed"]
    candidates = [_symbol_spec(found, sd_np, ctx.bn_eps, c, p, symbol_path) for c in input_bn_choices for p in projections]
    spec = pick_spec(candidates, arch)
    if spec.input_bn == "affine_free":
        for key in ("data_bn.weight", "data_bn.bias"):
            sd_np.pop(key)
            report.skip(report.mapped.pop(key), "the affine-free input BN has no gamma or beta (beta is zero here)")
    where = f"{params_path} with {symbol_path.name}"
    name = check_arch(spec, arch, where, "symbol")
    report.arch = name
    name_or_closest(spec, report)
    state_dict = {k: as_tensor(report.mapped.get(k, k), v, params_path) for k, v in sd_np.items()}
    check_shapes(params_path, spec, state_dict, name)
    registered_family = arch_info(name).family if name else None
    family = registered_family or ("mxnet" if spec.input_bn == "fixed_gamma" else "gluon")
    if family not in ("mxnet", "gluon"):
        family = "gluon"
    details = {"format": "symbol + params", "symbol": symbol_path.name, "input": "0-255 RGB" if family == "mxnet" else "normalised RGB"}
    meta = metadata(spec, name, [params_path, symbol_path], details, family)
    if family == "mxnet":
        report.notes.append("takes 0-255 RGB: the data BN normalises inside the network, as in the MXNet graph")
    elif registered_family != "gluon":
        report.notes.append(
            "the graph does not say how its input was normalised: Gluon's convention (RGB 0-1, ImageNet mean/std) "
            "is recorded; check it against the model's source"
        )
    return finish_conversion(spec, state_dict, meta, report, where)


__all__ = ["convert_symbol"]
