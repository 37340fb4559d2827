"""Finding the images and their labels: ImageNet's ImageFolder layout and Caffe's flat ``val.txt``.

Class indices follow the sorted-WordNet-id order that Caffe, torchvision, Gluon and the ONNX zoo
all use: in the ImageFolder layout the i-th class folder in sorted order is class i, unless a class
list (``--classes FILE``, or the checkpoint's own ``classes``) maps folder names to indices.  In the
flat layout the labels file states the index of each image.  `class_order_warnings` says when the
checkpoint's class order and the dataset's may differ, since that silently zeroes the accuracy.

The `ImageDataset` here is the one door through which images reach a model, for evaluation and for
anything else that needs a checkpoint's preprocessing (BatchNorm recalibration): decoded once, the
crops cut as views, and (optionally) normalised.
"""

from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import torch
from torch.utils.data import Dataset

from resnet_port.checkpoints import IMAGENET_CLASS_ORDER, CheckpointMetadata, Preprocessing
from resnet_port.errors import InputError
from resnet_port.validation.decode import BadImageError, decode_image
from resnet_port.validation.transforms import CropSet, CropTransform, Normalizer

# torchvision's IMG_EXTENSIONS, compared case-insensitively (ImageNet's files end in .JPEG).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
LABELS_FILE_NAMES = ("val.txt", "labels.txt")
_WNID = re.compile(r"^n\d{8}$")


class DatasetError(InputError):
    """The data folder or labels file cannot be used."""


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int


@dataclass
class DatasetIndex:
    """The images to evaluate, their labels, and what is known of the class names."""

    root: Path
    layout: str  # "imagefolder" or "flat"
    samples: list[Sample]
    classes: list[str] | None = None  # name of each class index, where known
    labels_file: Path | None = None
    folders: list[str] | None = None  # ImageFolder: the class folders found, sorted

    def subset(self, limit: int | None = None, shuffle_seed: int | None = None) -> "DatasetIndex":
        """A shuffled (seeded, reproducible) and/or truncated copy, for quick runs."""
        samples = list(self.samples)
        if shuffle_seed is not None:
            random.Random(shuffle_seed).shuffle(samples)
        if limit is not None:
            if limit < 1:
                raise DatasetError(f"--limit must be positive, got {limit}")
            samples = samples[:limit]
        return replace(self, samples=samples)


