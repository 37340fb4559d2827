"""ONNX ResNet -> (spec, state_dict, metadata): the library entry `convert_onnx(path)`.

The ONNX file is the source of truth: the converted model must compute what onnxruntime computes
on the file, whatever framework wrote it.  That decides the one place where an ONNX file and its
original framework disagree.  Gluon's ResNet V2 starts with a BatchNorm that has ``scale=False,
center=False`` (``fix_gamma=True``): MXNet ignores the stored gamma and beta.  MXNet's ONNX
exporter ignores fix_gamma and writes a plain BatchNormalization with the stored gamma and beta,
which onnxruntime then applies.  When those are 1 and 0 (an untouched Gluon model, and the ONNX zoo
files) this is exactly the reference's affine-free input BN; when they are not, the converter
folds them into that BN's statistics so that the result still equals onnxruntime (and records it
in the report), since the file, not MXNet, is what is being ported.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import torch

from resnet_port.checkpoints import CheckpointMetadata, SourceFile, SourceInfo
from resnet_port.checkpoints.weight_sources import listed_source, published_record, source_preprocessing
from resnet_port.converters.common import Conversion, ConversionReport, finish_conversion
from resnet_port.converters.onnx.graph import OnnxGraph, read_graph
from resnet_port.converters.onnx.ops import BatchNormLayer, ConvLayer
from resnet_port.converters.onnx.recognise import Block, Recognised, recognise
from resnet_port.errors import ConversionError
from resnet_port.resnet_ref import ResNetSpec, build_model, count_params, find_arch, get_spec, list_archs


class _Targets:
    """Collects the state_dict, the report and each BN's eps while layers are mapped."""

    def __init__(self, graph: OnnxGraph, report: ConversionReport) -> None:
        self.graph = graph
        self.report = report
        self.state: dict[str, torch.Tensor] = {}
        self.eps: dict[str, float] = {}
        self.biased_roles: set[str] = set()
        self.zero_biases: list[tuple[str, str, int]] = []  # (target conv, role, channels): zeros if the role is biased

    def put(self, target: str, array: np.ndarray, source: str) -> None:
        self.state[target] = torch.from_numpy(np.array(array, dtype=np.float32, copy=True))
        self.report.map(target, source)

    def conv(self, target: str, conv: ConvLayer, role: str) -> None:
        self.put(f"{target}.weight", conv.weight, conv.node.inputs[1])
        if conv.bias is not None:
            self.put(f"{target}.bias", conv.bias, conv.node.inputs[2])
            self.biased_roles.add(role)
        else:
            self.zero_biases.append((target, role, conv.out_channels))
        self.report.layers.append({"name": conv.node.label, "type": "Conv", "targets": [target]})

    def bn(self, target: str, bn: BatchNormLayer) -> None:
        for field, array, position in (
            ("weight", bn.scale, 1),
            ("bias", bn.bias, 2),
            ("running_mean", bn.mean, 3),
            ("running_var", bn.var, 4),
        ):
            self.put(f"{target}.{field}", array, bn.node.inputs[position])
        self.eps[target] = bn.eps
        self.report.layers.append(
            {"name": bn.node.label, "type": "BatchNormalization", "targets": [target], "eps": bn.eps}
        )

    def fill_zero_biases(self) -> None:
        """A role is biased if any conv of it is; its convs without one get zeros (exact)."""
        for target, role, channels in self.zero_biases:
            if role in self.biased_roles:
                self.state[f"{target}.bias"] = torch.zeros(channels)
                self.report.skip(
                    f"{target}.bias", "no bias in the file; zeros, since other convs of this role have one"
                )


