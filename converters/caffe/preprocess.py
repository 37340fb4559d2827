"""What a Caffe net file says about its own input: size, scale, mean (values or a mean file).

Caffe's DataTransformer computes ``(pixel - mean) * scale`` on a ``crop_size`` crop, in the
file's channel order (BGR for images Caffe decodes).  The converted checkpoint records the same
as preprocessing: ``mean`` (or ``mean_image``), ``std = 1 / scale``, ``crop`` = the net's input
size.  Where the net says nothing the release's conventions stay (resize 256, crop 224); a
CIFAR-size net (input under 100 pixels) is never resized: crop = resize = its input size.
Command-line flags (``--mean``, ``--mean-values``) override what the file says.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from resnet_port.converters.caffe.binaryproto import read_binaryproto
from resnet_port.converters.caffe.errors import CaffeFormatError
from resnet_port.converters.caffe.netstate import DATA_TYPES, TEST_PHASE, in_test_phase
from resnet_port.converters.common import resize_and_crop
from resnet_port.errors import ConversionError



@dataclass
class NetInput:
    """What the net's own definition says about its input (None where it says nothing)."""

    size: tuple[int, int] | None = None  # (H, W)
    size_from: str | None = None
    scale: float | None = None
    mean_values: tuple[float, ...] | None = None
    mean_file: str | None = None
    transform_from: str | None = None
    resize: tuple[int, int] | None = None  # ImageData's new_height/new_width: both sides, before the crop
    train_crop: tuple[int, str] | None = None  # (crop, where) of a TRAIN layer when the TEST one crops nothing
    notes: list[str] = field(default_factory=list)


def _transform(layer: Any) -> tuple[float | None, tuple[float, ...] | None, str | None, int]:
    """(scale, mean values, mean file, crop) of a data layer: transform_param, or the legacy
    copies in data_param / image_data_param (older files)."""
    scale = mean_file = None
    values: tuple[float, ...] | None = None
    crop = 0
    for holder in ("data_param", "image_data_param"):
        if layer.HasField(holder):
            legacy = getattr(layer, holder)
            if legacy.HasField("scale"):
                scale = float(legacy.scale)
            if legacy.HasField("mean_file"):
                mean_file = legacy.mean_file
            crop = int(legacy.crop_size) or crop
    if layer.HasField("transform_param"):
        t = layer.transform_param
        if t.HasField("scale"):
            scale = float(t.scale)
        if t.mean_value:
            values = tuple(float(v) for v in t.mean_value)
        if t.HasField("mean_file"):
            mean_file = t.mean_file
        crop = int(t.crop_size) or crop
    return scale, values, mean_file, crop


def _data_layers(net: Any) -> list[Any]:
    """The net's data layers, the TEST phase's first, then those of every phase, then TRAIN's
    (a snapshot's own net is the TRAIN net; its transform is the next best word on the input)."""
    layers = [l for l in net.layer if not l.bottom and (l.type in DATA_TYPES[1:] or l.type == "Python" or l.type.endswith("Data"))]

    def rank(layer: Any) -> int:
        if any(r.HasField("phase") and r.phase == TEST_PHASE for r in layer.include):
            return 0
        return 1 if in_test_phase(layer) else 2

    return sorted(layers, key=rank)


def read_net_input(net: Any, source: str, fallback_net: Any | None = None, fallback_source: str | None = None) -> NetInput:
    """The input size and transform of ``net`` (a prototxt's or a caffemodel's own net).

    ``fallback_net`` (a snapshot's TRAIN net) supplies the transform when ``net`` has none, as a
    deploy prototxt usually does not.
    """
    found = NetInput()
    for layer in net.layer:
        if layer.type == "Input" and layer.input_param.shape and in_test_phase(layer):
            dims = list(layer.input_param.shape[0].dim)
            if len(dims) == 4 and dims[2] > 0 and dims[3] > 0:
                found.size, found.size_from = (int(dims[2]), int(dims[3])), f"{source}: Input {layer.name!r} {dims}"
                break
    candidates = [(l, source, True) for l in _data_layers(net)]
    if fallback_net is not None:
        candidates += [(l, fallback_source or "the caffemodel", False) for l in _data_layers(fallback_net)]
    whole_images = False  # the net's TEST data layer crops nothing: a TRAIN crop is not the test input
    for layer, where, own in candidates:
        scale, values, mean_file, crop = _transform(layer)
        if found.resize is None and layer.HasField("image_data_param"):
            p = layer.image_data_param
            if p.new_height and p.new_width:
                found.resize = (int(p.new_height), int(p.new_width))
        if whole_images and crop and found.train_crop is None:
            found.train_crop = (crop, f"{where}: {layer.name!r} crop_size {crop}")
        if found.size is None and not whole_images:
            if crop:
                found.size, found.size_from = (crop, crop), f"{where}: {layer.name!r} crop_size {crop}"
            elif own and in_test_phase(layer):
                # Caffe's DataTransformer then passes whole images (of the mean file's size, when
                # there is one); the TRAIN layer's crop_size says nothing about them.
                whole_images = True
                if found.resize is not None:
                    found.size = found.resize
                    found.size_from = f"{where}: {layer.name!r} new_height/new_width {found.resize[0]}x{found.resize[1]}, no crop"
                else:
                    found.notes.append(f"{where}: {layer.name!r} has no crop_size: the TEST phase takes whole images")
        if found.transform_from is None and (scale is not None or values or mean_file):
            found.scale, found.mean_values, found.mean_file = scale, values, mean_file
            found.transform_from = f"{where}: {layer.name!r} transform_param"
    return found


