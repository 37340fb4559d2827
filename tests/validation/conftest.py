"""Fixtures for the validate tests: small ImageNet-layout datasets of real photos (scikit-image's
bundled samples) plus the awkward files ImageNet val really has (grayscale, CMYK, a PNG named .JPEG,
and, in its own folder, a corrupt file), tiny models, and the torchvision-style reference transforms
written here with Pillow alone, independently of `validation.transforms`.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

import skimage.data

from resnet_port.checkpoints import CheckpointMetadata, Preprocessing
from resnet_port.resnet_ref import ResNetSpec, build_model

SKIMAGE_DIR = Path(skimage.data.__file__).parent

# (class folder, file name, source photo, size or None, how to write it)
FOLDER_FILES = [
    ("n02123045", "chelsea.JPEG", "chelsea.png", None, "jpeg"),  # 451x300
    ("n02123045", "chelsea_500x375.JPEG", "chelsea.png", (500, 375), "jpeg"),  # resized 341x256: odd margin
    ("n03773504", "rocket.JPEG", "rocket.jpg", None, "jpeg"),  # portrait 427x640
    ("n03773504", "rocket_cmyk.JPEG", "rocket.jpg", (375, 500), "cmyk"),
    ("n04485082", "camera_gray.JPEG", "camera.png", (333, 480), "gray"),
    ("n07920052", "coffee.JPEG", "coffee.png", None, "jpeg"),  # 600x400
    ("n07920052", "coffee_png_inside.JPEG", "coffee.png", (640, 427), "png"),  # 256*640/427 = 383.7
]
CLASSES = sorted({f for f, *_ in FOLDER_FILES})


def load_photo(name: str) -> Image.Image:
    with Image.open(SKIMAGE_DIR / name) as image:
        return image.convert("L" if image.mode in ("L", "I", "I;16") else "RGB")


def write_image(path: Path, source: str, size: tuple[int, int] | None, kind: str) -> None:
    image = load_photo(source)
    if size is not None:
        image = image.resize(size, Image.Resampling.LANCZOS)
    if kind == "gray":
        image.convert("L").save(path, "JPEG", quality=92)
    elif kind == "cmyk":
        image.convert("RGB").convert("CMYK").save(path, "JPEG", quality=92)
    elif kind == "png":
        image.convert("RGB").save(path, "PNG")  # PNG bytes behind a .JPEG name, as in ImageNet val
    else:
        image.convert("RGB").save(path, "JPEG", quality=92)


@pytest.fixture(scope="session")
def imagefolder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("imagenet") / "val"
    for folder, name, source, size, kind in FOLDER_FILES:
        (root / folder).mkdir(parents=True, exist_ok=True)
        write_image(root / folder / name, source, size, kind)
    return root


@pytest.fixture(scope="session")
def flat_dataset(imagefolder, tmp_path_factory) -> tuple[Path, Path]:
    """The same images in Caffe's flat layout, labels in a val.txt outside the folder."""
    base = tmp_path_factory.mktemp("flat")
    root = base / "ILSVRC2012_val"
    root.mkdir()
    lines = []
    for number, (folder, name, *_rest) in enumerate(FOLDER_FILES, 1):
        out = f"ILSVRC2012_val_{number:08d}.JPEG"
        shutil.copy(imagefolder / folder / name, root / out)
        lines.append(f"{out} {CLASSES.index(folder)}")
    labels = base / "val.txt"
    labels.write_text("\n".join(lines) + "\n")
    return root, labels


@pytest.fixture(scope="session")
def corrupt_folder(imagefolder, tmp_path_factory) -> Path:
    """Two good images and a truncated JPEG."""
    root = tmp_path_factory.mktemp("corrupt") / "val"
    (root / "n00000001").mkdir(parents=True)
    (root / "n00000002").mkdir(parents=True)
    shutil.copy(imagefolder / "n02123045" / "chelsea.JPEG", root / "n00000001" / "a.JPEG")
    shutil.copy(imagefolder / "n07920052" / "coffee.JPEG", root / "n00000002" / "c.JPEG")
    data = (imagefolder / "n03773504" / "rocket.JPEG").read_bytes()
    (root / "n00000002" / "b_truncated.JPEG").write_bytes(data[: len(data) // 3])
    return root


# -- the reference transforms: torchvision's Resize / CenterCrop / TenCrop, written from its docs ---
def ref_resize(image: Image.Image, size: int, resample=Image.Resampling.BILINEAR) -> Image.Image:
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) == (w, h):
        return image
    return image.resize((new_w, new_h), resample)


def ref_center_crop(image: Image.Image, size: int) -> Image.Image:
    w, h = image.size
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def ref_five_crop(image: Image.Image, size: int) -> list[Image.Image]:
    w, h = image.size
    return [
        image.crop((0, 0, size, size)),
        image.crop((w - size, 0, w, size)),
        image.crop((0, h - size, size, h)),
        image.crop((w - size, h - size, w, h)),
        ref_center_crop(image, size),
    ]


def ref_ten_crop(image: Image.Image, size: int) -> list[Image.Image]:
    return ref_five_crop(image, size) + ref_five_crop(ImageOps.mirror(image), size)


def ref_crops(path: Path, resize: int, crop: int, crops: int) -> np.ndarray:
    """(N, crop, crop, 3) uint8 RGB, torchvision's way: ImageFolder's loader, Resize, Center/TenCrop."""
    with open(path, "rb") as handle:
        image = Image.open(io.BytesIO(handle.read())).convert("RGB")
    resized = ref_resize(image, resize)
    parts = [ref_center_crop(resized, crop)] if crops == 1 else ref_ten_crop(resized, crop)
    return np.stack([np.asarray(p) for p in parts])


# -- models -------------------------------------------------------------------------------------
TINY_SPEC = ResNetSpec(block="basic", layers=(1, 1, 1, 1), widths=(8, 16, 32, 64), stem_width=8, num_classes=1000)
SMALL_PREPROCESSING = dict(resize=64, crop=56)


def tiny_model(seed: int = 0, num_classes: int = 1000):
    torch.manual_seed(seed)
    model = build_model(TINY_SPEC.replace(num_classes=num_classes)).eval()
    # Fresh BN statistics make every logit nearly equal; random ones make the outputs depend on the input.
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
        model.fc.weight.normal_(0, 0.5)
    return model


def tiny_metadata(num_classes: int = 1000, **preprocessing) -> CheckpointMetadata:
    prep = Preprocessing(**{**SMALL_PREPROCESSING, **preprocessing})
    return CheckpointMetadata(spec=TINY_SPEC.replace(num_classes=num_classes), arch=None, preprocessing=prep)


class KnownModel(torch.nn.Module):
    """Logits = fc(per-channel mean of the crop): outputs the test can compute by hand."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3, num_classes)
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(num_classes, 3, generator=g) * 4)
            self.fc.bias.copy_(torch.randn(num_classes, generator=g))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(2, 3)))
