"""`convert_caffe`: a caffemodel (+ prototxt, + mean file) -> a `Conversion` onto the reference ResNet.

By default the converted model takes exactly what Caffe's ``data`` blob takes: BGR, 0-255, minus
the mean.  The metadata records that preprocessing (the mean image from ``--mean``, or per-channel
``--mean-values``; resize 256, crop 224, as the release evaluates).  ``rgb=True`` reverses conv1's
input channels instead (exact), so the model takes RGB, and the recorded mean follows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from resnet_port.checkpoints import CheckpointMetadata, Preprocessing, SourceFile, SourceInfo
from resnet_port.checkpoints.weight_sources import listed_source, published_record
from resnet_port.converters.caffe.binaryproto import read_binaryproto
from resnet_port.converters.caffe.caffemodel import CaffeModel, read_caffemodel
from resnet_port.converters.caffe.errors import CaffeFormatError
from resnet_port.converters.build import build
from resnet_port.converters.caffe.graph import walk
from resnet_port.converters.caffe.recognise import blob_modules, consumed, to_skeleton
from resnet_port.converters.caffe.layers import Node, blob_id, read_layer
from resnet_port.converters.caffe.netstate import DATA_TYPES, LOSS_TYPES, in_test_phase
from resnet_port.converters.caffe.prototxt import read_prototxt
from resnet_port.converters.common import Conversion, ConversionReport, finish_conversion
from resnet_port.errors import ConversionError

# Layer types whose blobs are weights; a prototxt layer of these types must find them in the model.
WEIGHTED_TYPES = ("Convolution", "BatchNorm", "Scale", "InnerProduct")
# The parameter messages compared when both a prototxt and the caffemodel's own definition exist.
_COMPARED_PARAMS = (
    "convolution_param", "batch_norm_param", "scale_param", "pooling_param", "eltwise_param",
    "inner_product_param", "relu_param",
)


def check_agreement(prototxt_net: Any, model_net: Any, prototxt: Path, model: Path) -> list[str]:
    """Raise if the prototxt and the caffemodel's own definition describe different nets.

    Returns the caffemodel layers the prototxt does not use (Caffe ignores those too).
    """
    by_name = {layer.name: layer for layer in model_net.layer}
    # Caffe inserts Split layers where a blob feeds several layers, and Net::ToProto saves them:
    # "pool1" reaches res2a_branch1 as "pool1_pool1_0_split_0".  Compare through those aliases.
    alias: dict[str, str] = {}
    for layer in model_net.layer:
        if layer.type == "Split" and len(layer.bottom) == 1:
            for top in layer.top:
                alias[top] = alias.get(layer.bottom[0], layer.bottom[0])
    for layer in prototxt_net.layer:
        if not in_test_phase(layer) or layer.type in DATA_TYPES or layer.type in LOSS_TYPES:
            continue
        other = by_name.get(layer.name)
        if other is None:
            if layer.type in WEIGHTED_TYPES:
                raise ConversionError(f"{model}: has no layer {layer.name!r} ({layer.type}), which {prototxt} defines: missing layer")
            continue
        if other.type != layer.type:
            raise ConversionError(f"{prototxt} and {model} disagree on layer {layer.name!r}: type {layer.type!r} vs {other.type!r}")
        for what in ("bottom", "top"):
            mine, theirs = list(getattr(layer, what)), [alias.get(b, b) for b in getattr(other, what)]
            if mine != theirs:
                raise ConversionError(f"{prototxt} and {model} disagree on layer {layer.name!r}: {what} {mine} vs {theirs}")
        for param in _COMPARED_PARAMS:
            mine, theirs = getattr(layer, param), getattr(other, param)
            if mine != theirs:
                text_a = " ".join(str(mine).split()) or "(unset)"
                text_b = " ".join(str(theirs).split()) or "(unset)"
                raise ConversionError(
                    f"{prototxt} and {model} disagree on layer {layer.name!r}: {param} {{{text_a}}} vs {{{text_b}}}"
                )
    used = {layer.name for layer in prototxt_net.layer}
    return [name for name, layer in by_name.items() if name not in used and layer.type != "Split"]


def read_mean(path: Path, channels: int) -> np.ndarray:
    """The mean image (C, H, W) of a binaryproto, checked against the net's input channels."""
    array = read_binaryproto(path)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3 or array.shape[0] != channels or min(array.shape[1:]) < 1:
        raise CaffeFormatError(
            f"{path}: the mean has shape {list(read_binaryproto(path).shape)}, expected (1, {channels}, H, W): "
            f"one {channels}-channel image in the net's input channel order"
        )
    return np.ascontiguousarray(array, dtype=np.float32)


def _mean_values(values: Sequence[float], channels: int) -> tuple[float, ...]:
    values = tuple(float(v) for v in values)
    if len(values) == 1:
        return values * channels
    if len(values) != channels:
        raise ConversionError(f"--mean-values has {len(values)} values, the net's input has {channels} channels (give 1 or {channels})")
    return values


def _nodes(net: Any, model: CaffeModel, where: str, model_where: str, report: ConversionReport, filter_phase: bool) -> list[Node]:
    nodes = []
    for layer in net.layer:
        if filter_phase and not in_test_phase(layer):
            report.skip(layer.name, "excluded from the TEST phase")
            continue
        blobs = model.blobs.get(layer.name, [])
        if layer.type in WEIGHTED_TYPES and layer.name not in model.blobs:
            raise ConversionError(f"{model_where}: has no weights for layer {layer.name!r} ({layer.type}) of {where}: missing layer")
        nodes.append(read_layer(layer, blobs, where))
    return nodes


