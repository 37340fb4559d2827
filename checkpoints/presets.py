"""Default preprocessing per source family, for checkpoints that carry no metadata of their own.

A plain torchvision / timm / mmcls state_dict says nothing about its input; these are the
conventions of the family it came from.  Converters state their source's preprocessing themselves.
"""

from __future__ import annotations

from resnet_port.checkpoints.metadata import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from resnet_port.errors import CheckpointError

# Per-channel BGR means of Kaiming He's release, for when the mean image itself is not at hand.
CAFFE_BGR_MEAN_VALUES = (104.0, 117.0, 123.0)


def preset_preprocessing(family: str) -> Preprocessing:
    if family in ("torchvision", "mmcls", "timm", "gluon", "onnx"):
        return Preprocessing("RGB", 1.0, IMAGENET_MEAN, IMAGENET_STD)
    if family == "mxnet":
        # The symbolic models normalise inside the graph (their data BN): raw 0-255 RGB goes in.
        return Preprocessing("RGB", 255.0, None, None)
    if family == "caffe":
        return Preprocessing("BGR", 255.0, CAFFE_BGR_MEAN_VALUES, None)
    if family == "cifar":
        return Preprocessing("RGB", 255.0, (125.307, 122.961, 113.8575), (51.5865, 50.847, 51.255), resize=32, crop=32)
    raise CheckpointError(f"no preprocessing preset for family {family!r}")


PRESET_FAMILIES = ("torchvision", "timm", "mmcls", "gluon", "onnx", "mxnet", "caffe", "cifar")
