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
from typing import Any

from resnet_port.converters.caffe.netstate import DATA_TYPES, TEST_PHASE, in_test_phase

SMALL_INPUT = 100  # below this a net is CIFAR-size: no resize, crop = input size
RELEASE_RESIZE, RELEASE_CROP = 256, 224


@dataclass
class NetInput:
    """What the net's own definition says about its input (None where it says nothing)."""

    size: tuple[int, int] | None = None  # (H, W)
    size_from: str | None = None
    scale: float | None = None
    mean_values: tuple[float, ...] | None = None
    mean_file: str | None = None
    transform_from: str | None = None
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
    candidates = [(l, source) for l in _data_layers(net)]
    if fallback_net is not None:
        candidates += [(l, fallback_source or "the caffemodel") for l in _data_layers(fallback_net)]
    for layer, where in candidates:
        scale, values, mean_file, crop = _transform(layer)
        if found.size is None and crop:
            found.size, found.size_from = (crop, crop), f"{where}: {layer.name!r} crop_size {crop}"
        if found.transform_from is None and (scale is not None or values or mean_file):
            found.scale, found.mean_values, found.mean_file = scale, values, mean_file
            found.transform_from = f"{where}: {layer.name!r} transform_param"
    return found


def resize_and_crop(size: tuple[int, int] | None) -> tuple[int, int, str]:
    """(resize, crop, why) for an input of ``size`` (H, W)."""
    if size is None:
        return RELEASE_RESIZE, RELEASE_CROP, "the net gives no input size: the release's resize 256, crop 224"
    side = min(size)
    if side < SMALL_INPUT:
        return side, side, f"input {size[0]}x{size[1]}: a small (CIFAR-size) net, no resize, crop {side}"
    resize = int(round(side * RELEASE_RESIZE / RELEASE_CROP))
    return resize, side, f"input {size[0]}x{size[1]}: crop {side} from a {resize} resize (the release's 224/256 ratio)"


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


__all__ = ["NetInput", "find_mean_file", "read_net_input", "resize_and_crop"]
