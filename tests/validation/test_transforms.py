"""Crop geometry against torchvision's transforms re-written with Pillow in conftest, and the
pitfalls that move the numbers when the geometry is done the obvious-but-wrong way."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps

from resnet_port.checkpoints import Preprocessing
from resnet_port.validation.decode import decode_image
from resnet_port.validation.transforms import CropTransform, crop_boxes, resize_shorter, take_crops

from .conftest import FOLDER_FILES, ref_center_crop, ref_crops, ref_resize, ref_ten_crop


def all_images(root):
    return [root / folder / name for folder, name, *_ in FOLDER_FILES]


@pytest.mark.parametrize("crops", [1, 10])
@pytest.mark.parametrize("resize,crop", [(256, 224), (64, 56), (288, 288)])
def test_crops_equal_torchvision_reference(imagefolder, crops, resize, crop):
    transform = CropTransform(Preprocessing(), crops, resize, crop)
    for path in all_images(imagefolder):
        ours = transform(decode_image(path)).pixels.numpy()
        ref = ref_crops(path, resize, crop, crops)
        assert ours.shape == ref.shape, path
        assert np.array_equal(ours, ref), f"{path.name}: crops differ from torchvision's"


def coordinate_image(width: int, height: int) -> Image.Image:
    """Every pixel says where it is, so equal crops mean equal windows."""
    x = np.arange(width)[None, :].repeat(height, 0)
    y = np.arange(height)[:, None].repeat(width, 1)
    rgb = np.stack([x % 256, y % 256, (x // 256) * 16 + y // 256], axis=-1).astype(np.uint8)
    return Image.fromarray(rgb)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 700), st.integers(1, 700), st.integers(1, 300), st.sampled_from([1, 10]))
def test_crop_windows_match_reference_for_any_size(width, height, crop, crops):
    crop = min(crop, width, height)
    image = coordinate_image(width, height)
    tensor = torch.from_numpy(np.array(image))
    ours = take_crops(tensor, crop_boxes(height, width, crop, crops)).numpy()
    parts = [ref_center_crop(image, crop)] if crops == 1 else ref_ten_crop(image, crop)
    assert np.array_equal(ours, np.stack([np.asarray(p) for p in parts]))


@settings(max_examples=40, deadline=None)
@given(st.integers(8, 900), st.integers(8, 900), st.integers(4, 300))
def test_resized_size_is_torchvision_formula(width, height, size):
    image = Image.new("RGB", (width, height))
    assert resize_shorter(image, size).size == ref_resize(image, size).size


def test_crops_are_channels_last_views_of_one_copy(imagefolder):
    pixels = CropTransform(Preprocessing(), 10)(decode_image(imagefolder / "n02123045" / "chelsea.JPEG")).pixels
    assert pixels.shape == (10, 224, 224, 3) and pixels.dtype == torch.uint8
    assert pixels.permute(0, 3, 1, 2).is_contiguous(memory_format=torch.channels_last)


def test_bgr_order_reverses_channels(imagefolder):
    path = imagefolder / "n07920052" / "coffee.JPEG"
    rgb = CropTransform(Preprocessing("RGB"), 1)(decode_image(path)).pixels
    bgr = CropTransform(Preprocessing("BGR", 255.0, (104.0, 117.0, 123.0), None), 1)(decode_image(path)).pixels
    assert torch.equal(bgr, rgb.flip(-1))


# -- pitfalls: each wrong way is written here and shown to move the pixels ---------------------
def mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def test_pitfall_resize_without_antialias(imagefolder):
    """torch's interpolate without antialias (or cv2's INTER_LINEAR) is not Pillow's bilinear."""
    path = imagefolder / "n07920052" / "coffee.JPEG"  # 600x400 -> 384x256
    ours = CropTransform(Preprocessing(), 1)(decode_image(path)).pixels[0].numpy()
    image = torch.from_numpy(np.array(decode_image(path))).permute(2, 0, 1)[None].float()
    w, h = ref_resize(decode_image(path), 256).size
    wrong = torch.nn.functional.interpolate(image, size=(h, w), mode="bilinear", align_corners=False, antialias=False)
    wrong = wrong.round().clamp(0, 255).byte()[0].permute(1, 2, 0).numpy()
    top, left = int(round((h - 224) / 2)), int(round((w - 224) / 2))
    wrong_crop = wrong[top : top + 224, left : left + 224]
    assert mean_abs(ours, wrong_crop) > 1.0, "aliased resize should differ visibly"
    assert np.array_equal(ours, ref_crops(path, 256, 224, 1)[0])


def test_pitfall_long_side_rounded_instead_of_truncated(imagefolder):
    """640x427: 256 * 640 / 427 = 383.7; torchvision truncates to 383, rounding gives 384."""
    path = imagefolder / "n07920052" / "coffee_png_inside.JPEG"
    image = decode_image(path)
    assert image.size == (640, 427)
    ours = CropTransform(Preprocessing(), 1)(image).pixels[0].numpy()
    wrong = image.resize((round(256 * 640 / 427), 256), Image.Resampling.BILINEAR)
    wrong_crop = np.asarray(ref_center_crop(wrong, 224))
    assert mean_abs(ours, wrong_crop) > 0.5
    assert np.array_equal(ours, ref_crops(path, 256, 224, 1)[0])


@pytest.mark.parametrize(
    "wrong_offset",
    [lambda m: m // 2, lambda m: int(m / 2 + 0.5)],
    ids=["floor", "round_half_up"],
)
def test_pitfall_center_offset_rounding(imagefolder, wrong_offset):
    """A 117 or 115 pixel margin: Python's round() halves to even (58, 58); floor gives 58 and 57,
    round-half-up 59 and 58.  Some ImageNet widths hit each; the crop then shifts a pixel."""
    path = imagefolder / "n02123045" / "chelsea.JPEG"
    moved = []
    for width in (500 * 256 // 375, 339):  # margins 117 and 115 once resized
        image = decode_image(path).resize((width, 256), Image.Resampling.BILINEAR)
        ours = CropTransform(Preprocessing(), 1)(image).pixels[0].numpy()
        assert np.array_equal(ours, np.asarray(ref_center_crop(image, 224)))
        left = wrong_offset(width - 224)
        wrong = np.asarray(image)[16:240, left : left + 224]
        moved.append(mean_abs(ours, wrong))
    assert max(moved) > 1.0, moved


def test_pitfall_flipped_center_is_not_flip_of_center(imagefolder):
    """TenCrop takes the center of the flipped image; with an odd margin that is not the mirror of
    the center crop but a window one pixel over."""
    image = decode_image(imagefolder / "n02123045" / "chelsea.JPEG").resize((341, 256), Image.Resampling.BILINEAR)
    ours = CropTransform(Preprocessing(), 10)(image).pixels.numpy()
    naive = np.asarray(ImageOps.mirror(ref_center_crop(image, 224)))
    assert mean_abs(ours[9], naive) > 1.0
    assert np.array_equal(ours[9], np.asarray(ref_ten_crop(image, 224)[9]))
