"""Preprocessing presets (``--preset``) for checkpoints that carry no metadata of their own.

A preset names a weight source (``checkpoints/weight_sources.py``): ``torchvision`` -> torchvision,
``gluon`` -> the Gluon model zoo, ``caffe`` -> Kaiming He's release, ...  The table there owns the
preprocessing; this module keeps the old names working.
"""

from __future__ import annotations

from resnet_port.checkpoints.metadata import Preprocessing
from resnet_port.checkpoints.weight_sources import CAFFE_BGR_MEAN_VALUES, PRESET_SOURCES, SOURCES, source_preprocessing

__all__ = ["CAFFE_BGR_MEAN_VALUES", "PRESET_CHOICES", "PRESET_FAMILIES", "preset_preprocessing"]


def preset_preprocessing(family: str) -> Preprocessing:
    """The preprocessing of the weight source a preset family (or a source tag) stands for."""
    return source_preprocessing(family)


PRESET_FAMILIES = tuple(PRESET_SOURCES)
# What --preset accepts: the family names and every weight-source tag (``gluoncv``, ``timm-gluon``, ...),
# so that a plain file can say whose weights it holds, not only how to preprocess them.
PRESET_CHOICES = PRESET_FAMILIES + tuple(t for t in SOURCES if t not in PRESET_FAMILIES)
