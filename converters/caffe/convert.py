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
from resnet_port.converters.caffe.binaryproto import read_binaryproto
from resnet_port.converters.caffe.caffemodel import CaffeModel, read_caffemodel
from resnet_port.converters.caffe.errors import CaffeFormatError
from resnet_port.converters.caffe.graph import to_spec, to_state_dict, walk
from resnet_port.converters.caffe.layers import Node, blob_id, read_layer
from resnet_port.converters.caffe.netstate import DATA_TYPES, LOSS_TYPES, in_test_phase
from resnet_port.converters.caffe.agreement import WEIGHTED_TYPES, compare_nets
from resnet_port.converters.caffe.normalise import normalise, pool_reading_of
from resnet_port.converters.caffe.preprocess import find_mean_file, read_net_input, resize_and_crop
from resnet_port.converters.caffe.shapes import fitting_size
from resnet_port.converters.caffe.prototxt import read_prototxt_with_notes
from resnet_port.converters.common import Conversion, ConversionReport, finish_conversion
from resnet_port.errors import ConversionError
from resnet_port.resnet_ref import find_arch



def check_agreement(prototxt_net: Any, model_net: Any, prototxt: Path, model: Path, pool_reading: str = "bvlc") -> list[str]:
    """The caffemodel layers the prototxt does not use; differences in meaning are warned about by
    `convert_caffe` (see agreement.py); a weighted layer the caffemodel lacks is an error."""
    return compare_nets(prototxt_net, model_net, Path(prototxt), Path(model), pool_reading)[1]


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


