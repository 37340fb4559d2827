"""Crops against the real torchvision ``Resize`` / ``CenterCrop`` / ``TenCrop``, where it can be loaded.

torchvision does not install beside the toolkit's CPU torch (reference/PEERS.md): its wheel is the
CUDA build, and a plain install replaces torch.  Installed apart (``pip install --no-deps --target
DIR torchvision==0.28.0``) with ``RESNET_PORT_TORCHVISION_PATH=DIR``, its transforms run once two
operators its compiled library would register are defined.  Without it this test is skipped; the
Pillow re-implementation in conftest.py is what CI checks (run by hand on 2026-11-23: 864 cases,
no pixel different).
"""

from __future__ import annotations


import numpy as np
import pytest
from PIL import Image

from resnet_port.checkpoints import Preprocessing
from resnet_port.validation.decode import decode_image
from resnet_port.validation.transforms import CropTransform

from .conftest import FOLDER_FILES
from tests.peers.python_peers import import_torchvision

pytestmark = pytest.mark.peer


@pytest.fixture(scope="module")
def tv_transforms():
    import_torchvision()
    from torchvision import transforms

    return transforms


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
@pytest.mark.parametrize("resize,crop", [(256, 224), (320, 288), (64, 56)])
def test_crops_equal_real_torchvision(tv_transforms, imagefolder, resize, crop, interpolation):
    T = tv_transforms
    mode = T.InterpolationMode.BILINEAR if interpolation == "bilinear" else T.InterpolationMode.BICUBIC
    for folder, name, *_ in FOLDER_FILES:
        path = imagefolder / folder / name
        with Image.open(path) as raw:
            pil = raw.convert("RGB")
        for crops, cut in ((1, T.CenterCrop(crop)), (10, T.TenCrop(crop))):
            ours = CropTransform(Preprocessing(), crops, resize, crop, interpolation)(decode_image(path)).pixels.numpy()
            theirs = T.Compose([T.Resize(resize, interpolation=mode), cut])(pil)
            theirs = np.stack([np.asarray(c) for c in (theirs if crops == 10 else [theirs])])
            assert np.array_equal(ours, theirs), (name, crops)


@pytest.mark.parametrize("protocol", ["torchvision", "caffe", "timm"])
def test_pillow_presets_equal_real_torchvision(tv_transforms, imagefolder, protocol):
    """The Pillow presets are torchvision's Resize(floor(224 / crop_pct)) and Center/TenCrop(224)."""
    from resnet_port.validation.protocols import PROTOCOLS, resolve_geometry

    T = tv_transforms
    preset = PROTOCOLS[protocol]
    mode = T.InterpolationMode.BILINEAR if preset.interpolation == "bilinear" else T.InterpolationMode.BICUBIC
    geometry = resolve_geometry(Preprocessing(), protocol)
    for folder, name, *_ in FOLDER_FILES:
        path = imagefolder / folder / name
        with Image.open(path) as raw:
            pil = raw.convert("RGB")
        for crops, cut in ((1, T.CenterCrop(224)), (10, T.TenCrop(224))):
            ours = CropTransform(Preprocessing(), crops, **geometry.transform_options())(decode_image(path)).pixels.numpy()
            theirs = T.Compose([T.Resize(int(224 / preset.crop_pct), interpolation=mode), cut])(pil)
            theirs = np.stack([np.asarray(c) for c in (theirs if crops == 10 else [theirs])])
            assert np.array_equal(ours, theirs), (name, crops, protocol)
