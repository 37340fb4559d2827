"""Resize and crop exactly as torchvision's ``Resize(size)`` / ``CenterCrop`` / ``TenCrop`` do on a
Pillow image, with the crops taken as views of one decoded, resized tensor.

The published numbers depend on these details, so each is written out:

- Resize: the shorter side becomes ``size`` and the longer ``int(size * long / short)`` (truncated,
  not rounded); an image already at that size is left untouched; Pillow's filter does the work, and
  Pillow antialiases when it shrinks (its bilinear filter widens its support by the scale factor),
  which ``torch.nn.functional.interpolate(antialias=False)`` does not.
- Center crop: top ``int(round((h - crop) / 2))``, left likewise.  Python's ``round`` rounds halves to
  even, so a 117-pixel margin puts the crop at 58, not 59 (and not ``floor`` either when the margin
  is 115 -> 58).
- Ten crops: the four corners and the center, then the same five taken from the horizontally
  flipped image.  The flipped image's center crop is not the flip of the center crop when the
  margin is odd (rounding happens on the flipped coordinates), so each flipped crop is the flip of
  the original crop at the mirrored offset ``w - left - crop``.

Other sources' protocols (`validation.protocols`) change two of these: the resize can be OpenCV's
``cv2.resize`` (no antialiasing when shrinking: mmcls's ``backend='cv2'``, Gluon's mx.image), and
the center offset can be truncated instead of rounded (Gluon's ``center_crop``: ``int((w - cw) / 2)``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from resnet_port.checkpoints import Preprocessing
from resnet_port.errors import InputError

PIL_FILTERS = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}
CROP_COUNTS = (1, 10)
RESIZE_BACKENDS = ("pil", "cv2")
CROP_OFFSETS = ("round", "floor")


@dataclass(frozen=True)
class CropBox:
    """One crop window on the resized image; ``flip`` mirrors its pixels left to right."""

    top: int
    left: int
    size: int
    flip: bool = False


def resized_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) after torchvision's ``Resize(size)``: shorter side ``size``, longer truncated."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def resize_shorter(image: Image.Image, size: int, interpolation: str = "bilinear") -> Image.Image:
    """torchvision's ``Resize(size, interpolation)`` on a Pillow image."""
    new_w, new_h = resized_size(image.width, image.height, size)
    if (new_w, new_h) == image.size:
        return image
    return image.resize((new_w, new_h), PIL_FILTERS[interpolation])


def resize_shorter_cv2(array: np.ndarray, size: int, interpolation: str = "bilinear") -> np.ndarray:
    """mmcls's ``Resize(size=(size, -1), backend='cv2')`` / Gluon's ``Resize(size, keep_ratio=True)``
    on an (H, W, 3) uint8 array: the same sizes as `resized_size`, OpenCV's filter (no antialiasing)."""
    cv2 = _cv2()
    height, width = array.shape[:2]
    new_w, new_h = resized_size(width, height, size)
    if (new_w, new_h) == (width, height):
        return array
    return cv2.resize(array, (new_w, new_h), interpolation=CV2_FILTERS[interpolation](cv2))


CV2_FILTERS = {
    "bilinear": lambda cv2: cv2.INTER_LINEAR,
    "bicubic": lambda cv2: cv2.INTER_CUBIC,
    "nearest": lambda cv2: cv2.INTER_NEAREST,
}


def _cv2():
    try:
        import cv2
    except ImportError as exc:
        raise InputError("--resize-backend cv2 needs OpenCV: pip install opencv-python-headless") from exc
    cv2.setNumThreads(1)  # DataLoader workers are the parallelism; OpenCV's own threads would oversubscribe
    return cv2


def center_offset(length: int, crop: int, offsets: str = "round") -> int:
    """torchvision ``CenterCrop``'s offset: Python's round-half-to-even of the margin's half;
    ``offsets="floor"``: truncated, as Gluon's ``center_crop`` does."""
    if offsets == "floor":
        return (length - crop) // 2
    return int(round((length - crop) / 2.0))


