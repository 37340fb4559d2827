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
from resnet_port.converters.build import build
from resnet_port.converters.caffe.agreement import WEIGHTED_TYPES, compare_nets
from resnet_port.converters.caffe.caffemodel import CaffeModel
from resnet_port.converters.caffe.graph import units, walk
from resnet_port.converters.caffe.recognise import blob_modules, consumed, to_skeleton
from resnet_port.converters.caffe.layers import Node, blob_id, read_layer
from resnet_port.converters.caffe.netstate import in_test_phase
from resnet_port.converters.caffe.pairing import pair
from resnet_port.converters.caffe.preprocess import choose_preprocessing, read_mean
from resnet_port.converters.common import Conversion, ConversionReport, finish_conversion
from resnet_port.errors import ConversionError

def check_agreement(prototxt_net: Any, model_net: Any, prototxt: Path, model: Path, pool_reading: str = "bvlc") -> list[str]:
    """The caffemodel layers the prototxt does not use (agreement.py compares the two by meaning;
    `convert_caffe` reports the differences as warnings); a weighted layer it lacks is an error."""
    return compare_nets(prototxt_net, model_net, Path(prototxt), Path(model), pool_reading)[1]


def _nodes(net: Any, blobs_by_layer: dict[str, list[np.ndarray]], where: str, model_where: str) -> list[Node]:
    nodes = []
    for layer in net.layer:  # already the TEST net (pairing.py)
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
    report = ConversionReport(source_framework="caffe", source_files=[str(model_path)])
    prototxt = Path(prototxt) if prototxt is not None else None
    # The prototxt defines the graph, the weights come by layer name; the net is cleaned into BVLC's
    # layers (forks, training heads) before the graph is recognised.  See pairing.py.
    paired = pair(model_path, prototxt, report)
    model, net, where = paired.model, paired.net, paired.where
    filter_phase = False  # pairing.py kept the TEST phase only
    nodes = _nodes(net, paired.blobs, where, str(model_path))
    graph = walk(nodes, where)
    built = build(to_skeleton(graph, where), report)

    all_blobs = {blob_id(node.name, i) for node in nodes for i in range(len(paired.blobs.get(node.name, [])))}
    unaccounted = sorted(all_blobs - consumed(graph))
    if unaccounted:
        raise ConversionError(f"{where}: source tensors not mapped: {', '.join(unaccounted[:5])}")
    for node in graph.ignored:
        report.notes.append(f"{node.name} ({node.type}): no weights; not part of the reference model")
    bn_less = [unit for unit in units(graph) if unit.bn is None]
    folded = [u.conv.name for u in bn_less if u.scale is None and u.bias is None]
    affine_only = [u.conv.name for u in bn_less if u.scale is not None or u.bias is not None]
    if affine_only:
        report.notes.append(
            f"{len(affine_only)} conv(s) are followed by a Scale with no BatchNorm (first: {affine_only[0]}; the "
            "statistics were folded into the Scale): read as BatchNorms with mean 0 and variance 1 - eps and the "
            "Scale's gamma and beta, exact on this file; recalibrate-bn starts from no statistics"
        )
    if folded:
        report.notes.append(
            f"{len(folded)} BatchNorm(s) were folded into the convolution before them (first: {folded[0]}; the convs "
            "carry the shift as a bias): set to the identity (weight 1, bias 0, mean 0, var 1 - eps), exact on this "
            "file; the original statistics are not in the file, so recalibrate-bn starts from no statistics"
        )
    spec, state_dict, arch = built.spec, built.state_dict, built.arch
    channels = spec.in_chans
    chosen = choose_preprocessing(
        paired, graph.input_shape, channels, mean, mean_values, prototxt, model_path, verify, report,
        small_stem=spec.stem == "3x3" and spec.stem_pool == "none",
    )
    mean_image, values, std = chosen.mean_image, chosen.mean, chosen.std
    order = "BGR"
    if rgb:
        if channels != 3:
            raise ConversionError(f"--rgb needs a 3-channel input; {graph.stem[0].conv.name!r} takes {channels}")
        # The first conv is linear in its input channels: reversing its kernel's channel axis makes
        # the model take RGB exactly.  An input BN's per-channel values and the mean move with the
        # channels they belong to.
        first = "conv1.0.weight" if spec.stem == "deep" else "conv1.weight"
        state_dict[first] = state_dict[first].flip(1).contiguous()
        for key in [k for k in state_dict if k.startswith("data_bn.") and state_dict[k].ndim == 1]:
            state_dict[key] = state_dict[key].flip(0).contiguous()
        mean_image = mean_image[::-1].copy() if mean_image is not None else None
        values = tuple(reversed(values)) if values is not None else None
        std = tuple(reversed(std)) if std is not None else None
        order = "RGB"
        report.notes.append("--rgb: conv1 input channels reversed; the model takes RGB")
    if mean_image is None and values is None:
        report.notes.append("no mean given (--mean or --mean-values) or named by the net: the recorded preprocessing subtracts nothing")
    preprocessing = Preprocessing(
        channel_order=order, pixel_max=255.0, mean=values, std=std, mean_image=mean_image,
        resize=chosen.resize, crop=chosen.crop, interpolation="bilinear",
    )
    files = [SourceFile.of(model_path)]
    if prototxt is not None:
        files.append(SourceFile.of(prototxt))
    if chosen.mean_file is not None:
        files.append(SourceFile.of(chosen.mean_file))
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
                "input_takes": f"{order}, 0-255, mean-subtracted (what Caffe's data blob takes)"
                + (f", times {chosen.scale:g}" if chosen.scale is not None else ""),
                "pool_reading": {"field_13": "ceil_mode" if paired.pool_reading == "fork" else "round_mode", "why": paired.pool_reading_why},
                "output_activation": paired.clean.details.get("output_activation"),
                "warnings": list(report.warnings),
            },
        ),
    )
    metadata.published = published_record(arch, listed_source(arch, "caffe-release"))
    conversion = finish_conversion(spec, state_dict, metadata, report, where)
    if verify:
        from resnet_port.converters.caffe.verify import verify_conversion
        from resnet_port.converters.common import PARITY_RTOL

        # The cleaned net and blobs (fork layers in BVLC form), at an input size the weights fit.
        try:
            verify_conversion(
                conversion, net, CaffeModel(model.path, net, paired.blobs), (1, channels, *chosen.fits), rgb=rgb,
                seed=verify_seed, progress=progress, filter_phase=filter_phase,
                tolerance=PARITY_RTOL if tolerance is None else tolerance, where=str(model_path),
            )
        except RuntimeError as exc:  # a shape the checks missed: one line, never a traceback
            raise ConversionError(f"{where}: --verify: {str(exc).splitlines()[0]}") from exc
        # The same record keys as every converter: why this input size is said in `input`.
        record = conversion.metadata.verification
        record["input"] = f"{record['input']}; input size {chosen.fits[0]}x{chosen.fits[1]}: " + (
            "the net's own input size" if chosen.misfit is None else f"the nearest size that fits ({chosen.misfit})"
        )
    return conversion


__all__ = ["check_agreement", "convert_caffe", "in_test_phase", "read_mean"]
