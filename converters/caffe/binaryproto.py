"""``.binaryproto`` mean files: one serialized ``caffe.BlobProto`` (Kaiming He's ResNet_mean is (1, 3, 224, 224), BGR)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from google.protobuf.message import DecodeError

from resnet_port.converters.caffe.blobs import array_to_blob, blob_to_array
from resnet_port.converters.caffe.errors import CaffeFormatError
from resnet_port.converters.caffe.schema import message_class


def read_binaryproto(path: str | Path) -> np.ndarray:
    """The blob of a binaryproto file as an array of the shape it declares (e.g. (1, 3, 224, 224))."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CaffeFormatError(f"{path}: cannot read the mean file: {exc.strerror or exc}") from exc
    blob = message_class("BlobProto")()
    try:
        blob.ParseFromString(raw)
    except DecodeError as exc:
        raise CaffeFormatError(f"{path}: not a Caffe binaryproto (BlobProto): {exc}") from exc
    array = blob_to_array(blob, str(path))
    if array.size == 0:
        raise CaffeFormatError(f"{path}: not a Caffe mean file: the blob holds no values")
    return array


def write_binaryproto(path: str | Path, array: np.ndarray) -> None:
    """Write ``array`` as a binaryproto (atomically); used to make mean-file fixtures."""
    from resnet_port.checkpoints import atomic_output

    with atomic_output(path) as tmp:
        tmp.write_bytes(array_to_blob(np.asarray(array)).SerializeToString())


__all__ = ["read_binaryproto", "write_binaryproto"]
