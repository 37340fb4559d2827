"""Caffe blobs <-> NumPy arrays: shapes from ``shape`` or the legacy num/channels/height/width,
values from ``data`` (float32) or ``double_data`` (float64)."""

from __future__ import annotations

from typing import Any

import numpy as np
from google.protobuf.message import DecodeError

from resnet_port.converters.caffe.errors import CaffeFormatError
from resnet_port.converters.caffe.schema import message_class
from resnet_port.converters.caffe.wire import FIXED32, FIXED64, LEN, VARINT, encode_len_field, encode_varint, iter_fields

# BlobProto field numbers (caffe.proto).
_NUM, _CHANNELS, _HEIGHT, _WIDTH, _DATA, _DIFF, _SHAPE, _DOUBLE_DATA, _DOUBLE_DIFF = 1, 2, 3, 4, 5, 6, 7, 8, 9
# NVIDIA Caffe's BlobProto (its default, store_blobs_in_old_format false): the values as raw bytes
# of ``raw_data_type`` (caffe.Type: DOUBLE 0, FLOAT 1, FLOAT16 2).
_RAW_DATA_TYPE, _RAW_DATA = 10, 12
_RAW_DTYPES = {0: np.dtype("<f8"), 1: np.dtype("<f4"), 2: np.dtype("<f2")}


def _legacy_shape(num: int, channels: int, height: int, width: int) -> tuple[int, ...]:
    return (int(num), int(channels), int(height), int(width))


def blob_shape(blob: Any) -> tuple[int, ...]:
    """The shape of a ``BlobProto`` message, as Caffe's ``Blob::FromProto`` reads it."""
    if blob.HasField("shape"):
        return tuple(int(d) for d in blob.shape.dim)
    return _legacy_shape(blob.num, blob.channels, blob.height, blob.width)


def _shaped(values: np.ndarray, shape: tuple[int, ...], where: str) -> np.ndarray:
    if any(d < 0 for d in shape):
        raise CaffeFormatError(f"{where}: blob shape {list(shape)} has a negative dimension")
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if values.size != count:
        raise CaffeFormatError(f"{where}: blob of shape {list(shape)} holds {values.size} values, expected {count}")
    return values.reshape(shape)


def blob_to_array(blob: Any, where: str) -> np.ndarray:
    """A ``BlobProto`` message as an array of its own shape (float64 if it holds ``double_data``)."""
    shape = blob_shape(blob)
    if len(blob.double_data) and not len(blob.data):
        values = np.asarray(blob.double_data, dtype=np.float64)
    else:
        values = np.asarray(blob.data, dtype=np.float32)
    return _shaped(values, shape, where)