def crop_boxes(height: int, width: int, crop: int, crops: int, offsets: str = "round") -> list[CropBox]:
    """The windows of the 1-crop (center) or 10-crop protocol, in torchvision's ``TenCrop`` order:
    top-left, top-right, bottom-left, bottom-right, center, then those five of the flipped image."""
    if crop > height or crop > width:
        raise InputError(f"a {crop}x{crop} crop does not fit a {width}x{height} resized image")
    center = CropBox(center_offset(height, crop, offsets), center_offset(width, crop, offsets), crop)
    if crops == 1:
        return [center]
    if crops != 10:
        raise InputError(f"crops must be 1 or 10, got {crops}")
    bottom, right = height - crop, width - crop
    five = [CropBox(0, 0, crop), CropBox(0, right, crop), CropBox(bottom, 0, crop), CropBox(bottom, right, crop), center]
    # On the flipped image, offsets (and the center's rounding) are taken in flipped coordinates.
    flipped = [CropBox(b.top, b.left, crop) for b in five[:4]]
    flipped.append(CropBox(center.top, center_offset(width, crop, offsets), crop))
    mirrored = [CropBox(b.top, width - b.left - crop, crop, flip=True) for b in flipped]
    return five + mirrored


def take_crops(hwc: torch.Tensor, boxes: list[CropBox]) -> torch.Tensor:
    """Stack the windows of an (H, W, C) tensor into (N, crop, crop, C); each window is a view until
    the one copy ``stack`` makes.  The result, permuted to NCHW, is already channels_last."""
    views = []
    for box in boxes:
        view = hwc[box.top : box.top + box.size, box.left : box.left + box.size]
        views.append(view.flip(1) if box.flip else view)
    return torch.stack(views)


def image_to_hwc(image: Image.Image, channel_order: str = "RGB") -> torch.Tensor:
    """A uint8 (H, W, 3) tensor of an RGB Pillow image, in the model's channel order."""
    array = np.array(image, dtype=np.uint8)  # a writable copy: torch warns on Pillow's read-only buffer
    if channel_order == "BGR":
        array = np.ascontiguousarray(array[:, :, ::-1])
    return torch.from_numpy(array)


@dataclass
class CropSet:
    """The crops of one image before normalisation: uint8 (N, crop, crop, 3) in the model's channel
    order, and, when the mean image must follow the image's geometry, its float crops alike."""

    pixels: torch.Tensor
    mean_crops: torch.Tensor | None = None


@dataclass
class CropTransform:
    """Decoded RGB image -> `CropSet` for one protocol.  Picklable, so it runs in DataLoader workers.

    ``resize``, ``crop`` and ``interpolation`` default to the checkpoint's preprocessing;
    ``backend`` (``pil`` or ``cv2``) and ``offsets`` (``round`` or ``floor``) to torchvision's way.
    """

    preprocessing: Preprocessing
    crops: int = 1
    resize: int | None = None
    crop: int | None = None
    interpolation: str | None = None
    backend: str = "pil"
    offsets: str = "round"

    def __post_init__(self) -> None:
        p = self.preprocessing
        self.resize = int(self.resize or p.resize)
        self.crop = int(self.crop or p.crop)
        self.interpolation = self.interpolation or p.interpolation
        if self.crops not in CROP_COUNTS:
            raise InputError(f"crops must be 1 or 10, got {self.crops}")
        if self.interpolation not in PIL_FILTERS:
            raise InputError(f"interpolation must be one of {', '.join(PIL_FILTERS)}, got {self.interpolation!r}")
        if self.backend not in RESIZE_BACKENDS:
            raise InputError(f"resize backend must be one of {', '.join(RESIZE_BACKENDS)}, got {self.backend!r}")
        if self.offsets not in CROP_OFFSETS:
            raise InputError(f"crop offsets must be one of {', '.join(CROP_OFFSETS)}, got {self.offsets!r}")
        if self.backend == "cv2":
            _cv2()  # missing OpenCV is an error before any worker starts
        if not 0 < self.crop <= self.resize:
            raise InputError(f"crop {self.crop} must be positive and at most the resize {self.resize}")
        self._mean_cache: dict[tuple[int, int], torch.Tensor] = {}

    @property
    def mean_image_mode(self) -> str | None:
        """How a mean image meets the crops (None without one):

        - ``"per_crop"``: the mean is the crop's size and is subtracted from each crop as is (Kaiming
          He's release: ``Crop(img) - mean``, flipped crops included);
        - ``"image_geometry"``: its shorter side is the resize size, so it describes the resized
          image (the older Caffe 256x256 mean): it is resized like the image and cut with the same
          windows and flips;
        - ``"resized_to_crop"``: any other size is resized to the crop's, then used per crop.
        """
        image = self.preprocessing.mean_image
        if image is None:
            return None
        height, width = image.shape[1:]
        if (height, width) == (self.crop, self.crop):
            return "per_crop"
        if min(height, width) == self.resize:
            return "image_geometry"
        return "resized_to_crop"

    @property
    def mean_follows_geometry(self) -> bool:
        return self.mean_image_mode == "image_geometry"

    def __call__(self, image: Image.Image) -> CropSet:
        if self.backend == "cv2":
            array = resize_shorter_cv2(np.array(image, dtype=np.uint8), self.resize, self.interpolation)
            if self.preprocessing.channel_order == "BGR":
                array = array[:, :, ::-1]
            hwc = torch.from_numpy(np.ascontiguousarray(array))
        else:
            resized = resize_shorter(image, self.resize, self.interpolation)
            hwc = image_to_hwc(resized, self.preprocessing.channel_order)
        boxes = crop_boxes(hwc.shape[0], hwc.shape[1], self.crop, self.crops, self.offsets)
        mean_crops = None
        if self.mean_follows_geometry:
            mean_crops = take_crops(self._mean_at(hwc.shape[0], hwc.shape[1]), boxes)
        return CropSet(take_crops(hwc, boxes), mean_crops)

    def _mean_at(self, height: int, width: int) -> torch.Tensor:
        """The mean image resized to (height, width), as (H, W, C) float; cached per size."""
        key = (height, width)
        if key not in self._mean_cache:
            if len(self._mean_cache) > 64:
                self._mean_cache.clear()
            mean = torch.from_numpy(np.asarray(self.preprocessing.mean_image, dtype=np.float32))[None]
            if tuple(mean.shape[2:]) != key:
                mean = torch.nn.functional.interpolate(mean, size=key, mode="bilinear", align_corners=False, antialias=True)
            self._mean_cache[key] = mean[0].permute(1, 2, 0).contiguous()
        return self._mean_cache[key]


