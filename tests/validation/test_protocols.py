"""``--protocol`` presets: each one's resize and crop, pixel for pixel, against the library's own
transform code where it installs here (OpenCV's ``cv2.resize``; MXNet Gluon's ``transforms`` in the
peer venv; timm's ``create_transform`` from its own ``pretrained_cfg`` beside the torchvision peer),
and against the sizes and offsets of each library written out in this file.  Defaults unchanged."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import cv2  # opencv-python-headless, in the test extra
import numpy as np
import pytest
from PIL import Image

from resnet_port.checkpoints import Preprocessing, save_checkpoint
from resnet_port.errors import InputError
from resnet_port.validation.cli import main
from resnet_port.validation.protocols import PROTOCOLS, resolve_geometry
from resnet_port.validation.transforms import CropTransform
from tests.peers.python_peers import import_timm

from .conftest import FOLDER_FILES, ref_center_crop, ref_crops, ref_resize, ref_ten_crop, tiny_metadata, tiny_model

REPO_ROOT = Path(__file__).resolve().parents[2]
PEER_PYTHON = REPO_ROOT / ".venv-peer" / "bin" / "python"
FAST = ["--workers", "0", "--no-progress", "--device", "cpu"]


def rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def ours(path: Path, crops: int, protocol: str | None = None, prep: Preprocessing | None = None, **options) -> np.ndarray:
    prep = prep or Preprocessing()
    geometry = resolve_geometry(prep, protocol, **options)
    with Image.open(path) as image:
        pil = image.convert("RGB")
    return CropTransform(prep, crops, **geometry.transform_options())(pil).pixels.numpy()


def mmcls_size(h: int, w: int, short: int) -> tuple[int, int]:
    """mmcls 0.x ``Resize(size=(short, -1))``'s (width, height), as its ``_resize_img`` computes it."""
    if w < h:
        return short, int(short * h / w)
    return int(short * w / h), short


def cv2_resized(path: Path, short: int, flag) -> np.ndarray:
    array = rgb(path)
    h, w = array.shape[:2]
    size = mmcls_size(h, w, short)
    return array if size == (w, h) else cv2.resize(array, size, interpolation=flag)


def paths(imagefolder):
    return [imagefolder / f / n for f, n, *_ in FOLDER_FILES]


# -- geometry -------------------------------------------------------------------------------------
def test_defaults_stay_the_metadatas():
    prep = Preprocessing(resize=320, crop=288, interpolation="bicubic")
    g = resolve_geometry(prep)
    assert (g.resize, g.crop, g.interpolation, g.backend, g.offsets, g.name) == (320, 288, "bicubic", "pil", "round", None)


def test_preset_sizes_follow_their_sources_rules():
    prep = Preprocessing()
    expected = {"torchvision": (256, "bilinear", "pil", "round"), "timm": (235, "bicubic", "pil", "round"),
                "mmcls": (256, "bilinear", "cv2", "round"), "gluon": (256, "bilinear", "cv2", "floor"),
                "caffe": (256, "bilinear", "pil", "round")}  # fmt: skip
    assert set(expected) == set(PROTOCOLS)
    for name, (resize, interp, backend, offsets) in expected.items():
        g = resolve_geometry(prep, name)
        assert (g.resize, g.crop, g.interpolation, g.backend, g.offsets) == (resize, 224, interp, backend, offsets), name
    # timm's rule at other test sizes: floor(img_size / crop_pct).
    assert resolve_geometry(prep, "timm", crop=288, crop_pct=1.0).resize == 288
    assert resolve_geometry(prep, "timm", crop=288).resize == math.floor(288 / 0.95) == 303
    assert resolve_geometry(prep, "torchvision", crop_pct=0.9).resize == 248
    # mmcls rsb: resize 236 bicubic on Pillow.
    g = resolve_geometry(prep, "mmcls", resize=236, interpolation="bicubic", backend="pil")
    assert (g.resize, g.interpolation, g.backend) == (236, "bicubic", "pil")


@pytest.mark.parametrize("kwargs,match", [(dict(crop_pct=0.0), "crop-pct"), (dict(crop_pct=1.5), "crop-pct"),
                                          (dict(crop_pct=0.9, resize=256), "not both"), (dict(backend="skimage"), "backend")])
