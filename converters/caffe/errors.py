"""The one error type of the Caffe readers: a file that is not the Caffe file it should be."""

from __future__ import annotations

from resnet_port.errors import ConversionError


class CaffeFormatError(ConversionError):
    """A prototxt, caffemodel, .h5 or binaryproto that cannot be read (CLI exit code 2)."""


__all__ = ["CaffeFormatError"]