def parse_blob(buf: memoryview, start: int, end: int, where: str) -> np.ndarray:
    """A serialized ``BlobProto`` as an array viewing ``buf`` (no copy) when its data is packed."""
    shape: tuple[int, ...] | None = None
    legacy = [0, 0, 0, 0]
    raw_type, raw = 0, None  # proto2: an enum without a default reads as its first value (DOUBLE)
    data: list[np.ndarray] = []
    double: list[np.ndarray] = []
    for number, wire, a, b, _ in iter_fields(buf, start, end, where):
        if number == _SHAPE and wire == LEN:
            shape_msg = message_class("BlobShape")()
            try:
                shape_msg.ParseFromString(bytes(buf[a:b]))
            except DecodeError as exc:
                raise CaffeFormatError(f"{where}: unreadable blob shape: {exc}") from exc
            shape = tuple(int(d) for d in shape_msg.dim)
        elif number in (_DATA, _DOUBLE_DATA):
            dtype = np.dtype("<f4") if number == _DATA else np.dtype("<f8")
            target = data if number == _DATA else double
            if wire == LEN:
                if (b - a) % dtype.itemsize:
                    raise CaffeFormatError(f"{where}: packed data of {b - a} bytes is not a whole number of values")
                target.append(np.frombuffer(buf, dtype=dtype, count=(b - a) // dtype.itemsize, offset=a))
            elif wire in (FIXED32, FIXED64) and (wire == FIXED32) == (number == _DATA):
                target.append(np.frombuffer(buf, dtype=dtype, count=1, offset=a))  # unpacked, one value
            else:
                raise CaffeFormatError(f"{where}: blob data field {number} has wire type {wire}")
        elif number in (_NUM, _CHANNELS, _HEIGHT, _WIDTH) and wire == VARINT:
            legacy[number - 1] = a
        elif number == _RAW_DATA_TYPE and wire == VARINT:
            raw_type = a
        elif number == _RAW_DATA and wire == LEN:
            raw = (a, b)
        # diff / double_diff (gradients) and unknown fields are not weights: ignored.
    if shape is None:
        shape = _legacy_shape(*legacy)
    if raw is not None and not data and not double:
        if raw_type not in _RAW_DTYPES:
            raise CaffeFormatError(f"{where}: NVIDIA Caffe raw_data of type {raw_type}, expected DOUBLE, FLOAT or FLOAT16")
        dtype = _RAW_DTYPES[raw_type]
        a, b = raw
        if (b - a) % dtype.itemsize:
            raise CaffeFormatError(f"{where}: raw_data of {b - a} bytes is not a whole number of {dtype.name} values")
        values = np.frombuffer(buf, dtype=dtype, count=(b - a) // dtype.itemsize, offset=a)
        if dtype.itemsize == 2:
            values = values.astype(np.float32)  # FLOAT16 weights: exact in float32
        return _shaped(values, shape, where)
    if data and double:
        raise CaffeFormatError(f"{where}: blob holds both data and double_data")
    parts = data or double
    if not parts:
        values = np.zeros(0, dtype=np.float32)
    elif len(parts) == 1:
        values = parts[0]
    else:
        values = np.concatenate(parts)
    return _shaped(values, shape, where)


def blob_bytes(array: np.ndarray, legacy_shape: bool = False) -> list[bytes | memoryview]:
    """A serialized ``BlobProto`` holding ``array`` (float64 arrays go to ``double_data``).

    Written by hand so that the float bytes are the array's own (bit-exact, and fast for 230 MB).
    """
    array = np.asarray(array)
    if array.dtype == np.float64:
        number, values = _DOUBLE_DATA, np.ascontiguousarray(array, dtype="<f8")
    else:
        number, values = _DATA, np.ascontiguousarray(array, dtype="<f4")
    parts: list[bytes | memoryview] = []
    if legacy_shape:
        dims = (1,) * (4 - array.ndim) + tuple(array.shape)
        if len(dims) != 4:
            raise ValueError(f"a legacy blob shape has 4 axes, the array has {array.ndim}")
        for field, dim in zip((_NUM, _CHANNELS, _HEIGHT, _WIDTH), dims):
            parts.append(encode_varint(field << 3 | VARINT) + encode_varint(int(dim)))
    else:
        shape_msg = message_class("BlobShape")(dim=[int(d) for d in array.shape])
        parts.extend(encode_len_field(_SHAPE, shape_msg.SerializeToString()))
    parts.extend(encode_len_field(number, memoryview(values.reshape(-1)).cast("B")))
    return parts


def joined_length(parts: list[bytes | memoryview]) -> int:
    return sum(len(p) if isinstance(p, bytes) else p.nbytes for p in parts)


def array_to_blob(array: np.ndarray) -> Any:
    """A ``BlobProto`` message holding ``array`` (for small blobs such as mean files)."""
    blob = message_class("BlobProto")()
    blob.ParseFromString(b"".join(bytes(p) for p in blob_bytes(array)))
    return blob


__all__ = ["array_to_blob", "blob_bytes", "blob_shape", "blob_to_array", "joined_length", "parse_blob"]