def convert_caffe(
    model_path: str | Path,
    prototxt: str | Path | None = None,
    mean: str | Path | None = None,
    mean_values: Sequence[float] | None = None,
    rgb: bool = False,
    verify: bool = False,
    verify_seed: int = 0,
    progress: bool = False,
    *,
    tolerance: float | None = None,
) -> Conversion:
    """Convert a Caffe ResNet (``.caffemodel`` or ``.caffemodel.h5``) onto the reference ResNet.

    The graph comes from ``prototxt`` when given (checked against the caffemodel's own copy),
    else from the caffemodel.  ``verify`` runs the independent interpreter beside the converted
    model on seeded inputs (converters/verify.py's contract): the figures go into
    ``metadata.verification``, and a difference beyond ``tolerance`` (default PARITY_RTOL) raises
    `VerificationFailed`.
    """
    model_path = Path(model_path)
    if mean is not None and mean_values is not None:
        raise ConversionError("give either a mean file or mean values, not both")
    model = read_caffemodel(model_path)
    report = ConversionReport(source_framework="caffe", source_files=[str(model_path)])
    if prototxt is not None:
        prototxt = Path(prototxt)
        net = read_prototxt(prototxt)
        report.source_files.append(str(prototxt))
        where = str(prototxt)
        if model.net is not None:
            for name in check_agreement(net, model.net, prototxt, model_path):
                for i in range(len(model.blobs.get(name, []))):
                    report.skip(blob_id(name, i), f"layer {name!r} is in {model_path.name} but not in {prototxt.name}")
        else:
            extra = sorted(set(model.blobs) - {layer.name for layer in net.layer})
            for name in extra:
                for i in range(len(model.blobs[name])):
                    report.skip(blob_id(name, i), f"layer {name!r} is in {model_path.name} but not in {prototxt.name}")
    elif model.net is None:
        raise ConversionError(f"{model_path}: an HDF5 snapshot holds only blobs; give the net with --prototxt")
    else:
        net = model.net
        where = str(model_path)

    # A prototxt may hold both phases (train_val); the caffemodel's own net was filtered by Caffe
    # when it was built (a solver snapshot holds the TRAIN net), so it is taken as it is.
    filter_phase = prototxt is not None
    nodes = _nodes(net, model, where, str(model_path), report, filter_phase)
    graph = walk(nodes, where)
    built = build(to_skeleton(graph, where), report)

    all_blobs = {blob_id(node.name, i) for node in nodes for i in range(len(model.blobs.get(node.name, [])))}
    unaccounted = sorted(all_blobs - consumed(graph))
    if unaccounted:
        raise ConversionError(f"{where}: source tensors not mapped: {', '.join(unaccounted[:5])}")
    for node in graph.ignored:
        report.notes.append(f"{node.name} ({node.type}): no weights; not part of the reference model")
    spec, state_dict, arch = built.spec, built.state_dict, built.arch
    channels = spec.in_chans
    mean_image = read_mean(Path(mean), channels) if mean is not None else None
    values = _mean_values(mean_values, channels) if mean_values is not None else None
    order = "BGR"
    if rgb:
        if channels != 3:
            raise ConversionError(f"--rgb needs a 3-channel input; {graph.stem.conv.name!r} takes {channels}")
        # conv1 is linear in its input channels: reversing its kernel's channel axis makes the model
        # take RGB exactly.  The mean moves with the channels it belongs to.
        state_dict["conv1.weight"] = state_dict["conv1.weight"].flip(1).contiguous()
        mean_image = mean_image[::-1].copy() if mean_image is not None else None
        values = tuple(reversed(values)) if values is not None else None
        order = "RGB"
        report.notes.append("--rgb: conv1 input channels reversed; the model takes RGB")
    if mean_image is None and values is None:
        report.notes.append("no mean given (--mean or --mean-values): the recorded preprocessing subtracts nothing")
    preprocessing = Preprocessing(
        channel_order=order, pixel_max=255.0, mean=values, std=None, mean_image=mean_image,
        resize=256, crop=224, interpolation="bilinear",
    )
    files = [SourceFile.of(model_path)]
    if prototxt is not None:
        files.append(SourceFile.of(prototxt))
    if mean is not None:
        files.append(SourceFile.of(mean))
    metadata = CheckpointMetadata(
        spec=spec,
        arch=arch,
        preprocessing=preprocessing,
        source=SourceInfo(
            framework="caffe",
            files=files,
            details={
                "net_name": net.name,
                "input_blob": graph.input_name,
                "input_shape": list(graph.input_shape) if graph.input_shape else None,
                "graph_from": "prototxt" if prototxt is not None else "caffemodel",
                "weights_format": "hdf5" if model.net is None else "caffemodel",
                "blob_modules": blob_modules(graph, built.block_names),
                "input_takes": f"{order}, 0-255, mean-subtracted (what Caffe's data blob takes)",
            },
        ),
    )
    metadata.published = published_record(arch, listed_source(arch, "caffe-release"))
    conversion = finish_conversion(spec, state_dict, metadata, report, where)
    if verify:
        from resnet_port.converters.caffe.verify import verify_conversion
        from resnet_port.converters.common import PARITY_RTOL

        verify_conversion(
            conversion, net, model, graph.input_shape, rgb=rgb, seed=verify_seed, progress=progress,
            filter_phase=filter_phase, tolerance=PARITY_RTOL if tolerance is None else tolerance, where=str(model_path),
        )
    return conversion


__all__ = ["check_agreement", "convert_caffe", "in_test_phase", "read_mean"]
