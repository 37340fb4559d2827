"""``arg:``/``aux:`` params with a symbol JSON (the classic ``resnet-N`` pairs, Gluon's ``export()``)
to a `Conversion`: the graph's roles are found by `recognise`, each node's parameters and
attributes (eps, fix_gamma, biases, pooling) read into a skeleton record by its operator function
(`ops`), and the spec decided by `converters.build`."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from resnet_port.converters.build import build
from resnet_port.converters.common import Conversion, ConversionReport, family_name, finish_conversion
from resnet_port.converters.mxnet import ops
from resnet_port.converters.mxnet.recognise import recognise, to_skeleton
from resnet_port.converters.mxnet.shared import check_arch, check_shapes, metadata, name_or_closest
from resnet_port.converters.mxnet.symbol import read_symbol_json, without_identities
from resnet_port.errors import ConversionError
from resnet_port.resnet_ref import arch_info


def refuse_variants(graph) -> None:
    """GluonCV's GroupNorm (*_gn) and squeeze-and-excitation (se_resnet*) nets, refused by name."""
    for node in graph.operators():
        if node.op == "GroupNorm":
            raise ConversionError(
                f"{graph.path}: {node.describe()}: a GroupNorm ResNet (GluonCV *_gn); the reference ResNet has BatchNorm "
                "only; not supported"
            )
        if node.op == "_contrib_AdaptiveAvgPooling2D" or (node.op == "Activation" and node.attr_str("act_type", "") == "sigmoid"):
            raise ConversionError(
                f"{graph.path}: {node.describe()}: a squeeze-and-excitation (SE) ResNet (GluonCV se_resnet*); its SE "
                "branches have no place in the reference ResNet; not supported"
            )


def convert_symbol(params_path: Path, params: dict[str, np.ndarray], symbol_path: Path, arch: str | None) -> Conversion:
    graph, passed = without_identities(read_symbol_json(symbol_path))
    refuse_variants(graph)
    ops.check_supported(graph)
    found = recognise(graph)
    report = ConversionReport("mxnet", [params_path.name, symbol_path.name])
    for node in passed:
        why = "a dtype cast: the converted model computes in float32" if node.op in ("Cast", "amp_cast") else "passes its input through at inference"
        report.skip(node.name, f"{node.op}: {why}")
    ctx = ops.OpContext(graph, params, report)
    placed = found.placed()
    records = {}
    for node in graph.operators():
        record = ops.convert_node(node, ctx)
        if record is not None and node.index not in placed:
            raise ConversionError(f"{graph.path}: {node.describe()} sits where no ResNet {node.op} belongs")
        records[node.index] = record
    unused = sorted(set(params) - ctx.used)
    if unused:
        more = f" (+{len(unused) - 5} more)" if len(unused) > 5 else ""
        raise ConversionError(
            f"{params_path}: tensor(s) {', '.join(unused[:5])}{more} are used by no layer of {symbol_path.name}; "
            "is this the symbol file that goes with these parameters?"
        )
    where = f"{params_path} with {symbol_path.name}"
    spec, state_dict, report = build(to_skeleton(found, records, where), report, arch)  # arch picks among equivalent readings
    name = check_arch(spec, arch, where, "symbol")
    gluoncv_export = any(re.match(r"^resnetv1[bcdes]_", n.name) for n in graph.operators())
    cifar_export = any(re.match(r"^cifarresnetv[12]\d*_", n.name) for n in graph.operators())
    if arch is None and gluoncv_export:
        spec, name = family_name(spec, "gluoncv", name)  # a GluonCV export: its own name (resnet18_v1b, ...)
    report.arch = name
    name_or_closest(spec, report)
    check_shapes(params_path, spec, state_dict, name)
    registered_family = arch_info(name).family if name else None
    family = registered_family or ("mxnet" if spec.input_bn == "fixed_gamma" else "gluon")
    if gluoncv_export:
        family = registered_family = "gluoncv"  # GluonCV's presets and published rows
    if cifar_export:
        family, registered_family = "gluoncv-cifar", "gluoncv"  # GluonCV's CIFAR-10 transforms
    if family not in ("mxnet", "gluon", "gluoncv", "gluoncv-cifar"):
        family = "gluon"
    details = {"format": "symbol + params", "symbol": symbol_path.name, "input": "0-255 RGB" if family == "mxnet" else "normalised RGB"}
    meta = metadata(spec, name, [params_path, symbol_path], details, family, report)
    if family == "mxnet":
        report.notes.append("takes 0-255 RGB: the data BN normalises inside the network, as in the MXNet graph")
    elif registered_family not in ("gluon", "gluoncv"):
        report.notes.append(
            "the graph does not say how its input was normalised: Gluon's convention (RGB 0-1, ImageNet mean/std) "
            "is recorded; check it against the model's source"
        )
    return finish_conversion(spec, state_dict, meta, report, where)


__all__ = ["convert_symbol"]
