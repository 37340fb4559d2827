"""Each source's own evaluation protocol, as a named preset of resize and crop geometry.

The published numbers were measured with different resize code, and a port checked under the wrong
one looks a few tenths of a percent worse (or better) than it is.  A preset fixes what the source's
own eval transform does; normalisation (channel order, scale, mean, std) always comes from the
checkpoint's metadata, since it belongs to the weights.  Decoding is Pillow's for every preset.

| preset | resize (shorter side) | filter | backend | crop offsets | the source's code |
| --- | --- | --- | --- | --- | --- |
| torchvision | floor(crop / 0.875) = 256 | bilinear | Pillow (antialiased) | round half even | ``Resize(256)``, ``CenterCrop(224)`` |
| timm | floor(crop / 0.95) = 235 | bicubic | Pillow (antialiased) | round half even | ``transforms_imagenet_eval`` with its ResNet (rsb) ``pretrained_cfg`` |
| mmcls | floor(crop / 0.875) = 256 | bilinear | OpenCV (no antialiasing) | round half even | 0.x ``Resize(size=(256, -1), backend='cv2')``, ``CenterCrop(224)`` |
| gluon | floor(crop / 0.875) = 256 | bilinear | OpenCV (no antialiasing) | truncated | ``transforms.Resize(256, keep_ratio=True)``, ``CenterCrop(224)`` on mx.image |
| caffe | floor(crop / 0.875) = 256 | bilinear | Pillow (antialiased) | round half even | Kaiming He's README: shorter side 256, center 224 |

Without ``--protocol`` the geometry is the checkpoint's metadata (``resize``, ``crop``,
``interpolation``) with Pillow and torchvision's offsets, as before.  ``--crop-pct`` (resize =
floor(crop / crop_pct), timm's rule), ``--resize``, ``--crop``, ``--interpolation`` and
``--resize-backend`` override a preset's parts; mmcls's rsb configs, for instance, are
``--protocol mmcls --resize 236 --interpolation bicubic --resize-backend pil``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from resnet_port.checkpoints import Preprocessing
from resnet_port.errors import InputError

BACKENDS = ("pil", "cv2")
OFFSETS = ("round", "floor")


@dataclass(frozen=True)
class Protocol:
    name: str
    crop_pct: float
    interpolation: str
    backend: str
    offsets: str
    source: str


PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol("torchvision", 0.875, "bilinear", "pil", "round",
                 "torchvision reference scripts: Resize(256) on PIL (antialiased), CenterCrop(224)"),
        Protocol("timm", 0.95, "bicubic", "pil", "round",
                 "timm transforms_imagenet_eval, ResNet rsb pretrained_cfg (crop_pct 0.95, bicubic)"),
        Protocol("mmcls", 0.875, "bilinear", "cv2", "round",
                 "mmcls 0.x Resize(size=(256, -1), backend='cv2'), CenterCrop(224)"),
        Protocol("gluon", 0.875, "bilinear", "cv2", "floor",
                 "Gluon transforms.Resize(256, keep_ratio=True), CenterCrop(224) (mx.image: OpenCV, offsets truncated)"),
        Protocol("caffe", 0.875, "bilinear", "pil", "round",
                 "Kaiming He's release README: shorter side 256, center 224 crop (Pillow resize)"),
    )  # fmt: skip
}


@dataclass(frozen=True)
class Geometry:
    """What `CropTransform` needs, and the record of where it came from (for the JSON)."""

    resize: int
    crop: int
    interpolation: str
    backend: str
    offsets: str
    name: str | None
    crop_pct: float | None
    source: str

    def transform_options(self) -> dict[str, Any]:
        return {"resize": self.resize, "crop": self.crop, "interpolation": self.interpolation,
                "backend": self.backend, "offsets": self.offsets}  # fmt: skip

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "crop_pct": self.crop_pct, "resize_backend": self.backend,
                "crop_offsets": self.offsets, "protocol_source": self.source}  # fmt: skip


def resize_for(crop: int, crop_pct: float) -> int:
    """timm's rule: ``scale_size = math.floor(img_size / crop_pct)``."""
    return int(math.floor(crop / crop_pct))


def resolve_geometry(
    preprocessing: Preprocessing,
    protocol: str | None = None,
    *,
    crop_pct: float | None = None,
    resize: int | None = None,
    crop: int | None = None,
    interpolation: str | None = None,
    backend: str | None = None,
) -> Geometry:
    """The resize and crop of one run: explicit options over the preset over the metadata."""
    if protocol is not None and protocol not in PROTOCOLS:
        raise InputError(f"--protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}")
    if crop_pct is not None and not 0.0 < crop_pct <= 1.0:
        raise InputError(f"--crop-pct must be in (0, 1], got {crop_pct}")
    if crop_pct is not None and resize is not None:
        raise InputError("give --resize or --crop-pct, not both (the resize is floor(crop / crop_pct))")
    if backend is not None and backend not in BACKENDS:
        raise InputError(f"--resize-backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    preset = PROTOCOLS.get(protocol) if protocol else None
    crop = int(crop or preprocessing.crop)
    pct = crop_pct if crop_pct is not None else (preset.crop_pct if preset and resize is None else None)
    if resize is None:
        resize = resize_for(crop, pct) if pct is not None else int(preprocessing.resize)
    return Geometry(
        resize=int(resize),
        crop=crop,
        interpolation=interpolation or (preset.interpolation if preset else preprocessing.interpolation),
        backend=backend or (preset.backend if preset else "pil"),
        offsets=preset.offsets if preset else "round",
        name=preset.name if preset else None,
        crop_pct=pct,
        source=preset.source if preset else "the checkpoint's metadata",
    )