def _input_bn(targets: _Targets, bn: BatchNormLayer) -> np.ndarray:
    """Map the input BN onto the reference's affine-free data_bn, folding any stored gamma/beta.

    onnxruntime computes  y = g * (x - m) / sqrt(v + e) + b.  An affine-free BN computes
    u = (x - m') / sqrt(v' + e').  With s = sqrt(v + e) / |g| and sign = sign(g):
    y = sign * u  when  sqrt(v' + e') = s  and  m' = m - sign * b * s.  eps stays e unless that
    would make a variance negative; then e' is lowered to the smallest s^2 and v' takes up the rest.
    The sign goes into the stem conv's input channels (its zero padding is unchanged by a sign), so
    the caller multiplies conv1's weights by the returned per-channel signs.  g = 0 (a constant
    channel) has no such form and is refused.
    """
    where = targets.graph.where(bn.node)
    g = bn.scale.astype(np.float64)
    b = bn.bias.astype(np.float64)
    m = bn.mean.astype(np.float64)
    v = bn.var.astype(np.float64)
    e = float(bn.eps)
    names = bn.node.inputs
    signs = np.ones_like(g)
    if np.all(g == 1.0) and np.all(b == 0.0):
        targets.put("data_bn.running_mean", m, names[3])
        targets.put("data_bn.running_var", v, names[4])
        targets.eps["data_bn"] = bn.eps
        targets.report.skip(names[1], "input BN gamma is all ones (the affine-free BN has none)")
        targets.report.skip(names[2], "input BN beta is all zeros (the affine-free BN has none)")
        targets.report.layers.append(
            {"name": bn.node.label, "type": "BatchNormalization", "targets": ["data_bn"], "eps": e}
        )
        targets.report.notes.append(
            "the input BatchNorm (Gluon V2's fix_gamma data BN, gamma 1, beta 0) is the reference's affine-free data_bn"
        )
        return signs
    if not np.all(np.isfinite(g) & (g != 0)) or not np.all(v + e > 0):
        channel = int(np.argmax(~(np.isfinite(g) & (g != 0)) | ~(v + e > 0)))
        raise ConversionError(
            f"{where}: the input BatchNorm has scale {g[channel]:g} and variance {v[channel]:g} on channel {channel}; "
            "a zero or non-finite scale (or variance + eps <= 0) has no affine-free form"
        )
    signs = np.sign(g)
    scale = np.sqrt(v + e) / np.abs(g)  # the new sqrt(v' + e')
    new_e = min(e, float(np.min(scale**2)))
    new_v = scale**2 - new_e
    new_m = m - signs * b * scale
    targets.put(
        "data_bn.running_mean",
        new_m,
        f"{names[3]} - sign({names[1]}) * {names[2]} * sqrt({names[4]} + eps) / |{names[1]}|",
    )
    targets.put("data_bn.running_var", new_v, f"({names[4]} + eps) / {names[1]}^2 - eps'")
    targets.eps["data_bn"] = new_e
    flipped = (
        f"; channels {np.flatnonzero(signs < 0).tolist()} have a negative gamma, folded into conv1's weights"
        if np.any(signs < 0)
        else ""
    )
    targets.report.notes.append(
        f"input BatchNorm {bn.node.label}: gamma/beta are not 1/0 (MXNet's exporter writes them although "
        "Gluon's fix_gamma ignores them); folded into the affine-free data_bn statistics so that the "
        f"port equals onnxruntime on this file, which differs from MXNet's own output{flipped}"
    )
    targets.report.layers.append(
        {"name": bn.node.label, "type": "BatchNormalization", "targets": ["data_bn"], "eps": new_e, "folded": True}
    )
    return signs


def _stages(graph: OnnxGraph, blocks: list[Block]) -> list[list[Block]]:
    """Split blocks where the stride or the width changes: that is where the reference starts a stage."""
    stages: list[list[Block]] = []
    for block in blocks:
        if not stages or block.stride != 1 or block.out_channels != stages[-1][-1].out_channels:
            stages.append([])
        stages[-1].append(block)
    return stages


def _fail(graph: OnnxGraph, block: Block, message: str) -> ConversionError:
    return ConversionError(f"{graph.where(block.first)}: not a ResNet the reference can hold: {message}")