def test_bad_protocol_options(kwargs, match):
    with pytest.raises(InputError, match=match):
        resolve_geometry(Preprocessing(), "timm", **kwargs)


# -- OpenCV (mmcls backend='cv2') -----------------------------------------------------------------
@pytest.mark.parametrize("crops", [1, 10])
@pytest.mark.parametrize("interpolation,flag", [("bilinear", cv2.INTER_LINEAR), ("bicubic", cv2.INTER_CUBIC)])
def test_cv2_backend_equals_opencv(imagefolder, crops, interpolation, flag):
    for path in paths(imagefolder):
        resized = Image.fromarray(cv2_resized(path, 256, flag))
        cut = [ref_center_crop(resized, 224)] if crops == 1 else ref_ten_crop(resized, 224)
        expected = np.stack([np.asarray(c) for c in cut])
        got = ours(path, crops, "mmcls", interpolation=interpolation)
        assert np.array_equal(got, expected), path.name


def test_pitfall_cv2_is_not_pillow(imagefolder):
    """Shrinking without antialiasing (OpenCV) and with it (Pillow) are different inputs."""
    path = imagefolder / "n07920052" / "coffee.JPEG"  # 600x400 -> 384x256
    cv2_crop, pil_crop = ours(path, 1, "mmcls"), ours(path, 1, "torchvision")
    assert np.array_equal(pil_crop, ref_crops(path, 256, 224, 1))
    assert np.abs(cv2_crop.astype(int) - pil_crop).max() > 20


def test_bgr_checkpoint_gets_the_same_pixels_reversed(imagefolder):
    path = imagefolder / "n03773504" / "rocket.JPEG"
    rgb_crops = ours(path, 10, "gluon")
    bgr_crops = ours(path, 10, "gluon", prep=Preprocessing("BGR", 255.0, (104.0, 117.0, 123.0), None))
    assert np.array_equal(bgr_crops, rgb_crops[..., ::-1])


# -- Gluon: OpenCV resize, truncated center offsets ---------------------------------------------------
def test_gluon_offsets_are_truncated(imagefolder):
    path = imagefolder / "n03773504" / "rocket.JPEG"  # 640x427 -> 383x256: horizontal margin 159
    resized = cv2_resized(path, 256, cv2.INTER_LINEAR)
    h, w = resized.shape[:2]
    x0, y0 = int((w - 224) / 2), int((h - 224) / 2)  # mx.image.center_crop
    expected = resized[y0 : y0 + 224, x0 : x0 + 224][None]
    assert np.array_equal(ours(path, 1, "gluon"), expected)
    assert int(round((w - 224) / 2)) != x0  # torchvision's offset differs here: the pitfall is live
    assert not np.array_equal(ours(path, 1, "mmcls"), expected)


GLUON_SCRIPT = """
import sys, numpy as np, mxnet as mx
from mxnet.gluon.data.vision import transforms as T
data = np.load(sys.argv[1])
t = T.Compose([T.Resize(256, keep_ratio=True), T.CenterCrop(224)])
np.savez(sys.argv[2], **{k: t(mx.nd.array(data[k], dtype="uint8")).asnumpy() for k in data.files})
"""


