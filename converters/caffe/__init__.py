"""Kaiming He's Caffe ResNets (prototxt + caffemodel) to the reference PyTorch ResNet, without Caffe.

Public API: `read_prototxt`, `read_caffemodel` (a `CaffeModel`: net + blobs by layer name),
`read_caffemodel_h5`, `read_binaryproto`, `write_caffemodel`, `write_caffemodel_h5`,
`write_binaryproto`, `convert_caffe`, `CaffeInterpreter`.
"""

from resnet_port.converters.caffe.binaryproto import read_binaryproto, write_binaryproto
from resnet_port.converters.caffe.caffemodel import CaffeModel, read_caffemodel
from resnet_port.converters.caffe.convert import convert_caffe
from resnet_port.converters.caffe.errors import CaffeFormatError
from resnet_port.converters.caffe.h5 import read_caffemodel_h5, write_caffemodel_h5
from resnet_port.converters.caffe.interpreter import CaffeInterpreter
from resnet_port.converters.caffe.prototxt import parse_prototxt, read_prototxt
from resnet_port.converters.caffe.schema import message_class
from resnet_port.converters.caffe.writer import write_caffemodel

__all__ = [
    "CaffeFormatError",
    "CaffeInterpreter",
    "CaffeModel",
    "convert_caffe",
    "message_class",
    "parse_prototxt",
    "read_binaryproto",
    "read_caffemodel",
    "read_caffemodel_h5",
    "read_prototxt",
    "write_binaryproto",
    "write_caffemodel",
    "write_caffemodel_h5",
]
