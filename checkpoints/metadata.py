"""The record that travels with the weights: what the network is, where it came from, what it eats.

Modelled on torchvision's ``Weights.meta`` and timm's ``PretrainedCfg``: one typed record, stored
as JSON inside the checkpoint (the mean image, being an array, is stored beside it as a tensor).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from resnet_port import __version__
from resnet_port.errors import CheckpointError
from resnet_port.resnet_ref.spec import ResNetSpec

METADATA_FORMAT_VERSION = 1
CHANNEL_ORDERS = ("RGB", "BGR")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The order every ImageNet source here uses: class index i is the i-th WordNet id in sorted order.
IMAGENET_CLASS_ORDER = "imagenet1k_wnid_sorted"
# CIFAR-10's own label order (the dataset's batches.meta): the GluonCV CIFAR nets predict these.
CIFAR10_CLASS_ORDER = "cifar10"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@dataclass
class Preprocessing:
    """What the first layer expects, from a decoded image.

    Pixels are read in ``channel_order`` and scaled to ``[0, pixel_max]`` (1.0 or 255.0); then a
    per-channel ``mean`` (or a ``mean_image`` of shape (C, H, W), both in that channel order and
    scale) is subtracted and the result divided by ``std`` where given.  The image is resized so
    that its shorter side is ``resize`` with ``interpolation``, and ``crop`` x ``crop`` crops are
    taken.  A mean image is subtracted from each crop (Kaiming He's release: ``Crop(img) - mean``),
    resized to the crop size first when its size differs.
    """

    channel_order: str = "RGB"
    pixel_max: float = 1.0
    mean: tuple[float, ...] | None = IMAGENET_MEAN
    std: tuple[float, ...] | None = IMAGENET_STD
    mean_image: np.ndarray | None = field(default=None, repr=False, compare=False)
    resize: int = 256
    crop: int = 224
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        if self.channel_order not in CHANNEL_ORDERS:
            raise CheckpointError(f"preprocessing.channel_order must be RGB or BGR, got {self.channel_order!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise CheckpointError(
                f"preprocessing.interpolation must be one of {', '.join(INTERPOLATIONS)}, got {self.interpolation!r}"
            )
        self.pixel_max = float(self.pixel_max)
        if self.mean is not None:
            self.mean = tuple(float(v) for v in self.mean)
        if self.std is not None:
            self.std = tuple(float(v) for v in self.std)
            if any(v == 0 for v in self.std):
                raise CheckpointError("preprocessing.std has a zero entry")
        if self.mean_image is not None:
            image = np.asarray(self.mean_image, dtype=np.float32)
            if image.ndim != 3:
                raise CheckpointError(f"preprocessing.mean_image must be (C, H, W), got shape {image.shape}")
            self.mean_image = image

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; the mean image is described here and stored separately as a tensor."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "mean_image"}
        out["mean"] = list(self.mean) if self.mean is not None else None
        out["std"] = list(self.std) if self.std is not None else None
        out["mean_image_shape"] = list(self.mean_image.shape) if self.mean_image is not None else None
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], mean_image: np.ndarray | None = None) -> "Preprocessing":
        kwargs = {k: v for k, v in data.items() if k != "mean_image_shape"}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise CheckpointError(f"unknown preprocessing field(s): {', '.join(unknown)}")
        expected_shape = data.get("mean_image_shape")
        if expected_shape is not None and (mean_image is None or list(mean_image.shape) != list(expected_shape)):
            raise CheckpointError(
                f"metadata says the mean image has shape {expected_shape}, the file holds "
                f"{None if mean_image is None else list(mean_image.shape)}"
            )
        return cls(**kwargs, mean_image=mean_image)


@dataclass
class SourceFile:
    path: str
    sha256: str
    size: int

    @classmethod
    def of(cls, path: str | Path) -> "SourceFile":
        p = Path(path)
        return cls(path=p.name, sha256=sha256_file(p), size=p.stat().st_size)


@dataclass
class SourceInfo:
    """Where the weights came from: the framework and every file read, with their hashes."""

    framework: str = "resnet_ref"
    files: list[SourceFile] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "framework": self.framework,
            "files": [dataclasses.asdict(f) for f in self.files],
            "details": dict(self.details),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SourceInfo":
        return cls(
            framework=str(data.get("framework", "unknown")),
            files=[SourceFile(**f) for f in data.get("files", [])],
            details=dict(data.get("details", {})),
        )


@dataclass
class CheckpointMetadata:
    """Everything a checkpoint says about its weights, besides the weights."""

    spec: ResNetSpec
    arch: str | None = None
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    source: SourceInfo = field(default_factory=SourceInfo)
    class_order: str = IMAGENET_CLASS_ORDER
    classes: list[str] | None = None
    num_params: int | None = None
    conversion_report: dict[str, Any] = field(default_factory=dict)
    verification: dict[str, Any] = field(default_factory=dict)
    published: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)
    toolkit_version: str = __version__
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": METADATA_FORMAT_VERSION,
            "spec": self.spec.to_dict(),
            "arch": self.arch,
            "preprocessing": self.preprocessing.to_dict(),
            "source": self.source.to_dict(),
            "class_order": self.class_order,
            "classes": self.classes,
            "num_params": self.num_params,
            "conversion_report": self.conversion_report,
            "verification": self.verification,
            "published": self.published,
            "notes": self.notes,
            "toolkit_version": self.toolkit_version,
            "created": self.created,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], mean_image: np.ndarray | None = None) -> "CheckpointMetadata":
        version = data.get("format_version")
        if version != METADATA_FORMAT_VERSION:
            raise CheckpointError(
                f"metadata format_version {version!r} is not supported (this toolkit reads {METADATA_FORMAT_VERSION})"
            )
        try:
            return cls(
                spec=ResNetSpec.from_dict(data["spec"]),
                arch=data.get("arch"),
                preprocessing=Preprocessing.from_dict(data.get("preprocessing", {}), mean_image),
                source=SourceInfo.from_dict(data.get("source", {})),
                class_order=data.get("class_order", IMAGENET_CLASS_ORDER),
                classes=data.get("classes"),
                num_params=data.get("num_params"),
                conversion_report=dict(data.get("conversion_report", {})),
                verification=dict(data.get("verification", {})),
                published=dict(data.get("published", {})),
                notes=dict(data.get("notes", {})),
                toolkit_version=str(data.get("toolkit_version", "unknown")),
                created=str(data.get("created", "")),
            )
        except KeyError as exc:
            raise CheckpointError(f"metadata lacks the field {exc.args[0]!r}") from exc
        except TypeError as exc:
            raise CheckpointError(f"metadata is malformed: {exc}") from exc


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
