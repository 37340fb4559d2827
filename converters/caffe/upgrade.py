"""Caffe's own upgrades, applied on read so that the rest of the toolkit sees one format.

- The deprecated V1 ``layers { type: CONVOLUTION ... }`` become ``layer { type: "Convolution" }``:
  the enum type becomes its string name, ``blobs_lr`` / ``weight_decay`` / ``param`` (names) /
  ``blob_share_mode`` become ``param { lr_mult decay_mult name share_mode }``, blobs and the layer
  parameters move across unchanged (as Caffe's ``UpgradeV1LayerParameter`` does).
- The legacy ``input: "data"`` + ``input_dim`` header becomes a first layer of type ``Input``
  (as Caffe's ``UpgradeNetInput`` does), which is also what a Caffe-written caffemodel holds.
"""

from __future__ import annotations

from typing import Any

from resnet_port.converters.caffe.errors import CaffeFormatError
from resnet_port.converters.caffe.schema import ENUMS, message_class

# V1 enum name -> the type string of the current format (Caffe's UpgradeV1LayerType).
V1_TYPE_NAMES: dict[str, str] = {
    "NONE": "",
    "ABSVAL": "AbsVal",
    "ACCURACY": "Accuracy",
    "ARGMAX": "ArgMax",
    "BNLL": "BNLL",
    "CONCAT": "Concat",
    "CONTRASTIVE_LOSS": "ContrastiveLoss",
    "CONVOLUTION": "Convolution",
    "DATA": "Data",
    "DECONVOLUTION": "Deconvolution",
    "DROPOUT": "Dropout",
    "DUMMY_DATA": "DummyData",
    "EUCLIDEAN_LOSS": "EuclideanLoss",
    "ELTWISE": "Eltwise",
    "EXP": "Exp",
    "FLATTEN": "Flatten",
    "HDF5_DATA": "HDF5Data",
    "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss",
    "IM2COL": "Im2col",
    "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss",
    "INNER_PRODUCT": "InnerProduct",
    "LRN": "LRN",
    "MEMORY_DATA": "MemoryData",
    "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN",
    "POOLING": "Pooling",
    "POWER": "Power",
    "RELU": "ReLU",
    "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss",
    "SILENCE": "Silence",
    "SOFTMAX": "Softmax",
    "SOFTMAX_LOSS": "SoftmaxWithLoss",
    "SPLIT": "Split",
    "SLICE": "Slice",
    "TANH": "TanH",
    "WINDOW_DATA": "WindowData",
    "THRESHOLD": "Threshold",
}
_V1_ENUM = {number: name for name, number in ENUMS["V1LayerParameter.LayerType"][0].items()}
# The layer parameters both formats share (same message types, different field numbers).
_SHARED_PARAMS = (
    "accuracy_param", "concat_param", "convolution_param", "data_param", "dropout_param", "eltwise_param",
    "image_data_param", "inner_product_param", "lrn_param", "pooling_param", "relu_param", "softmax_param",
    "transform_param", "loss_param",
)


def upgrade_v1_layer(v1: Any, layer: Any, where: str) -> None:
    """Fill the (empty) current-format ``layer`` from the V1 layer ``v1``; blobs are not touched."""
    layer.name = v1.name
    layer.bottom.extend(v1.bottom)
    layer.top.extend(v1.top)
    layer.include.extend(v1.include)
    layer.exclude.extend(v1.exclude)
    layer.loss_weight.extend(v1.loss_weight)
    enum_name = _V1_ENUM.get(v1.type)
    if enum_name is None or enum_name not in V1_TYPE_NAMES or enum_name == "NONE":
        raise CaffeFormatError(f"{where}: V1 layer {v1.name!r} has no known type (enum value {v1.type})")
    layer.type = V1_TYPE_NAMES[enum_name]
    count = max(len(v1.param), len(v1.blob_share_mode), len(v1.blobs_lr), len(v1.weight_decay))
    for i in range(count):
        spec = layer.param.add()
        if i < len(v1.param):
            spec.name = v1.param[i]
        if i < len(v1.blob_share_mode):
            spec.share_mode = v1.blob_share_mode[i]
        if i < len(v1.blobs_lr):
            spec.lr_mult = v1.blobs_lr[i]
        if i < len(v1.weight_decay):
            spec.decay_mult = v1.weight_decay[i]
    for name in _SHARED_PARAMS:
        if v1.HasField(name):
            getattr(layer, name).CopyFrom(getattr(v1, name))


def upgrade_net(net: Any, where: str) -> Any:
    """Return ``net`` in the current format: V1 layers upgraded, the legacy input header made a layer."""
    if net.layers and net.layer:
        raise CaffeFormatError(f"{where}: uses both the V1 'layers' and the current 'layer' fields")
    if net.layers:
        upgraded = message_class("NetParameter")()
        upgraded.CopyFrom(net)
        del upgraded.layers[:]
        for v1 in net.layers:
            layer = upgraded.layer.add()
            upgrade_v1_layer(v1, layer, where)
            layer.blobs.extend(v1.blobs)
        net = upgraded
    if net.input:
        net = _upgrade_input(net, where)
    return net


def _upgrade_input(net: Any, where: str) -> Any:
    shapes: list[list[int]] = []
    if net.input_shape:
        shapes = [list(s.dim) for s in net.input_shape]
    elif net.input_dim:
        dims = list(net.input_dim)
        if len(dims) != 4 * len(net.input):
            raise CaffeFormatError(
                f"{where}: {len(net.input)} input(s) need {4 * len(net.input)} input_dim values, found {len(dims)}"
            )
        shapes = [dims[4 * i : 4 * i + 4] for i in range(len(net.input))]
    if shapes and len(shapes) not in (1, len(net.input)):
        raise CaffeFormatError(f"{where}: {len(net.input)} inputs but {len(shapes)} input shapes")
    # Every other header field (state, a fork's net-level settings) stays as it is.
    upgraded = message_class("NetParameter")()
    upgraded.CopyFrom(net)
    for name in ("input", "input_dim", "input_shape", "layer"):
        upgraded.ClearField(name)
    layer = upgraded.layer.add(name="input", type="Input")
    layer.top.extend(net.input)
    for dims in shapes:
        layer.input_param.shape.add().dim.extend(dims)
    upgraded.layer.extend(net.layer)
    return upgraded


__all__ = ["V1_TYPE_NAMES", "upgrade_net", "upgrade_v1_layer"]
