"""Reading ``.caffemodel`` files (a binary ``caffe.NetParameter`` holding the layers and their blobs).

The file is memory-mapped and walked by hand down to the blobs (see wire.py), so every weight is a
read-only NumPy view of the mapped bytes: no second copy of a 230 MB file.  Everything else of each
layer (name, type, bottoms, tops, parameters) is parsed by protobuf from the schema in schema.py.
"""

from __future__ import annotations

import mmap
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError

from resnet_port.converters.caffe.blobs import parse_blob
from resnet_port.converters.caffe.errors import CaffeFormatError
from resnet_port.converters.caffe.schema import (
    LAYER_BLOBS_FIELD,
    NET_LAYER_FIELD,
    NET_V1_LAYERS_FIELD,
    V1_LAYER_BLOBS_FIELD,
    message_class,
)
from resnet_port.converters.caffe.upgrade import upgrade_v1_layer
from resnet_port.converters.caffe.wire import LEN, Truncated, iter_fields

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
# The first lines of a solver prototxt (text): fields only SolverParameter has.
_SOLVER_TEXT = re.compile(rb"^\s*(base_lr|lr_policy|train_net|max_iter|snapshot_prefix|solver_mode|test_iter|test_interval)\s*:", re.M)


@dataclass
class CaffeModel:
    """A Caffe net and its weights: ``net`` (current format, blobs left out) and ``blobs`` by layer name.

    ``net`` is None for an HDF5 snapshot, which holds only blobs.  Arrays keep Caffe's blob order
    (Convolution: weight, bias; BatchNorm: mean*s, var*s, s; Scale: gamma, beta; ...).
    """

    path: Path
    net: Any | None
    blobs: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def layer_names(self) -> list[str]:
        return [layer.name for layer in self.net.layer] if self.net is not None else list(self.blobs)


def _split_fields(buf: memoryview, start: int, end: int, keep: int, where: str) -> tuple[bytes, list[tuple[int, int]]]:
    """The bytes of every field except number ``keep``, and the payload ranges of ``keep``."""
    rest: list[bytes] = []
    kept: list[tuple[int, int]] = []
    for number, wire, a, b, field_start in iter_fields(buf, start, end, where):
        if number == keep and wire == LEN:
            kept.append((a, b))
        else:
            rest.append(bytes(buf[field_start:b]))
    return b"".join(rest), kept


def _partial_name(buf: memoryview, start: int) -> str | None:
    """The name of a layer whose bytes are cut short, if its name field survived (field 1 or V1's 4)."""
    try:
        for number, wire, a, b, _ in iter_fields(buf, start, len(buf), "partial layer"):
            if number in (1, 4) and wire == LEN:
                return bytes(buf[a:b]).decode("utf-8", "replace")
    except CaffeFormatError:
        return None
    return None


def parse_caffemodel_bytes(buf: memoryview, where: str) -> CaffeModel:
    """Parse the bytes of a binary NetParameter; blobs view ``buf``."""
    try:
        return _parse(buf, where)
    except Truncated as exc:
        if exc.where != where or exc.number not in (NET_LAYER_FIELD, NET_V1_LAYERS_FIELD):
            raise
        name = _partial_name(buf, exc.payload_start)
        layer = f"layer {name!r}" if name else "a layer"
        raise CaffeFormatError(
            f"{where}: truncated: {layer} needs {exc.needed} bytes, only {exc.remaining} remain (the file is cut short)"
        ) from exc


def _check_text(message: Any, where: str) -> None:
    """Raise `CaffeFormatError` when a string field of ``message`` (at any depth) is not UTF-8.

    protobuf hands back a proto2 string that is not UTF-8 as bytes (and some versions raise
    UnicodeDecodeError when it is read); either way it would fail later, wherever the name is used.
    Reading every one here, once, turns a damaged name into one error."""
    from google.protobuf.descriptor import FieldDescriptor

    def repeated(field: Any) -> bool:  # protobuf 5+ has is_repeated; older ones only label
        flag = getattr(field, "is_repeated", None)
        return bool(flag) if flag is not None else field.label == FieldDescriptor.LABEL_REPEATED

    def damaged(field: Any) -> CaffeFormatError:
        return CaffeFormatError(f"{where}: field {field.name!r} holds bytes that are not UTF-8 text: a damaged file")

    try:
        for field, value in message.ListFields():
            if field.type == FieldDescriptor.TYPE_STRING:
                if any(isinstance(v, bytes) for v in (value if repeated(field) else [value])):
                    raise damaged(field)
            elif field.type == FieldDescriptor.TYPE_MESSAGE:
                for item in (value if repeated(field) else [value]):
                    _check_text(item, where)
    except UnicodeDecodeError as exc:
        raise CaffeFormatError(f"{where}: a text field holds bytes that are not UTF-8 ({exc.reason}): a damaged file") from None