@pytest.mark.peer
def test_gluon_preset_equals_real_mxnet_gluon_transforms(imagefolder, tmp_path):
    """The real ``mxnet.gluon.data.vision.transforms`` (MXNet 1.9.1 in the peer venv) on the same
    decoded pixels: equal to the byte."""
    if not PEER_PYTHON.exists():
        pytest.fail(f"{PEER_PYTHON} is missing: set up the peer venv (tests/peers/setup_peer_env.sh)")
    arrays = {f"i{k}": rgb(p) for k, p in enumerate(paths(imagefolder))}
    np.savez(tmp_path / "in.npz", **arrays)
    script = tmp_path / "gluon.py"
    script.write_text(GLUON_SCRIPT)
    run = subprocess.run([str(PEER_PYTHON), str(script), str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    theirs = np.load(tmp_path / "out.npz")
    for k, path in enumerate(paths(imagefolder)):
        assert np.array_equal(ours(path, 1, "gluon")[0], theirs[f"i{k}"]), path.name


# -- timm: Pillow bicubic at floor(crop / crop_pct) -------------------------------------------------
@pytest.mark.parametrize("crop,crop_pct", [(224, None), (288, 1.0), (224, 0.875)])
def test_timm_preset_by_independent_computation(imagefolder, crop, crop_pct):
    """Written here from timm's transforms_imagenet_eval: Resize(floor(crop / crop_pct)) (torchvision's
    shorter-side resize, bicubic, on Pillow) then CenterCrop(crop)."""
    pct = crop_pct or 0.95
    for path in paths(imagefolder):
        with Image.open(path) as image:
            resized = ref_resize(image.convert("RGB"), math.floor(crop / pct), Image.Resampling.BICUBIC)
        expected = np.asarray(ref_center_crop(resized, crop))[None]
        assert np.array_equal(ours(path, 1, "timm", crop=crop, crop_pct=crop_pct), expected), path.name


@pytest.fixture(scope="module")
def timm_peer():
    """timm's data package beside the torchvision peer (PEERS.md): both paths must be set."""
    timm = import_timm()
    from timm.data import create_transform, resolve_data_config

    return timm, create_transform, resolve_data_config


@pytest.mark.peer
@pytest.mark.parametrize("weights,test_size", [("resnet50.a1_in1k", False), ("resnet50.a1_in1k", True), ("resnet50.tv_in1k", False)])
def test_timm_preset_equals_real_timm_transforms(timm_peer, imagefolder, weights, test_size):
    """timm's own ``create_transform`` from its own ``pretrained_cfg``: the timm preset for the rsb
    weights, and with --crop/--crop-pct/--interpolation for its test size and for the tv weights."""
    timm, create_transform, resolve_data_config = timm_peer
    cfg = timm.models.get_pretrained_cfg(weights).to_dict()
    if test_size:
        cfg["input_size"], cfg["crop_pct"] = cfg["test_input_size"], cfg.get("test_crop_pct", cfg["crop_pct"])
    config = resolve_data_config({}, pretrained_cfg=cfg)
    transform = create_transform(**config, use_prefetcher=True)  # uint8 CHW, no normalisation
    crop = config["input_size"][-1]
    options = {} if weights == "resnet50.a1_in1k" and not test_size else {"crop": crop, "crop_pct": config["crop_pct"]}
    if config["interpolation"] != "bicubic":
        options["interpolation"] = config["interpolation"]
    for path in paths(imagefolder):
        with Image.open(path) as image:
            theirs = transform(image.convert("RGB")).permute(1, 2, 0).numpy()
        assert np.array_equal(ours(path, 1, "timm", **options)[0], theirs), (path.name, weights)


# -- the command ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    model = tiny_model()
    save_checkpoint(path, model.spec, model.state_dict(), tiny_metadata())
    return path


def test_protocol_recorded_in_json_and_default_unchanged(tiny_ckpt, imagefolder, tmp_path):
    out = tmp_path / "r.json"
    assert main([str(tiny_ckpt), "--data", str(imagefolder), "--json", str(out), *FAST]) == 0
    default = json.loads(out.read_text())
    p = default["protocol"]
    assert (p["name"], p["resize"], p["crop"], p["resize_backend"], p["crop_offsets"]) == (None, 64, 56, "pil", "round")
    assert main([str(tiny_ckpt), "--data", str(imagefolder), "--protocol", "gluon", "--json", str(out), *FAST]) == 0
    p = json.loads(out.read_text())["protocol"]
    assert (p["name"], p["resize"], p["crop"], p["resize_backend"], p["crop_offsets"], p["crop_pct"]) == ("gluon", 64, 56, "cv2", "floor", 0.875)
    assert "opencv" in p["resize_impl"]
    assert main([str(tiny_ckpt), "--data", str(imagefolder), "--protocol", "timm", "--crop-pct", "0.7", "--json", str(out), *FAST]) == 0
    p = json.loads(out.read_text())["protocol"]
    assert (p["name"], p["resize"], p["interpolation"], p["crop_pct"]) == ("timm", 80, "bicubic", 0.7)


def test_bad_crop_pct_exits_2(tiny_ckpt, imagefolder, capsys):
    assert main([str(tiny_ckpt), "--data", str(imagefolder), "--crop-pct", "1.2", *FAST]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(err) == 1 and "--crop-pct" in err[0]
