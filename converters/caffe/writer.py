"""Writing ``.caffemodel`` files from a net definition and weights (test fixtures, the benchmark).

The layers are serialized by protobuf without their blobs; each blob is then appended by hand
(see blobs.py) so that the floats on disk are exactly the arrays' bytes.  The result is an
ordinary binary NetParameter: any protobuf reader, Caffe's included, reads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from resnet_port.converters.caffe.blobs import blob_bytes, joined_length
from resnet_port.converters.caffe.errors import CaffeFormatError
from resnet_port.converters.caffe.schema import LAYER_BLOBS_FIELD, NET_LAYER_FIELD, message_class
from resnet_port.converters.caffe.wire import encode_varint, LEN


def write_caffemodel(
    path: str | Path,
    net: Any,
    blobs: Mapping[str, Sequence[np.ndarray]],
    legacy_shapes: bool = False,
) -> Path:
    """Write ``net`` (a NetParameter in the current format) with ``blobs[layer name]`` as its weights.

    Blobs already inside ``net``'s layers are replaced by those given.  ``legacy_shapes`` writes
    num/channels/height/width instead of ``shape``, as files from before 2015 do.  Atomic.
    """
    from resnet_port.checkpoints import atomic_output

    path = Path(path)
    names = {layer.name for layer in net.layer}
    unknown = sorted(set(blobs) - names)
    if unknown:
        raise CaffeFormatError(f"{path}: blobs given for layers the net does not have: {', '.join(unknown)}")
    header = message_class("NetParameter")()
    header.CopyFrom(net)
    del header.layer[:]
    del header.layers[:]
    with atomic_output(path) as tmp, open(tmp, "wb") as out:
        out.write(header.SerializeToString())
        for layer in net.layer:
            bare = message_class("LayerParameter")()
            bare.CopyFrom(layer)
            del bare.blobs[:]
            parts: list[bytes | memoryview] = [bare.SerializeToString()]
            for array in blobs.get(layer.name, ()):
                blob = blob_bytes(np.asarray(array), legacy_shape=legacy_shapes)
                parts.append(encode_varint(LAYER_BLOBS_FIELD << 3 | LEN) + encode_varint(joined_length(blob)))
                parts.extend(blob)
            out.write(encode_varint(NET_LAYER_FIELD << 3 | LEN) + encode_varint(joined_length(parts)))
            for part in parts:
                out.write(part)
    return path


__all__ = ["write_caffemodel"]
