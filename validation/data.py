"""Finding the images and their labels: ImageNet's ImageFolder layout, and flat folders of images
with a labels file (Caffe's ``val.txt``, the ILSVRC2012 devkit's ground truth, Kaggle's
``LOC_val_solution.csv``: `validation.labels`), in a folder or in an uncompressed tar read in place
(`validation.sources`).

Class indices follow the sorted-WordNet-id order that Caffe, torchvision, Gluon and the ONNX zoo
all use: in the ImageFolder layout the i-th class folder in sorted order is class i, unless a class
list (``--classes FILE``, or the checkpoint's own ``classes``) maps folder names to indices.  In the
flat layout the labels file states the index of each image, or its WordNet id (or the devkit's
ILSVRC2012_ID), mapped by name onto the checkpoint's classes.  `class_order_warnings` says when the
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
from resnet_port.validation.decode import BadImageError, decode_image
from resnet_port.validation.devkit import Devkit, ground_truth_file, read_devkit
from resnet_port.validation.labels import read_labels
from resnet_port.validation.sources import IMAGE_EXTENSIONS, DatasetError, Member, TarSource, is_image_file, read_member  # noqa: F401
from resnet_port.validation.transforms import CropSet, CropTransform, Normalizer

LABELS_FILE_NAMES = ("val.txt", "labels.txt")
_WNID = re.compile(r"^n\d{8}$")


@dataclass(frozen=True)
class Sample:
    path: Path  # the file, or (for a tar member) the tar's path joined with the member's name
    label: int
    member: Member | None = None  # where its bytes lie when it is read from a tar in place


@dataclass
class DatasetIndex:
    """The images to evaluate, their labels, and what is known of the class names."""

    root: Path
    layout: str  # "imagefolder", "flat" (Caffe's val.txt), "devkit" or "kaggle"
    samples: list[Sample]
    classes: list[str] | None = None  # name of each class index, where known
    labels_file: Path | None = None
    folders: list[str] | None = None  # ImageFolder: the class folders found, sorted
    source: str = "folder"  # or "tar": an uncompressed tar read in place
    mapped_by_name: bool = False  # labels were WordNet ids, mapped onto `classes` by name
    devkit: Path | None = None

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
    data_dir: str | Path,
    labels_file: str | Path | None = None,
    classes: Sequence[str] | None = None,
    *,
    devkit: str | Path | None = None,
    checkpoint_classes: Sequence[str] | None = None,
) -> DatasetIndex:
    """Index a data folder, or an uncompressed tar of images (read in place).

    ``labels_file`` selects the flat layout (its format is recognised: `validation.labels`); without
    it a folder whose images sit directly inside next to a ``val.txt`` is read as flat, with
    ``devkit`` alone the devkit's own ground truth is used, and anything else is ImageFolder.
    ``classes`` (names in index order) maps ImageFolder folders to indices by name; WordNet-id labels
    are mapped onto ``checkpoint_classes`` when given, else onto ``classes``, else onto the devkit's.
    """
    root = Path(data_dir)
    tar = None
    if root.is_file():
        tar = TarSource.open(root)
    elif not root.is_dir():
        raise DatasetError(f"{root}: no such data folder (or tar)")
    kit = read_devkit(devkit) if devkit is not None else None
    labels_text = None
    if labels_file is None and kit is not None:
        found = ground_truth_file(devkit)
        if found is None:
            raise DatasetError(f"{devkit}: holds no validation ground truth: pass --labels ILSVRC2012_validation_ground_truth.txt")
        data, where = found
        labels_file, labels_text = Path(where), data.decode("utf-8", errors="replace")
    if labels_file is None and tar is None:
        entries = list(os.scandir(root))
        has_dirs = any(e.is_dir() and not e.name.startswith(".") for e in entries)
        found_files = [root / n for n in LABELS_FILE_NAMES if (root / n).is_file()]
        if not has_dirs and found_files:
            labels_file = found_files[0]
    if labels_file is not None:
        index = _scan_flat(root, tar, Path(labels_file), labels_text, classes, checkpoint_classes, kit)
    elif tar is not None:
        index = _scan_tar_imagefolder(tar, classes)
    else:
        index = _scan_imagefolder(root, classes)
    if not index.samples:
        raise DatasetError(f"{root}: no images found (expected class folders of images, or images and a val.txt)")
    if kit is not None:
        index.devkit = kit.source
    return index


def _folder_labels(root: Path, folders: list[str], classes: Sequence[str] | None) -> tuple[dict[str, int], list[str]]:
    """Class folder -> index: by name in ``classes`` when given, else by sorted position."""
    if classes is None:
        return {name: i for i, name in enumerate(folders)}, folders
    position = {name: i for i, name in enumerate(classes)}
    unknown = [f for f in folders if f not in position]
    if unknown:
        raise DatasetError(
            f"{root}: class folder(s) {', '.join(unknown[:5])} are not in the class list "
            f"({len(classes)} classes, starting {', '.join(list(classes)[:3])})"
        )
    return position, list(classes)


def _scan_imagefolder(root: Path, classes: Sequence[str] | None) -> DatasetIndex:
    folders = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not folders:
        images = [e.name for e in os.scandir(root) if e.is_file() and is_image_file(e.name)]
        hint = " (images found directly inside: pass --labels FILE for the flat layout)" if images else ""
        raise DatasetError(f"{root}: no class folders found{hint}")
    label_of, names = _folder_labels(root, folders, classes)
    samples = []
    for folder in folders:
        for dirpath, dirnames, filenames in os.walk(root / folder, followlinks=True):
            dirnames.sort()
            for name in sorted(filenames):
                if is_image_file(name):
                    samples.append(Sample(Path(dirpath) / name, label_of[folder]))
    return DatasetIndex(root, "imagefolder", samples, names, folders=folders)


def _scan_tar_imagefolder(tar: TarSource, classes: Sequence[str] | None) -> DatasetIndex:
    """ImageFolder inside a tar: ``n01440764/x.JPEG`` members, the first folder naming the class."""
    folders = tar.folders()
    if not folders:
        hint = " of flat images: pass --labels FILE" if tar.top_level() else " without images"
        raise DatasetError(f"{tar.path}: a tar{hint} (expected class folders, or flat images with a labels file)")
    label_of, names = _folder_labels(tar.path, folders, classes)
    samples = [
        Sample(tar.display(name), label_of[name.split("/", 1)[0]], member)
        for name, member in tar.members.items()
        if "/" in name
    ]
    return DatasetIndex(tar.path, "imagefolder", samples, names, folders=folders, source="tar")


class _Finder:
    """Image names of a labels file -> files: exact relative paths, or (Kaggle's ImageId) the name
    without its extension."""

    def __init__(self, root: Path, tar: TarSource | None) -> None:
        self.root, self.tar = root, tar
        self._stems: dict[str, str] | None = None

    def find(self, name: str) -> Sample | None:
        name = name.strip()
        name = name[2:] if name.startswith("./") else name
        hit = self._exact(name)
        if hit is None and not name.lower().endswith(IMAGE_EXTENSIONS):
            stem = self._stem_map().get(name)
            hit = self._exact(stem) if stem is not None else None
        return hit

    def _exact(self, name: str) -> Sample | None:
        if self.tar is not None:
            member = self.tar.members.get(name)
            return Sample(self.tar.display(name), 0, member) if member is not None else None
        path = self.root / name
        return Sample(path, 0) if path.is_file() else None

    def _stem_map(self) -> dict[str, str]:
        if self._stems is None:
            if self.tar is not None:
                names = self.tar.top_level()
            else:
                names = [e.name for e in os.scandir(self.root) if e.is_file() and is_image_file(e.name)]
            self._stems = {}
            for name in sorted(names):
                self._stems.setdefault(name.rsplit(".", 1)[0], name)
        return self._stems


def _scan_flat(
    root: Path,
    tar: TarSource | None,
    labels_file: Path,
    labels_text: str | None,
    classes: Sequence[str] | None,
    checkpoint_classes: Sequence[str] | None,
    devkit: Devkit | None,
) -> DatasetIndex:
    """A labels file naming images relative to ``root`` (or to the tar's top)."""
    labels = read_labels(labels_file, text=labels_text, checkpoint_classes=checkpoint_classes, classes=classes, devkit=devkit)
    finder = _Finder(root, tar)
    samples, missing = [], []
    for entry in labels.entries:
        found = finder.find(entry.image)
        if found is None:
            missing.append(f"{entry.image} (line {entry.line})")
            continue
        samples.append(replace(found, label=entry.label))
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise DatasetError(f"{labels_file}: names images missing from {root}: {', '.join(missing[:5])}{more}")
    layout = "flat" if labels.format == "caffe" else labels.format
    names = labels.classes if labels.mapped_by_name else (list(classes) if classes is not None else None)
    return DatasetIndex(
        root, layout, samples, names, labels_file=labels_file, source="tar" if tar is not None else "folder",
        mapped_by_name=labels.mapped_by_name,
    )  # fmt: skip


def class_order_warnings(index: DatasetIndex, metadata: CheckpointMetadata, num_classes: int) -> list[str]:
    """Why the dataset's class indices might not be the checkpoint's; empty when they agree.
    Labels beyond the model's outputs are an error, not a warning."""
    warnings = []
    top = max(s.label for s in index.samples)
    if top >= num_classes:
        where = index.labels_file or index.root
        raise DatasetError(f"{where}: class index {top} is out of range for a model with {num_classes} outputs")
    by_name = index.mapped_by_name and metadata.classes is not None and index.classes == list(metadata.classes)
    if metadata.class_order != IMAGENET_CLASS_ORDER and not by_name:
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
                + ("; the labels' WordNet ids were mapped by name" if by_name else "")
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
            if sample.member is not None:
                image = decode_image(sample.path, _read_member(sample))
            else:
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


def _read_member(sample: Sample) -> bytes:
    try:
        return read_member(sample.member)
    except OSError as exc:
        raise BadImageError(f"{sample.path}: cannot read from the tar ({exc})") from exc


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