def _block_facts(graph: OnnxGraph, stages: list[list[Block]]) -> dict:
    """The spec fields that the blocks decide, each checked to hold for every block."""
    first = stages[0][0]
    kind, residual = first.kind, first.residual
    expansion = 4 if kind == "bottleneck" else 1
    widths, stride_in, base_width = [], None, None
    needed_only = every_first = True
    for s, stage in enumerate(stages):
        out = stage[0].out_channels
        if out % expansion:
            raise _fail(graph, stage[0], f"{out} output channels is not a multiple of the bottleneck expansion 4")
        planes = out // expansion
        widths.append(planes)
        for b, block in enumerate(stage):
            if block.kind != kind:
                raise _fail(graph, block, f"a {block.kind} block in a net of {kind} blocks")
            stride = 2 if s > 0 and b == 0 else 1
            if block.stride != stride:
                raise _fail(
                    graph,
                    block,
                    f"block {b} of stage {s + 1} has stride {block.stride}, the reference puts {stride} there",
                )
            kernels = (1, 3, 1) if kind == "bottleneck" else (3, 3)
            strided = [i for i, conv in enumerate(block.convs) if conv.stride[0] != 1]
            if len(strided) > 1:
                raise _fail(graph, block, "more than one strided conv in a block")
            if strided and kind == "bottleneck":
                where = "1x1" if strided[0] == 0 else "3x3" if strided[0] == 1 else None
                if where is None or stride_in not in (None, where):
                    raise _fail(graph, block, f"the stride sits in conv{strided[0] + 1}, unlike the other blocks")
                stride_in = where
            if strided and kind == "basic" and strided[0] != 0:
                raise _fail(graph, block, "a basic block strides its second conv; the reference strides the first")
            for i, (conv, k) in enumerate(zip(block.convs, kernels)):
                _check_block_conv(graph, block, conv, k, f"conv{i + 1}")
            if kind == "bottleneck":
                inner = block.convs[0].out_channels
                width = inner * 64 / planes
                if width != int(width) or base_width not in (None, int(width)):
                    raise _fail(graph, block, f"bottleneck inner width {inner} does not follow the other blocks")
                base_width = int(width)
            needs = block.stride != 1 or block.in_channels != block.out_channels
            has = block.shortcut_conv is not None
            if has:
                _check_block_conv(graph, block, block.shortcut_conv, 1, "the projection shortcut")
                if block.shortcut_conv.stride[0] != block.stride:
                    raise _fail(graph, block, "the projection's stride differs from the block's")
            if needs and not has:
                raise _fail(graph, block, "changes shape but has no projection shortcut")
            needed_only &= has == needs
            every_first &= has == (b == 0)
    if needed_only:
        projection = "when_needed"
    elif every_first:
        projection = "first_of_stage"
    else:
        block = next(b for st in stages for i, b in enumerate(st) if (b.shortcut_conv is not None) != (i == 0))
        raise _fail(graph, block, "a projection shortcut where neither 'when needed' nor 'first of stage' puts one")
    return {
        "block": kind,
        "residual": residual,
        "layers": tuple(len(stage) for stage in stages),
        "widths": tuple(widths),
        "stride_in": stride_in or "3x3",
        "base_width": base_width or 64,
        "projection": projection,
    }


def _check_block_conv(graph: OnnxGraph, block: Block, conv: ConvLayer, kernel: int, what: str) -> None:
    pad = kernel // 2
    if conv.kernel != (kernel, kernel) or conv.pads != (pad,) * 4 or conv.dilation != (1, 1) or conv.group != 1:
        raise ConversionError(
            f"{graph.where(conv.node)}: not a ResNet the reference can hold: {what} of a {block.kind} block should be "
            f"{kernel}x{kernel} pad {pad}, ungrouped and undilated; found {conv.kernel[0]}x{conv.kernel[1]} "
            f"pads {list(conv.pads)}, dilation {conv.dilation}, group {conv.group}"
        )
    if conv.stride[0] != conv.stride[1]:
        raise ConversionError(f"{graph.where(conv.node)}: unequal strides {conv.stride}")


def _map_blocks(targets: _Targets, stages: list[list[Block]]) -> None:
    for s, stage in enumerate(stages, 1):
        for b, block in enumerate(stage):
            prefix = f"layer{s}.{b}"
            for i, conv in enumerate(block.convs, 1):
                targets.conv(f"{prefix}.conv{i}", conv, f"conv{i}")
            # v1: bnK follows convK.  v2: bn1 is the pre-activation, bnK (K > 1) follows conv(K-1).
            for i, bn in enumerate(block.bns, 1):
                targets.bn(f"{prefix}.bn{i}", bn)
            if block.shortcut_conv is not None:
                targets.conv(f"{prefix}.downsample.0", block.shortcut_conv, "downsample")
            if block.shortcut_bn is not None:
                targets.bn(f"{prefix}.downsample.1", block.shortcut_bn)


def _eps_fields(eps: dict[str, float]) -> dict:
    """The most common eps becomes ``bn_eps``; every BN that differs is named in the overrides."""
    common = Counter(eps.values()).most_common(1)[0][0]
    return {
        "bn_eps": common,
        "bn_eps_overrides": tuple((name, value) for name, value in eps.items() if value != common),
    }


def _head(graph: OnnxGraph, found: Recognised) -> dict:
    pool = found.head_pool
    if pool.kernel is None:
        return {"head_pool": "global"}
    if pool.kernel[0] != pool.kernel[1] or pool.stride != (1, 1) or pool.pads != (0, 0, 0, 0):
        raise ConversionError(
            f"{graph.where(pool.node)}: not a ResNet the reference can hold: the head's average pool should be "
            f"global, or square with stride 1 and no padding; found kernel {pool.kernel}, stride {pool.stride}, pads {list(pool.pads)}"
        )
    return {"head_pool": "fixed", "head_pool_size": pool.kernel[0]}


def _preprocessing(graph: OnnxGraph):
    """The ONNX zoo's: RGB in [0, 1], ImageNet mean/std, resize 256 / crop 224 (scaled to the input)."""
    prep = source_preprocessing("onnx-zoo")
    height, width = graph.input_shape[2], graph.input_shape[3]
    if isinstance(height, int) and height > 0 and height == width and height != prep.crop:
        prep.crop = height
        prep.resize = int(round(height * 256 / 224))
    return prep


