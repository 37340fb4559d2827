"""Where weights came from, kept apart from which network they are.

The same network carries different weights from different places: torchvision's ``resnet50``
layout holds torchvision's own weights, gluon-cv's v1b weights, timm's port of those, or
mmclassification's.  Each place trained with its own preprocessing and published its own results.
So the table is keyed by (arch, source tag): `SOURCES` says, per source, the preprocessing its
weights expect and which document its figures come from; `WEIGHTS` lists, per (arch, source), the
published ImageNet results.  This replaces the old per-family presets (``checkpoints/presets.py``
now reads `PRESET_SOURCES`) and the per-arch published rows (``validation/published.py`` is a view
of `WEIGHTS`).

Figures are transcribed, not parsed at run time (the documents do not ship with the package); the
tests re-read the documents (in the project's shared folder: ``$RESNET_PORT_SHARED`` or the
checkout's sibling ``../shared``, see `shared_folder`) and check every figure.  Documents are cited
by file name, relative to that folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from resnet_port.checkpoints.metadata import (
    CIFAR10_CLASS_ORDER, CIFAR10_CLASSES, IMAGENET_CLASS_ORDER, IMAGENET_MEAN, IMAGENET_STD, Preprocessing,
)
from resnet_port.errors import CheckpointError

# Per-channel BGR means of Kaiming He's release, for when the mean image itself is not at hand.
CAFFE_BGR_MEAN_VALUES = (104.0, 117.0, 123.0)
CIFAR_MEAN = (125.307, 122.961, 113.8575)
CIFAR_STD = (51.5865, 50.847, 51.255)
# gluon-cv's CIFAR-10 training and evaluation transforms (0-1 RGB).
GLUONCV_CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
GLUONCV_CIFAR_STD = (0.2023, 0.1994, 0.2010)


def _imagenet_rgb() -> Preprocessing:
    return Preprocessing("RGB", 1.0, IMAGENET_MEAN, IMAGENET_STD)


@dataclass(frozen=True)
class WeightSource:
    """One place weights come from: its preprocessing and the document its figures are cited from."""

    tag: str
    name: str  # as the published rows print it
    citation: str  # where the figures are printed; documents by file name under the shared folder
    make_preprocessing: Callable[[], Preprocessing]
    why: str = ""  # what the preprocessing rests on
    class_order: str = IMAGENET_CLASS_ORDER  # the labels its weights predict, in this order
    classes: tuple[str, ...] = ()  # their names, where the source's label set is small enough to list

    def preprocessing(self) -> Preprocessing:
        """A fresh Preprocessing (callers may adjust sizes)."""
        return self.make_preprocessing()


SOURCES: dict[str, WeightSource] = {
    s.tag: s
    for s in (
        WeightSource("torchvision", "torchvision", "torchvision model docs", _imagenet_rgb,
                     "RGB 0-1, ImageNet mean/std, resize 256 / crop 224 bilinear"),
        WeightSource("timm", "timm", "timm model cards", _imagenet_rgb, "timm's default config for ResNets"),
        WeightSource("mmcls", "mmclassification", "mmcls ResNet model card; seeds/003_fd33a50fde038426.txt",
                     _imagenet_rgb, "mmcls data_preprocessor: mean/std of ImageNet in 0-255, same as 0-1 RGB"),
        WeightSource("gluon-zoo", "MXNet Gluon model zoo", "mxnet.gluon.model_zoo.vision", _imagenet_rgb,
                     "Gluon's transforms: ToTensor then Normalize with ImageNet mean/std"),
        WeightSource("gluoncv", "gluon-cv v1b", "gluon-cv ResNet.csv; reference/PUBLISHED.md", _imagenet_rgb,
                     "gluon-cv's presets: RGB 0-1, ImageNet mean/std"),
        WeightSource("timm-gluon", "timm port of gluon v1b", "timm results-imagenet.csv; reference/PUBLISHED.md",
                     _imagenet_rgb, "timm's config for the gluon ports"),
        WeightSource("onnx-zoo", "ONNX model zoo", "onnx/models ResNet page; seeds/004_3d915647607e2200.txt",
                     _imagenet_rgb, "the zoo page: RGB 0-1, mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225)"),
        WeightSource("mxnet-symbol", "MXNet symbolic ResNets", "MXNet image-classification examples",
                     lambda: Preprocessing("RGB", 255.0, None, None),
                     "the symbolic models normalise inside the graph (their data BN): raw 0-255 RGB goes in"),
        WeightSource("caffe-release", "Kaiming He's Caffe release",
                     "KaimingHe/deep-residual-networks README; seeds/001_633d30ef107ebedc.txt, reference/PUBLISHED.md",
                     lambda: Preprocessing("BGR", 255.0, CAFFE_BGR_MEAN_VALUES, None),
                     "BGR 0-255 minus the mean image (per-channel means when the image is not at hand)"),
        WeightSource("gluoncv-cifar", "gluon-cv CIFAR-10", "gluon-cv scripts/classification/cifar/train_cifar10.py",
                     lambda: Preprocessing("RGB", 1.0, GLUONCV_CIFAR_MEAN, GLUONCV_CIFAR_STD, resize=32, crop=32),
                     "gluon-cv's CIFAR-10 transforms: ToTensor, then Normalize with its CIFAR mean/std; 32x32",
                     CIFAR10_CLASS_ORDER, CIFAR10_CLASSES),
        WeightSource("cifar", "CIFAR ResNets", "CIFAR training conventions",
                     lambda: Preprocessing("RGB", 255.0, CIFAR_MEAN, CIFAR_STD, resize=32, crop=32),
                     "CIFAR-10 per-channel mean/std in 0-255, 32x32, no resize",
                     CIFAR10_CLASS_ORDER, CIFAR10_CLASSES),
    )
}

# The old preset family names (``--preset``), each the source whose preprocessing it stands for.
PRESET_SOURCES: dict[str, str] = {
    "torchvision": "torchvision",
    "timm": "timm",
    "mmcls": "mmcls",
    "gluon": "gluon-zoo",
    "onnx": "onnx-zoo",
    "mxnet": "mxnet-symbol",
    "caffe": "caffe-release",
    "cifar": "cifar",
}


@dataclass(frozen=True)
class Published:
    """One published result: top-1 / top-5 error in percent, for ``crops`` crops."""

    crops: int
    top1_error: float
    top5_error: float


@dataclass(frozen=True)
class WeightRecord:
    """The weights of one network from one source, with what that source published for them."""

    arch: str
    source: str  # a SOURCES tag
    published: tuple[Published, ...]

    @property
    def weight_source(self) -> WeightSource:
        return SOURCES[self.source]


def _err(kind: str, top1: float, top5: float, crops: int = 1) -> Published:
    """A figure as the document prints it: "error" as is, "accuracy" turned into error."""
    if kind == "error":
        return Published(crops, top1, top5)
    return Published(crops, round(100.0 - top1, 6), round(100.0 - top5, 6))


def _acc(top1: float, top5: float) -> tuple[Published, ...]:
    return (_err("accuracy", top1, top5),)


WEIGHTS: tuple[WeightRecord, ...] = (
    # Kaiming He's release README: errors, 1-crop and 10-crop.
    WeightRecord("caffe_resnet50", "caffe-release", (_err("error", 24.7, 7.8), _err("error", 22.9, 6.7, 10))),
    WeightRecord("caffe_resnet101", "caffe-release", (_err("error", 23.6, 7.1), _err("error", 21.8, 6.1, 10))),
    WeightRecord("caffe_resnet152", "caffe-release", (_err("error", 23.0, 6.7), _err("error", 21.4, 5.7, 10))),
    # ONNX model zoo (Gluon exports): accuracies, center crop.
    WeightRecord("resnet18_v1", "onnx-zoo", _acc(69.93, 89.29)),
    WeightRecord("resnet34_v1", "onnx-zoo", _acc(73.73, 91.40)),
    WeightRecord("resnet50_v1", "onnx-zoo", _acc(74.93, 92.38)),
    WeightRecord("resnet101_v1", "onnx-zoo", _acc(76.48, 93.20)),
    WeightRecord("resnet152_v1", "onnx-zoo", _acc(77.11, 93.61)),
    WeightRecord("resnet18_v2", "onnx-zoo", _acc(69.70, 89.49)),
    WeightRecord("resnet34_v2", "onnx-zoo", _acc(73.36, 91.43)),
    WeightRecord("resnet50_v2", "onnx-zoo", _acc(75.81, 92.82)),
    WeightRecord("resnet101_v2", "onnx-zoo", _acc(77.42, 93.61)),
    WeightRecord("resnet152_v2", "onnx-zoo", _acc(78.20, 94.21)),
    # mmclassification's model card: accuracies, 224 crop.
    WeightRecord("resnet18", "mmcls", _acc(69.90, 89.43)),
    WeightRecord("resnet34", "mmcls", _acc(73.62, 91.59)),
    WeightRecord("resnet50", "mmcls", _acc(76.55, 93.06)),
    WeightRecord("resnet101", "mmcls", _acc(77.97, 94.06)),
    WeightRecord("resnet152", "mmcls", _acc(78.48, 94.13)),
    WeightRecord("resnet50_v1c", "mmcls", _acc(77.01, 93.58)),
    WeightRecord("resnet101_v1c", "mmcls", _acc(78.30, 94.27)),
    WeightRecord("resnet152_v1c", "mmcls", _acc(78.76, 94.41)),
    WeightRecord("resnet50_v1d", "mmcls", _acc(77.54, 93.57)),
    WeightRecord("resnet101_v1d", "mmcls", _acc(78.93, 94.48)),
    WeightRecord("resnet152_v1d", "mmcls", _acc(79.41, 94.70)),
    WeightRecord("wide_resnet50_2", "mmcls", _acc(78.48, 94.08)),
    WeightRecord("wide_resnet101_2", "mmcls", _acc(78.84, 94.28)),
    # gluon-cv's v1b is the torchvision layout (stride in the 3x3), so it lands on resnet50 etc.
    WeightRecord("resnet50", "gluoncv", _acc(77.67, 93.82)),
    WeightRecord("resnet101", "gluoncv", _acc(79.20, 94.61)),
    WeightRecord("resnet152", "gluoncv", _acc(79.69, 94.74)),
    # gluon-cv's model zoo table (docs/model_zoo/csv_tables/Classifications/ResNet.csv, dmlc/gluon-cv), under
    # GluonCV's own names; v1d rows are the default pretrained weights (the mixup-trained hashtags).
    WeightRecord("resnet18_v1b", "gluoncv", _acc(70.94, 89.83)),
    WeightRecord("resnet34_v1b", "gluoncv", _acc(74.65, 92.08)),
    WeightRecord("resnet50_v1b", "gluoncv", _acc(77.67, 93.82)),
    WeightRecord("resnet101_v1b", "gluoncv", _acc(79.20, 94.61)),
    WeightRecord("resnet152_v1b", "gluoncv", _acc(79.69, 94.74)),
    WeightRecord("resnet50_v1c", "gluoncv", _acc(78.03, 94.09)),
    WeightRecord("resnet101_v1c", "gluoncv", _acc(79.60, 94.75)),
    WeightRecord("resnet152_v1c", "gluoncv", _acc(80.01, 94.96)),
    WeightRecord("resnet50_v1d", "gluoncv", _acc(79.15, 94.58)),
    WeightRecord("resnet101_v1d", "gluoncv", _acc(80.51, 95.12)),
    WeightRecord("resnet152_v1d", "gluoncv", _acc(80.61, 95.34)),
    WeightRecord("resnet50", "timm-gluon", _acc(77.580, 93.704)),
    WeightRecord("resnet101", "timm-gluon", _acc(79.306, 94.538)),
    WeightRecord("resnet152", "timm-gluon", _acc(79.712, 94.720)),
)


def weight_source(tag: str) -> WeightSource:
    """The source ``tag`` (an old preset family name is accepted too)."""
    tag = PRESET_SOURCES.get(tag, tag)
    try:
        return SOURCES[tag]
    except KeyError:
        raise CheckpointError(
            f"no weight source {tag!r}; known: {', '.join(SOURCES)} (or the presets {', '.join(PRESET_SOURCES)})"
        ) from None


def source_preprocessing(tag: str) -> Preprocessing:
    """The preprocessing weights from ``tag`` (a source tag or a preset family name) expect."""
    return weight_source(tag).preprocessing()


def source_classes(tag: str, num_classes: int) -> tuple[str, list[str] | None]:
    """(class order, class names) a checkpoint records for weights from ``tag`` with ``num_classes``
    outputs: the source's own label set where the class count is its size, else ImageNet's order."""
    src = weight_source(tag)
    if src.classes and len(src.classes) == num_classes:
        return src.class_order, list(src.classes)
    return IMAGENET_CLASS_ORDER, None


def weight_records(arch: str | None = None, source: str | None = None) -> list[WeightRecord]:
    """Every record for ``arch`` and/or ``source`` (a tag or preset name), in table order."""
    tag = None if source is None else weight_source(source).tag
    return [r for r in WEIGHTS if (arch is None or r.arch == arch) and (tag is None or r.source == tag)]


def published_record(arch: str | None, source: str | None) -> dict:
    """What a checkpoint's metadata records of its weight source: the tag, and the published figures
    of (arch, source) when the table has them (an empty list otherwise)."""
    if source is None:
        return {}
    src = weight_source(source)
    rows = [
        {"crops": p.crops, "top1_error": p.top1_error, "top5_error": p.top5_error}
        for r in weight_records(arch, src.tag) for p in r.published
    ] if arch is not None else []
    return {"weight_source": src.tag, "source_name": src.name, "citation": src.citation, "results": rows}


def shared_folder() -> Path | None:
    """The project's shared folder (seed documents, reference files): ``$RESNET_PORT_SHARED``, else the
    ``shared`` folder beside this checkout; None when neither exists."""
    env = os.environ.get("RESNET_PORT_SHARED")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[2] / "shared")
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return None


def source_document(name: str) -> Path | None:
    """A cited document (``seeds/004_....txt``, ``reference/PUBLISHED.md``) in the shared folder, if present."""
    folder = shared_folder()
    if folder is None:
        return None
    path = folder / name
    return path if path.is_file() else None


def listed_source(arch: str | None, tag: str) -> str | None:
    """``tag`` when the table lists weights of ``arch`` from it, else None: a converter that assumes a
    source (the ONNX zoo, Kaiming He's release) claims it only for the networks that source published."""
    return tag if arch is not None and weight_records(arch, tag) else None