def is_image_file(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def read_class_list(path: str | Path) -> list[str]:
    """Class names in index order, one a line; only the first word counts, so Caffe's
    ``synset_words.txt`` (``n01440764 tench, Tinca tinca``) works as well as ``synsets.txt``."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read the class list ({exc})") from exc
    names = [line.split()[0] for line in lines if line.strip()]
    if not names:
        raise DatasetError(f"{path}: the class list is empty")
    if len(set(names)) != len(names):
        raise DatasetError(f"{path}: the class list names a class twice")
    return names


def scan_dataset(
    data_dir: str | Path, labels_file: str | Path | None = None, classes: Sequence[str] | None = None
) -> DatasetIndex:
    """Index a data folder.  ``labels_file`` selects the flat layout; without it a folder whose
    images sit directly inside next to a ``val.txt`` is read as flat, and anything else as
    ImageFolder.  ``classes`` (names in index order) maps ImageFolder folders to indices by name."""
    root = Path(data_dir)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such data folder")
    if labels_file is None:
        entries = list(os.scandir(root))
        has_dirs = any(e.is_dir() and not e.name.startswith(".") for e in entries)
        found = [root / n for n in LABELS_FILE_NAMES if (root / n).is_file()]
        if not has_dirs and found:
            labels_file = found[0]
    if labels_file is not None:
        index = _scan_flat(root, Path(labels_file), classes)
    else:
        index = _scan_imagefolder(root, classes)
    if not index.samples:
        raise DatasetError(f"{root}: no images found (expected class folders of images, or images and a val.txt)")
    return index


def _scan_imagefolder(root: Path, classes: Sequence[str] | None) -> DatasetIndex:
    folders = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not folders:
        images = [e.name for e in os.scandir(root) if e.is_file() and is_image_file(e.name)]
        hint = " (images found directly inside: pass --labels FILE for the flat layout)" if images else ""
        raise DatasetError(f"{root}: no class folders found{hint}")
    if classes is not None:
        position = {name: i for i, name in enumerate(classes)}
        unknown = [f for f in folders if f not in position]
        if unknown:
            raise DatasetError(
                f"{root}: class folder(s) {', '.join(unknown[:5])} are not in the class list "
                f"({len(classes)} classes, starting {', '.join(list(classes)[:3])})"
            )
        label_of = position
        names = list(classes)
    else:
        label_of = {name: i for i, name in enumerate(folders)}
        names = folders
    samples = []
    for folder in folders:
        for dirpath, dirnames, filenames in os.walk(root / folder, followlinks=True):
            dirnames.sort()
            for name in sorted(filenames):
                if is_image_file(name):
                    samples.append(Sample(Path(dirpath) / name, label_of[folder]))
    return DatasetIndex(root, "imagefolder", samples, names, folders=folders)


def _scan_flat(root: Path, labels_file: Path, classes: Sequence[str] | None) -> DatasetIndex:
    """Caffe's ``val.txt``: ``ILSVRC2012_val_00000001.JPEG 65`` per line, paths relative to ``root``."""
    if not labels_file.is_file():
        raise DatasetError(f"{labels_file}: no such labels file")
    try:
        lines = labels_file.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{labels_file}: cannot read the labels file ({exc})") from exc
    samples, missing = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise DatasetError(f"{labels_file}:{number}: expected '<image path> <class index>', got {line.strip()!r}")
        name, label = parts[0].strip(), int(parts[1])
        if label < 0:
            raise DatasetError(f"{labels_file}:{number}: class index {label} is negative")
        path = root / name
        if not path.is_file():
            missing.append(f"{name} (line {number})")
            continue
        samples.append(Sample(path, label))
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise DatasetError(f"{labels_file}: names images missing from {root}: {', '.join(missing[:5])}{more}")
    if not samples:
        raise DatasetError(f"{labels_file}: lists no images")
    return DatasetIndex(root, "flat", samples, list(classes) if classes is not None else None, labels_file=labels_file)


def class_order_warnings(index: DatasetIndex, metadata: CheckpointMetadata, num_classes: int) -> list[str]:
    """Why the dataset's class indices might not be the checkpoint's; empty when they agree.
    Labels beyond the model's outputs are an error, not a warning."""
    warnings = []
    top = max(s.label for s in index.samples)
    if top >= num_classes:
        where = index.labels_file or index.root
        raise DatasetError(f"{where}: class index {top} is out of range for a model with {num_classes} outputs")
    if metadata.class_order != IMAGENET_CLASS_ORDER:
        warnings.append(
            f"the checkpoint's class order is {metadata.class_order!r}, the dataset's labels use "
            f"{IMAGENET_CLASS_ORDER!r}: accuracy is meaningless unless they are the same"
        )
    if metadata.classes:
        order = list(metadata.classes)
        if order != sorted(order) and all(_WNID.match(c) for c in order):
            first = next(i for i, (a, b) in enumerate(zip(order, sorted(order))) if a != b)
            warnings.append(
                f"the checkpoint's classes are not in sorted WordNet-id order (index {first} is {order[first]}, "
                f"sorted order has {sorted(order)[first]})"
                + ("; ImageFolder labels were mapped by name" if index.layout == "imagefolder" else "")
            )
        if index.layout == "imagefolder" and index.classes != order:
            warnings.append("ImageFolder labels come from a class list that differs from the checkpoint's classes")
    if index.layout == "imagefolder" and index.folders is not None and index.classes == index.folders:
        if len(index.folders) != num_classes:
            warnings.append(
                f"{index.root} has {len(index.folders)} class folders and the model {num_classes} outputs: labels "
                "are positions in the sorted folder list, right only if the folders are all the model's classes "
                "(pass --classes FILE with the full list)"
            )
    return warnings


@dataclass
class Item:
    """What the dataset yields for one image: its position, label and crops, or why it failed."""

    index: int
    label: int
    crops: CropSet | None
    error: str | None = None


class ImageDataset(Dataset):
    """Images of a `DatasetIndex` through one or more `CropTransform` s (decoded once for all).

    With ``normalize=False`` (evaluation) it yields `Item` s of uint8 crops, normalised later a batch
    at a time; with ``normalize=True`` it yields ``(float crops (N, C, H, W), label)``, the model's
    input for one image, for code that wants plain tensors (BatchNorm recalibration).  A file that
    cannot be decoded yields an `Item` with ``error`` set (raised at once when ``normalize=True``).
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        transforms: CropTransform | Sequence[CropTransform],
        normalize: bool = False,
    ) -> None:
        self.samples = list(samples)
        self.transforms = [transforms] if isinstance(transforms, CropTransform) else list(transforms)
        self.normalize = normalize
        self._normalizers = [Normalizer(t.preprocessing) for t in self.transforms] if normalize else None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        sample = self.samples[i]
        try:
            image = decode_image(sample.path)
        except BadImageError as exc:
            if self.normalize:
                raise
            return Item(i, sample.label, None, str(exc))
        crop_sets = [t(image) for t in self.transforms]
        if not self.normalize:
            return Item(i, sample.label, crop_sets[0] if len(crop_sets) == 1 else crop_sets)
        tensors = [n(c.pixels, c.mean_crops, channels_last=False) for n, c in zip(self._normalizers, crop_sets)]
        return (tensors[0] if len(tensors) == 1 else tensors), sample.label


def preprocess_image(
    path: str | Path, preprocessing: Preprocessing, crops: int = 1, **options
) -> torch.Tensor:
    """The model's input for one image file under ``preprocessing``: float (crops, C, H, W)."""
    transform = CropTransform(preprocessing, crops, **options)
    crop_set = transform(decode_image(path))
    return Normalizer(preprocessing)(crop_set.pixels, crop_set.mean_crops, channels_last=False)


def make_dataset(
    data_dir: str | Path,
    preprocessing: Preprocessing,
    crops: int = 1,
    labels_file: str | Path | None = None,
    classes: Sequence[str] | None = None,
    normalize: bool = True,
    **options,
) -> ImageDataset:
    """An `ImageDataset` over a data folder, for a checkpoint's preprocessing (``metadata.preprocessing``)."""
    index = scan_dataset(data_dir, labels_file, classes)
    return ImageDataset(index.samples, CropTransform(preprocessing, crops, **options), normalize=normalize)