def find_mean_file(name: str, beside: list[Path]) -> Path | None:
    """The mean file a net names, as written (absolute or relative to the working folder) or by its
    file name beside the prototxt or the caffemodel."""
    written = Path(name)
    candidates = [written] if written.is_absolute() else [written]
    for folder in beside:
        candidates += [folder / written, folder / written.name]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return None




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


def mean_values_for(values: Sequence[float], channels: int, what: str = "--mean-values") -> tuple[float, ...]:
    values = tuple(float(v) for v in values)
    if len(values) == 1:
        return values * channels
    if len(values) != channels:
        raise ConversionError(f"{what} has {len(values)} values, the net's input has {channels} channels (give 1 or {channels})")
    return values


@dataclass
class Chosen:
    """The preprocessing a conversion records (in the net's channel order), and why."""

    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    mean_image: np.ndarray | None
    mean_file: Path | None
    resize: int
    crop: int
    fits: tuple[int, int]  # an input size the weights take (for --verify)
    misfit: str | None  # why the net's own size does not fit, if it does not
    scale: float | None


def choose_preprocessing(
    paired: Any, graph_input_shape: Any, channels: int, mean: Path | None, mean_values: Sequence[float] | None,
    prototxt: Path | None, model_path: Path, verify: bool, report: Any, small_stem: bool = False,
) -> Chosen:
    """The flags first, then what the net says (its TEST data layer, else the snapshot's own TRAIN
    data layer), then the release's conventions; notes and warnings go to ``report``."""
    from resnet_port.converters.caffe.shapes import fitting_size

    model_net = paired.model.net
    said = read_net_input(
        paired.prototxt_net if paired.prototxt_net is not None else (model_net if model_net is not None else paired.net),
        paired.where, fallback_net=model_net if paired.prototxt_net is not None else None, fallback_source=str(model_path),
    )
    report.notes.extend(said.notes)
    values = mean_image = mean_file = None
    if mean is not None:
        mean_file = Path(mean)
    elif mean_values is not None:
        values = mean_values_for(mean_values, channels)
    elif said.mean_values:
        values = mean_values_for(said.mean_values, channels, f"{said.transform_from}: mean_value")
        report.notes.append(f"mean from the net: {said.transform_from}")
    elif said.mean_file:
        beside = [p.parent for p in (prototxt, model_path) if p is not None]
        mean_file = find_mean_file(said.mean_file, beside)
        if mean_file is None:
            report.warnings.append(
                f"the net names the mean file {said.mean_file!r} ({said.transform_from}), not found as written nor beside "
                f"{' or '.join(dict.fromkeys(str(b.resolve()) for b in beside))}: give it with --mean; the recorded "
                "preprocessing subtracts nothing"
            )
        else:
            report.notes.append(f"mean from the net: {said.transform_from}: mean_file {said.mean_file!r}, found at {mean_file}")
    if mean_file is not None:
        mean_image = read_mean(mean_file, channels)

    shape = tuple(graph_input_shape) if graph_input_shape else ()
    declared = said.size or (tuple(int(d) for d in shape[2:4]) if len(shape) == 4 and all(shape[2:4]) else None)
    if declared is None and mean_image is not None and said.mean_file:
        # No crop: Caffe's DataTransformer takes whole images, which must match the mean's size.
        declared = (int(mean_image.shape[1]), int(mean_image.shape[2]))
        said.size_from = f"the size of the mean file {said.mean_file!r} (no crop_size: whole images)"
    elif declared is None and small_stem:
        declared = (32, 32)
        said.size_from = "a CIFAR-style stem (3x3, stride 1, no pool): 32x32 assumed"
        report.warnings.append(f"the net gives no input size; {said.size_from}")
    elif declared is None and said.train_crop is not None:
        # The last word: a training crop is at most the test images' size (CIFAR's 28 of 32, or 32 of a padded 40).
        declared = (said.train_crop[0],) * 2
        said.size_from = f"{said.train_crop[1]}, the training crop (the TEST phase takes whole images of a size the file does not give)"
        report.warnings.append(f"the net gives no test input size; {said.size_from}: check it against the test images")
    fits, misfit = fitting_size(paired.net, paired.blobs, channels, declared)
    if misfit is not None:
        report.warnings.append(
            f"the net's input {declared[0] if declared else 224}x{declared[1] if declared else 224} does not fit its weights "
            f"({misfit}); {fits[0]}x{fits[1]} fits: recorded as the crop" + (" and used by --verify" if verify else "")
        )
    resize, crop, size_why = resize_and_crop(fits if (misfit or declared) else None)
    if said.resize is not None and min(said.resize) >= crop:
        resize = min(said.resize)
        size_why += f"; resize {resize} from ImageData new_height/new_width {said.resize[0]}x{said.resize[1]}"
        if said.resize[0] != said.resize[1]:
            report.warnings.append(
                f"ImageData resizes images to {said.resize[0]}x{said.resize[1]} (both sides); recorded as a shorter-side resize to {resize}"
            )
    report.notes.append(f"preprocessing: {size_why}" + (f" ({said.size_from})" if said.size_from and not misfit else ""))
    std = None
    if said.scale is not None and said.scale != 1.0:
        if not said.scale > 0:
            raise ConversionError(f"{said.transform_from}: transform_param scale {said.scale:g} must be positive")
        std = (1.0 / said.scale,) * channels
        report.notes.append(f"scale {said.scale:g} ({said.transform_from}): recorded as std {1.0 / said.scale:g}")
    return Chosen(values, std, mean_image, mean_file, resize, crop, fits, misfit, said.scale if std is not None else None)


__all__ = ["Chosen", "NetInput", "choose_preprocessing", "find_mean_file", "mean_values_for", "read_mean", "read_net_input"]