def _nodes(net: Any, blobs_by_layer: dict[str, list[np.ndarray]], where: str, model_where: str) -> list[Node]:
    nodes = []
    for layer in net.layer:
        blobs = blobs_by_layer.get(layer.name, [])
        if layer.type in WEIGHTED_TYPES and layer.name not in blobs_by_layer:
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
) -> Conversion:
    """Convert a Caffe ResNet (``.caffemodel`` or ``.caffemodel.h5``) onto the reference ResNet.

    The graph comes from ``prototxt`` when given (checked against the caffemodel's own copy),
    else from the caffemodel.  ``verify`` runs the independent interpreter beside the converted
    model on seeded inputs and records the difference in ``metadata.verification``.
    """
    model_path = Path(model_path)
    if mean is not None and mean_values is not None:
        raise ConversionError("give either a mean file or mean values, not both")
    model = read_caffemodel(model_path)
    report = ConversionReport(source_framework="caffe", source_files=[str(model_path)])
    warnings: list[str] = []
    prototxt_net = None
    if prototxt is not None:
        prototxt = Path(prototxt)
        prototxt_net, text_notes = read_prototxt_with_notes(prototxt)
        report.notes.extend(text_notes)
        report.source_files.append(str(prototxt))
    reading, reading_why = pool_reading_of(prototxt_net)
    if prototxt_net is not None:
        net, where = prototxt_net, str(prototxt)
        if model.net is not None:
            found, extra = compare_nets(prototxt_net, model.net, prototxt, model_path, reading)
            warnings.extend(found)
        else:
            extra = sorted(set(model.blobs) - {layer.name for layer in net.layer})
        for name in extra:
            for i in range(len(model.blobs.get(name, []))):
                report.skip(blob_id(name, i), f"layer {name!r} is in {model_path.name} but not in {prototxt.name}")
    elif model.net is None:
        raise ConversionError(f"{model_path}: an HDF5 snapshot holds only blobs; give the net with --prototxt")
    else:
        net, where = model.net, str(model_path)
    if any(layer.type == "Pooling" for layer in (model.net.layer if model.net is not None else [])):
        report.notes.append(f"pooling rounding of {model_path.name} read as {'ceil_mode' if reading == 'fork' else 'round_mode'}: {reading_why}")

    # A prototxt may hold both phases (train_val); the caffemodel's own net was filtered by Caffe
    # when it was built (a solver snapshot holds the TRAIN net), so it is taken as it is.
    filter_phase = prototxt is not None
    clean = normalise(net, model.blobs, where, filter_phase=filter_phase, pool_reading="bvlc" if prototxt is not None else reading)
    for name in clean.details.get("excluded_from_test", []):
        report.skip(name, "excluded from the TEST phase")
    report.notes.extend(clean.notes)
    warnings.extend(clean.warnings)
    net = clean.net
    nodes = _nodes(net, clean.blobs, where, str(model_path))
    graph = walk(nodes, where)
    spec, units = to_spec(graph, where)
    mapped = to_state_dict(graph, spec, units, where)

    all_blobs = {blob_id(node.name, i) for node in nodes for i in range(len(clean.blobs.get(node.name, [])))}
    unaccounted = sorted(all_blobs - mapped.consumed)
    if unaccounted:
        raise ConversionError(f"{where}: source tensors not mapped: {', '.join(unaccounted[:5])}")
    for target, source in mapped.mapped.items():
        report.map(target, source)
    report.layers = mapped.layers
    for node in graph.ignored:
        report.notes.append(f"{node.name} ({node.type}): no weights; not part of the reference model")
    report.notes.extend(mapped.notes)
    arch = find_arch(spec)
    report.arch = arch

    state_dict = mapped.state_dict
    channels = spec.in_chans
    # Preprocessing: the flags, else what the net itself says (its TEST data layer, else the
    # snapshot's own TRAIN data layer), else the release's conventions.
    said = read_net_input(
        prototxt_net if prototxt_net is not None else (model.net if model.net is not None else net),
        where, fallback_net=model.net if prototxt_net is not None else None, fallback_source=str(model_path),
    )
    declared = said.size or (tuple(graph.input_shape[2:4]) if graph.input_shape and len(graph.input_shape) == 4 and all(graph.input_shape[2:4]) else None)
    fits, misfit = fitting_size(net, clean.blobs, channels, declared)
    if misfit is not None:
        warnings.append(
            f"the net's input {declared[0]}x{declared[1]} does not fit its weights ({misfit}); "
            f"{fits[0]}x{fits[1]} fits: recorded as the crop" + (" and used by --verify" if verify else "")
        )
    resize, crop, size_why = resize_and_crop(fits if (said.size or misfit) else declared)
    mean_image = values = None
    mean_file_used: Path | None = None
    mean_from = None
    if mean is not None:
        mean_file_used, mean_from = Path(mean), "--mean"
    elif mean_values is not None:
        values, mean_from = _mean_values(mean_values, channels), "--mean-values"
    elif said.mean_values:
        values, mean_from = _mean_values(said.mean_values, channels), said.transform_from
    elif said.mean_file:
        beside = [p.parent for p in (Path(prototxt) if prototxt is not None else None, model_path) if p is not None]
        mean_file_used = find_mean_file(said.mean_file, beside)
        if mean_file_used is None:
            warnings.append(
                f"the net names the mean file {said.mean_file!r} ({said.transform_from}), not found beside "
                f"{', '.join(str(b) for b in beside)}: give it with --mean; the recorded preprocessing subtracts nothing"
            )
        else:
            mean_from = f"{said.transform_from}: mean_file {said.mean_file!r}"
    if mean_file_used is not None:
        mean_image = read_mean(mean_file_used, channels)
    std = None
    if said.scale is not None and said.scale != 1.0:
        if said.scale <= 0:
            raise ConversionError(f"{said.transform_from}: transform_param scale {said.scale:g} must be positive")
        std = (1.0 / said.scale,) * channels
        report.notes.append(f"scale {said.scale:g} ({said.transform_from}): recorded as std {1.0 / said.scale:g}")
    if mean_from is not None and mean_from not in ("--mean", "--mean-values"):
        report.notes.append(f"mean from the net: {mean_from}")
    report.notes.append(f"preprocessing: {size_why}" + (f" ({said.size_from})" if said.size_from else ""))
    order = "BGR"
    if rgb:
        if channels != 3:
            raise ConversionError(f"--rgb needs a 3-channel input; {graph.stem.conv.name!r} takes {channels}")
        # conv1 is linear in its input channels: reversing its kernel's channel axis makes the model
        # take RGB exactly.  The mean moves with the channels it belongs to.
        state_dict["conv1.weight"] = state_dict["conv1.weight"].flip(1).contiguous()
        mean_image = mean_image[::-1].copy() if mean_image is not None else None
        values = tuple(reversed(values)) if values is not None else None
        std = tuple(reversed(std)) if std is not None else None
        order = "RGB"
        report.notes.append("--rgb: conv1 input channels reversed; the model takes RGB")
    if mean_image is None and values is None:
        report.notes.append("no mean given (--mean or --mean-values) or named by the net: the recorded preprocessing subtracts nothing")
    preprocessing = Preprocessing(
        channel_order=order, pixel_max=255.0, mean=values, std=std, mean_image=mean_image,
        resize=resize, crop=crop, interpolation="bilinear",
    )
    report.warnings.extend(warnings)
    files = [SourceFile.of(model_path)]
    if prototxt is not None:
        files.append(SourceFile.of(prototxt))
    if mean_file_used is not None:
        files.append(SourceFile.of(mean_file_used))
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
                "blob_modules": mapped.blob_modules,
                "input_takes": f"{order}, 0-255, mean-subtracted (what Caffe's data blob takes)"
                + (f", times {said.scale:g}" if std is not None else ""),
                "pool_reading": {"field_13": "ceil_mode" if reading == "fork" else "round_mode", "why": reading_why},
                "output_activation": clean.details.get("output_activation"),
                "warnings": list(warnings),
            },
        ),
    )
    conversion = finish_conversion(spec, state_dict, metadata, report, where)
    if verify:
        from resnet_port.converters.caffe.verify import verify_conversion

        # The cleaned net and blobs (fork layers in BVLC form), at an input size the weights fit.
        cleaned = CaffeModel(model.path, net, clean.blobs)
        try:
            metadata.verification = verify_conversion(
                conversion, net, cleaned, (1, channels, *fits), rgb=rgb, seed=verify_seed, progress=progress,
                filter_phase=False,
            )
        except RuntimeError as exc:  # a shape the checks above missed: one line, never a traceback
            raise ConversionError(f"{where}: --verify: {str(exc).splitlines()[0]}") from exc
        metadata.verification["input_size_why"] = (
            f"{fits[0]}x{fits[1]}: " + ("the net's own input size" if misfit is None else f"the nearest size that fits ({misfit})")
        )
    return conversion


__all__ = ["check_agreement", "convert_caffe", "in_test_phase", "read_mean"]
