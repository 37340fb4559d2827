"""The inputs both sides see: one underlying RGB image in [0, 1], put through each side's own
preprocessing.

Two ports of one network may expect different input conventions (Caffe: BGR 0-255 minus a mean
image; torchvision: RGB 0-1 with mean/std).  Feeding both the same tensor would compare the
conventions, not the networks; feeding both the same *image*, each through the pipeline its
metadata states, compares what a user would see.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from resnet_port.checkpoints import Preprocessing
from resnet_port.errors import InputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff")


def seeded_images(count: int, size: int, seed: int) -> list[torch.Tensor]:
    """``count`` RGB images (3, size, size) in [0, 1]: smooth structure plus fine noise.

    Pure noise would average away in the first layers; a coarse random field upsampled gives
    edges and regions as photographs have, the noise keeps every pixel informative.
    """
    generator = torch.Generator().manual_seed(int(seed))
    coarse = torch.rand(count, 3, 8, 8, generator=generator, dtype=torch.float64)
    smooth = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    noise = torch.rand(count, 3, size, size, generator=generator, dtype=torch.float64)
    images = (0.8 * smooth + 0.2 * noise).clamp(0.0, 1.0)
    return list(images)


@dataclass
class InputSet:
    """The images both sides see: in memory (seeded, RGB in [0, 1]) or files on disk."""

    description: str
    images: list[torch.Tensor] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images) or len(self.files)

    def batch(self, prep: Preprocessing) -> torch.Tensor:
        """(N, C, crop, crop) float32, through ``prep``."""
        if self.files:
            return image_files_batch(self.files, prep)
        return preprocess(self.images, prep)


def seeded_inputs(count: int, size: int, seed: int) -> InputSet:
    return InputSet(f"seeded inputs, seed {seed}", images=seeded_images(count, size, seed))


def image_folder_inputs(folder: str | Path, limit: int) -> InputSet:
    """Up to ``limit`` images of ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: --images needs a folder of images")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not files:
        raise InputError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    return InputSet(f"images from {folder}", files=files)


def image_files_batch(files: list[Path], prep: Preprocessing) -> torch.Tensor:
    """Real images go through `validation`'s pipeline (decode, resize, centre crop, normalise):
    the crops `validate` evaluates on are the crops audited."""
    from resnet_port.validation import BadImageError, preprocess_image

    crops = []
    for file in files:
        try:
            crops.append(preprocess_image(file, prep, crops=1))
        except (BadImageError, OSError) as exc:
            raise InputError(f"{file}: not a readable image ({exc})") from exc
    return torch.cat(crops).float()


def preprocess(images: list[torch.Tensor], prep: Preprocessing) -> torch.Tensor:
    """(N, C, crop, crop) float32: resize the shorter side, centre crop, order, scale, mean, std."""
    batch = [_geometry(image, prep) for image in images]
    x = torch.stack(batch)
    if prep.channel_order == "BGR":
        x = x.flip(1)
    x = x * prep.pixel_max
    if prep.mean_image is not None:
        mean_image = torch.as_tensor(prep.mean_image, dtype=torch.float64)
        if mean_image.shape[0] != x.shape[1]:
            raise InputError(
                f"the mean image has {mean_image.shape[0]} channels, the network takes {x.shape[1]}"
            )
        if tuple(mean_image.shape[1:]) != tuple(x.shape[2:]):
            mean_image = F.interpolate(mean_image[None], size=x.shape[2:], mode="bilinear", align_corners=False)[0]
        x = x - mean_image
    elif prep.mean is not None:
        x = x - torch.tensor(prep.mean, dtype=torch.float64).view(1, -1, 1, 1)
    if prep.std is not None:
        x = x / torch.tensor(prep.std, dtype=torch.float64).view(1, -1, 1, 1)
    return x.float()


def _geometry(image: torch.Tensor, prep: Preprocessing) -> torch.Tensor:
    height, width = image.shape[-2:]
    scale = prep.resize / min(height, width)
    size = (max(prep.crop, round(height * scale)), max(prep.crop, round(width * scale)))
    if size != (height, width):
        mode = prep.interpolation
        antialias = mode in ("bilinear", "bicubic")
        kwargs = {"align_corners": False} if antialias else {}
        image = F.interpolate(image[None], size=size, mode=mode, antialias=antialias, **kwargs)[0]
        image = image.clamp(0.0, 1.0)
    top = (image.shape[-2] - prep.crop) // 2
    left = (image.shape[-1] - prep.crop) // 2
    return image[:, top : top + prep.crop, left : left + prep.crop]