def _parse(buf: memoryview, where: str) -> CaffeModel:
    LayerParameter = message_class("LayerParameter")
    V1LayerParameter = message_class("V1LayerParameter")
    net = message_class("NetParameter")()
    header: list[bytes] = []
    blobs: dict[str, list[np.ndarray]] = {}
    layers: list[tuple[Any, list[tuple[int, int]]]] = []
    v1_seen = False
    for number, wire, a, b, field_start in iter_fields(buf, 0, len(buf), where):
        if number in (NET_LAYER_FIELD, NET_V1_LAYERS_FIELD) and wire == LEN:
            v1 = number == NET_V1_LAYERS_FIELD
            v1_seen |= v1
            label = f"{where}: layer #{len(layers)}"
            rest, blob_ranges = _split_fields(buf, a, b, V1_LAYER_BLOBS_FIELD if v1 else LAYER_BLOBS_FIELD, label)
            message = (V1LayerParameter if v1 else LayerParameter)()
            try:
                message.ParseFromString(rest)
            except DecodeError as exc:
                raise CaffeFormatError(f"{label}: not a Caffe layer: {exc}") from exc
            _check_text(message, label)
            if v1:
                upgraded = LayerParameter()
                upgrade_v1_layer(message, upgraded, where)
                message = upgraded
            layers.append((message, blob_ranges))
        else:
            header.append(bytes(buf[field_start:b]))
    try:
        net.ParseFromString(b"".join(header))
    except DecodeError as exc:
        raise CaffeFormatError(f"{where}: not a Caffe NetParameter: {exc}") from exc
    _check_text(net, where)
    if not layers:
        raise CaffeFormatError(f"{where}: not a caffemodel: it holds no Caffe layers")
    if v1_seen and net.input:
        from resnet_port.converters.caffe.upgrade import upgrade_net

        net = upgrade_net(net, where)
    for message, blob_ranges in layers:
        if not message.name:
            raise CaffeFormatError(f"{where}: a layer of type {message.type!r} has no name")
        if message.name in blobs:
            raise CaffeFormatError(f"{where}: two layers are named {message.name!r}")
        blobs[message.name] = [
            parse_blob(buf, a, b, f"{where}: layer {message.name!r} blob {i}") for i, (a, b) in enumerate(blob_ranges)
        ]
        net.layer.append(message)
    if net.input:
        from resnet_port.converters.caffe.upgrade import upgrade_net

        net = upgrade_net(net, where)
    return CaffeModel(Path(where), net, blobs)


def _solver_state(start: bytes) -> str | None:
    """A ``.solverstate`` (SolverState: iter = 1, learned_net = 2, history = 3) begins with the
    iteration and the path of the caffemodel it belongs to; a NetParameter never does."""
    try:
        fields = []
        for number, wire, a, b, _ in iter_fields(memoryview(start), 0, len(start), "head"):
            fields.append((number, wire, a, b))
            if len(fields) == 2:
                break
    except CaffeFormatError:
        return None
    if len(fields) == 2 and fields[0][:2] == (1, 0) and fields[1][:2] == (2, LEN):
        name = bytes(start[fields[1][2] : fields[1][3]]).decode("utf-8", "replace")
        if name.endswith((".caffemodel", ".h5")):
            return f"iteration {fields[0][2]}, learned_net {name!r}"
    return None


def read_caffemodel(path: str | Path) -> CaffeModel:
    """Read a ``.caffemodel`` (or, recognised by its signature, a ``.caffemodel.h5``).

    Raises `CaffeFormatError` naming the file for a missing, empty, truncated or non-Caffe file.
    """
    path = Path(path)
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise CaffeFormatError(f"{path}: cannot read the caffemodel: {exc.strerror or exc}") from exc
    with handle:
        head = handle.read(8)
        if head == HDF5_MAGIC:
            from resnet_port.converters.caffe.h5 import read_caffemodel_h5

            return read_caffemodel_h5(path)
        if not head:
            raise CaffeFormatError(f"{path}: the caffemodel is empty")
        start = head + handle.read(4088)
        if _SOLVER_TEXT.search(start):
            raise CaffeFormatError(
                f"{path}: is a Caffe solver prototxt, not a caffemodel; `convert-solver {path}` reads it"
            )
        if head.lstrip()[:5] in (b"name:", b"layer", b"input") or head[:1] == b"#":
            raise CaffeFormatError(f"{path}: is a text prototxt, not a binary caffemodel; give it with --prototxt")
        state = _solver_state(start)
        if state is not None:
            raise CaffeFormatError(
                f"{path}: is a Caffe solver state ({state}), not the weights: give the .caffemodel snapshot it names"
            )
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        model = parse_caffemodel_bytes(memoryview(mapped), str(path))
    except CaffeFormatError as exc:
        if "not a protobuf message" in str(exc):
            raise CaffeFormatError(f"{exc}; not a Caffe .caffemodel (binary NetParameter)") from exc
        raise
    model.path = path
    return model


__all__ = ["CaffeModel", "parse_caffemodel_bytes", "read_caffemodel"]