def _named(spec: ResNetSpec) -> tuple[str | None, ResNetSpec]:
    """The registered name of ``spec``, Gluon's names first (the ONNX zoo files are Gluon exports).

    Where the stride sits means nothing in basic blocks, but the registry states it (Gluon's V1
    says "1x1", torchvision "3x3"); both readings are tried so that resnet18_v1 is named as such.
    """
    candidates = [spec] if spec.block == "bottleneck" else [spec.replace(stride_in=s) for s in ("1x1", "3x3")]
    for name in list_archs("gluon"):
        for candidate in candidates:
            if get_spec(name, spec.num_classes) == candidate:
                return name, candidate
    for candidate in candidates:
        name = find_arch(candidate)
        if name is not None:
            return name, candidate
    return None, spec


def _num_params(spec: ResNetSpec) -> int:
    with torch.device("meta"):  # shapes only: no memory, no init
        return count_params(build_model(spec))


def convert_onnx(path: str | Path) -> Conversion:
    """Read an ONNX ResNet (v1 or v2, any depth) and return its reference-spec conversion.

    The converted model takes exactly the tensor the graph takes (its preprocessing is metadata).
    Raises `ConversionError` naming the file and the first node that does not fit.
    """
    graph = read_graph(path)
    found = recognise(graph)
    report = ConversionReport(source_framework="onnx", source_files=[str(graph.path)])
    targets = _Targets(graph, report)

    if found.input_bn is not None:
        signs = _input_bn(targets, found.input_bn)
    targets.conv("conv1", found.stem_conv, "stem")
    if found.input_bn is not None and np.any(signs < 0):
        # y = sign * u per input channel: conv1(y) is conv1 with those input channels negated, applied to u.
        sign = torch.from_numpy(signs.astype(np.float32)).view(1, -1, 1, 1)
        targets.state["conv1.weight"] = targets.state["conv1.weight"] * sign
        targets.report.mapped["conv1.weight"] += " * sign(input BN gamma) per input channel"
    targets.bn("bn1", found.stem_bn)
    stages = _stages(graph, found.blocks)
    facts = _block_facts(graph, stages)
    _map_blocks(targets, stages)
    if found.final_bn is not None:
        targets.bn("final_bn", found.final_bn)
    linear = found.linear
    if linear.weight.shape[1] != stages[-1][-1].out_channels:
        raise ConversionError(
            f"{graph.where(linear.node)}: the classifier reads {linear.weight.shape[1]} features, "
            f"the last block gives {stages[-1][-1].out_channels}"
        )
    targets.put("fc.weight", linear.weight, linear.weight_source)
    bias, bias_source = linear.bias, linear.bias_source
    if found.bias_add is not None:
        bias = found.bias_add.constant.reshape(-1)
        bias_source = next(n for n in found.bias_add.node.inputs if n in graph.initializers)
        if bias.shape[0] != linear.weight.shape[0]:
            raise ConversionError(
                f"{graph.where(found.bias_add.node)}: bias of {bias.shape[0]} values for {linear.weight.shape[0]} classes"
            )
    if bias is None:
        bias, bias_source = np.zeros(linear.weight.shape[0], np.float32), "(none: zeros)"
        report.skip("fc.bias", "the classifier has no bias in the file; zeros")
    targets.put("fc.bias", bias, bias_source)
    report.layers.append({"name": linear.node.label, "type": linear.node.op_type, "targets": ["fc"]})
    targets.fill_zero_biases()

    spec = ResNetSpec(
        **facts,
        stem="7x7" if found.stem_conv.kernel == (7, 7) else "3x3",
        stem_width=found.stem_conv.out_channels,
        stem_pool=found.stem_pool,
        input_bn="affine_free" if found.input_bn is not None else "none",
        conv_bias=tuple(sorted(targets.biased_roles)),
        num_classes=int(linear.weight.shape[0]),
        in_chans=found.stem_conv.in_channels,
        **_eps_fields(targets.eps),
        **_head(graph, found),
    )
    arch, spec = _named(spec)
    report.arch = arch
    metadata = CheckpointMetadata(
        spec=spec,
        arch=arch,
        preprocessing=_preprocessing(graph),
        published=published_record(arch, listed_source(arch, "onnx-zoo")),
        source=SourceInfo(
            framework="onnx",
            files=[SourceFile.of(graph.path)],
            details={
                "opset": graph.opset,
                "ir_version": graph.ir_version,
                "producer": graph.producer,
                "input": graph.input_name,
                "input_shape": list(graph.input_shape),
                "output": graph.output_name,
            },
        ),
        num_params=_num_params(spec),
    )
    return finish_conversion(spec, targets.state, metadata, report, str(graph.path))
