"""convert-mxnet: Gluon model-zoo ResNets (``save_parameters`` and ``export`` files) and the classic
MXNet symbolic ResNets (``resnet-N-symbol.json`` + ``resnet-N-0000.params``) onto the reference
ResNet.  Reading needs numpy only: MXNet's NDArray format is parsed here (`read_ndarray_file`).
"""

from resnet_port.converters.mxnet.convert import convert_mxnet
from resnet_port.converters.mxnet.ndarray import read_ndarray_file, write_ndarray_file
from resnet_port.converters.mxnet.writer import write_gluon_parameters

__all__ = ["convert_mxnet", "read_ndarray_file", "write_gluon_parameters", "write_ndarray_file"]
