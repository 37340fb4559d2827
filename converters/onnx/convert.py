"""ONNX ResNet -> (spec, state_dict, metadata): the library entry `convert_onnx(path)`.

The ONNX file is the source of truth: the converted model must compute what onnxruntime computes
on the file, whatever framework wrote it.  That decides the one place where an ONNX file and its
original framework disagree.  Gluon's ResNet V2 starts with a BatchNorm that has ``scale=False,
center=False`` (``fix_gamma=True``): MXNet ignores the stored gamma and beta.  MXNet's ONNX
exporter ignores fix_gamma and writes a plain BatchNormalization with the stored gamma and beta,
which onnxruntime then applies.  When those are 1 and 0 (an untouched Gluon model, and the ONNX zoo
files) this is exactly the reference's affine-free input BN; when they are not, the converter
folds them into that BN's statistics so that the result still equals onnxruntime (and records it
in the report), since the file, not MXNet, is what is being ported.  So the skeleton's input BN is a
plain learnt BN (`recognise.to_skeleton`); the folding itself is `converters.build`'s input-BN rule.

Two more kinds of file are ported with a note:

- Fused graphs (``torch.onnx.export`` in eval mode, either exporter; onnx-simplifier): every BN after
  a conv is folded into it.  The convs keep their biases (conv-bias roles in the spec) and the BNs
  become the identity (weight 1, bias 0, mean 0, var 1 - eps), so the port is exact; the original
  statistics are gone, so `recalibrate-bn` would start from none.
- The pre-2020 ONNX zoo v1 files: BatchNormalization ``spatial=0`` over per-channel (C,) parameters,
  which MXNet's old exporter wrote by mistake while MXNet computed per channel; read per channel.
  onnxruntime refuses such nodes, so the check runs the torch node evaluator (`verify.py`).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from resnet_port.checkpoints import CheckpointMetadata, SourceFile, SourceInfo
from resnet_port.checkpoints.weight_sources import listed_source, published_record, source_classes, source_preprocessing
from resnet_port.converters.common import Conversion, ConversionReport, family_name, finish_conversion, resize_and_crop
from resnet_port.converters.build import build
from resnet_port.converters.onnx.graph import OnnxGraph, read_graph
from resnet_port.converters.onnx.ops import BatchNormLayer, parse_node
from resnet_port.converters.onnx.recognise import folded_count, recognise, to_skeleton
from resnet_port.resnet_ref import ResNetSpec, arch_info, build_model, count_params


def _preprocessing(graph: OnnxGraph):
    """The ONNX zoo's: RGB in [0, 1], ImageNet mean/std, resize 256 / crop 224, scaled to a square
    input the graph fixes (a CIFAR-size input is not resized: crop = its size)."""
    prep = source_preprocessing("onnx-zoo")
    height, width = graph.input_shape[2], graph.input_shape[3]
    if isinstance(height, int) and height > 0 and height == width and height != prep.crop:
        prep.resize, prep.crop, _ = resize_and_crop((height, width))
    return prep


def _gluoncv_export(graph: OnnxGraph) -> bool:
    """Whether MXNet exported this graph from GluonCV's ResNetV1b family: its nodes keep the net's name
    prefix (``resnetv1b_conv0_fwd``, ``resnetv1d_layers1_...``).  Provenance only; the network itself is
    read from the graph."""
    return any(re.match(r"^resnetv1[bcdes]\d*_", node.name or "") for node in graph.nodes)


def _num_params(spec: ResNetSpec) -> int:
    with torch.device("meta"):  # shapes only: no memory, no init
        return count_params(build_model(spec))


def spatial_zero_nodes(graph: OnnxGraph) -> list[str]:
    """The labels of the BatchNormalization nodes with spatial=0 (read per channel)."""
    return [
        node.label
        for node in graph.nodes
        if node.op_type == "BatchNormalization" and getattr(parse_node(node, graph), "spatial", 1) == 0
    ]


def convert_onnx(path: str | Path) -> Conversion:
    """Read an ONNX ResNet (v1 or v2, any depth) and return its reference-spec conversion.

    The converted model takes exactly the tensor the graph takes (its preprocessing is metadata).
    Raises `ConversionError` naming the file and the first node that does not fit.
    """
    graph = read_graph(path)
    report = ConversionReport(source_framework="onnx", source_files=[str(graph.path)])
    found = recognise(graph)
    spec, state_dict, report = build(to_skeleton(graph, found), report)
    folded = folded_count(found)
    if folded:
        report.notes.append(
            f"{folded} BatchNorm(s) were folded into the conv before them by the exporter (the convs carry the "
            "folded biases): set to the identity (weight 1, bias 0, mean 0, var 1 - eps), exact on this file; the "
            "original statistics are not in the file, so recalibrate-bn starts from no statistics"
        )
    logits = graph.output_name
    if found.softmax is not None:
        logits = found.softmax.data[0]
        report.skip(found.softmax.node.label, f"Softmax after the logits: the converted model returns its input '{logits}'")
        report.notes.append(
            f"the graph ends with a Softmax ({found.softmax.node.label}); the converted model returns the logits "
            f"'{logits}' before it, and the check compares those"
        )
    per_channel = spatial_zero_nodes(graph)
    if per_channel:
        report.notes.append(
            f"{len(per_channel)} BatchNormalization node(s) carry spatial=0 with per-channel (C,) parameters (the "
            "pre-2020 ONNX zoo files; MXNet's old exporter set the flag by mistake, MXNet computed per channel): "
            f"read per channel, as MXNet ran them (first: {per_channel[0]})"
        )
    arch = report.arch
    gluoncv = _gluoncv_export(graph)
    if gluoncv:
        # MXNet's export of a GluonCV ResNetV1b-family net keeps GluonCV's block names: name it as GluonCV
        # does (resnet18_v1b, not the same network's resnet18_v1) and claim GluonCV's published rows
        spec, arch = family_name(spec, "gluoncv", arch)
        report.arch = arch
    # A graph that is one of GluonCV's CIFAR-10 nets (MXNet's export of cifar_resnetN_v1/_v2) takes GluonCV's
    # CIFAR transforms and predicts CIFAR-10's labels; any other graph is taken to follow the ONNX zoo.
    cifar10 = arch is not None and arch.startswith("cifar_resnet") and arch_info(arch).family == "gluoncv"
    class_order, classes = source_classes("gluoncv-cifar" if cifar10 else "onnx-zoo", spec.num_classes)
    metadata = CheckpointMetadata(
        spec=spec,
        arch=arch,
        preprocessing=source_preprocessing("gluoncv-cifar") if cifar10 else _preprocessing(graph),
        class_order=class_order,
        classes=classes,
        published=published_record(arch, listed_source(arch, "gluoncv" if gluoncv else "onnx-zoo")),
        source=SourceInfo(
            framework="onnx",
            files=[SourceFile.of(graph.path)] + [SourceFile.of(f) for f in graph.external_files],
            details={
                "opset": graph.opset,
                "ir_version": graph.ir_version,
                "producer": graph.producer,
                "input": graph.input_name,
                "input_shape": list(graph.input_shape),
                "output": logits,
                "graph_output": graph.output_name,
                "folded_batchnorms": folded,
                "spatial0_batchnorms": len(per_channel),
            },
        ),
        num_params=_num_params(spec),
    )
    return finish_conversion(spec, state_dict, metadata, report, str(graph.path))