class Normalizer:
    """uint8 crops -> the model's input, in one pass per batch: ``(x * pixel_max / 255 - mean) / std``.

    Takes (B, H, W, C) and returns (B, C, H, W) float32 in channels_last memory (or contiguous when
    ``channels_last`` is false).  A mean image is subtracted from every crop, flipped or not, as
    Kaiming He's release does (``Crop(img) - mean``), resized to the crop's size first if it differs;
    or, when `CropTransform` cut it along with the image, its crops are passed in as ``mean_crops``.
    """

    def __init__(self, preprocessing: Preprocessing, device: torch.device | str = "cpu") -> None:
        p = preprocessing
        self.scale = p.pixel_max / 255.0
        device = torch.device(device)
        channels = 3
        self.mean = torch.tensor(p.mean if p.mean is not None else (0.0,) * channels, device=device).view(1, 1, 1, -1)
        std = torch.tensor(p.std if p.std is not None else (1.0,) * channels, device=device)
        self.inv_std = (1.0 / std).view(1, 1, 1, -1)
        self.mean_image = None
        self._resized_means: dict[tuple[int, int], torch.Tensor] = {}
        if p.mean_image is not None:
            image = torch.from_numpy(np.asarray(p.mean_image, dtype=np.float32))
            self.mean_image = image.permute(1, 2, 0).contiguous().to(device)[None]  # (1, H, W, C)
            self.mean = torch.zeros_like(self.mean)  # the mean image replaces the mean values

    def __call__(
        self, pixels: torch.Tensor, mean_crops: torch.Tensor | None = None, channels_last: bool = True
    ) -> torch.Tensor:
        x = pixels.to(torch.float32).mul_(self.scale)
        if mean_crops is not None:
            x.sub_(mean_crops)
        elif self.mean_image is not None:
            x.sub_(self._mean_for(tuple(x.shape[1:3])))
        x.sub_(self.mean).mul_(self.inv_std)
        x = x.permute(0, 3, 1, 2)
        return x if channels_last else x.contiguous()

    def _mean_for(self, size: tuple[int, int]) -> torch.Tensor:
        """The mean image at the crop's size: as stored, or resized (bilinear, antialiased) once."""
        if tuple(self.mean_image.shape[1:3]) == size:
            return self.mean_image
        if size not in self._resized_means:
            chw = self.mean_image[0].permute(2, 0, 1)[None]
            resized = torch.nn.functional.interpolate(chw, size=size, mode="bilinear", align_corners=False, antialias=True)
            self._resized_means[size] = resized[0].permute(1, 2, 0).contiguous()[None]
        return self._resized_means[size]
