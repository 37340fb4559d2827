"""convert-onnx: ONNX model-zoo ResNets (v1/v2, exported from Gluon) onto the reference ResNet.

`convert_onnx(path)` reads the graph and its initializers with the `onnx` package, recognises the
ResNet from the graph's topology and shapes (never from names), and returns a `Conversion`.
"""

from resnet_port.converters.onnx.convert import convert_onnx
from resnet_port.converters.onnx.verify import verify_conversion

__all__ = ["convert_onnx", "verify_conversion"]
