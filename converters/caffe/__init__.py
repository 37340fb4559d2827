"""Kaiming He's Caffe ResNets (prototxt + caffemodel) to the reference PyTorch ResNet, without Caffe.

Public API: `read_prototxt`, `read_caffemodel`, `read_caffemodel_h5`, `read_binaryproto`,
`write_caffemodel`, `write_caffemodel_h5`, `convert_caffe`.
"""

from converters.caffe.prototxt import parse_prototxt, read_prototxt
from converters.caffe.schema import message_class

__all__ = ["message_class", "parse_prototxt", "read_prototxt"]
