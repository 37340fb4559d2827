"""The checkpoint file format: weights, the spec, and the metadata that travels with them.

Public API: `save_checkpoint`, `load_checkpoint`, `load_model`, `CheckpointMetadata`,
`Preprocessing`, `SourceInfo`, `SourceFile`, `atomic_output`.
"""

from resnet_port.checkpoints.io import atomic_output, load_checkpoint, load_model, read_raw, save_checkpoint
from resnet_port.checkpoints.metadata import (
    CIFAR10_CLASS_ORDER,
    CIFAR10_CLASSES,
    IMAGENET_CLASS_ORDER,
    IMAGENET_MEAN,
    IMAGENET_STD,
    CheckpointMetadata,
    Preprocessing,
    SourceFile,
    SourceInfo,
    sha256_file,
)
from resnet_port.checkpoints.presets import preset_preprocessing
from resnet_port.checkpoints.weight_sources import SOURCES, WEIGHTS, source_preprocessing, weight_records

__all__ = [
    "CIFAR10_CLASS_ORDER",
    "CIFAR10_CLASSES",
    "IMAGENET_CLASS_ORDER",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CheckpointMetadata",
    "Preprocessing",
    "SourceFile",
    "SourceInfo",
    "atomic_output",
    "load_checkpoint",
    "load_model",
    "preset_preprocessing",
    "SOURCES",
    "WEIGHTS",
    "source_preprocessing",
    "weight_records",
    "read_raw",
    "save_checkpoint",
    "sha256_file",
]
