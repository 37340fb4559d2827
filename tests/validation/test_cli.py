"""The ``validate`` command: a run on the bundled sample photos, parity, and unusable input (exit 2,
one line naming the file)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from resnet_port.checkpoints import CheckpointMetadata, Preprocessing, save_checkpoint
from resnet_port.resnet_ref import create_model
from resnet_port.validation import make_sample_dataset
from resnet_port.validation.cli import format_result, main
from resnet_port.validation.published import comparison_rows
from resnet_port.validation.sample import SAMPLE_PHOTOS

from .conftest import FOLDER_FILES, ref_crops, tiny_metadata, tiny_model

FAST = ["--workers", "0", "--no-progress", "--device", "cpu"]


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    model = tiny_model()
    save_checkpoint(path, model.spec, model.state_dict(), tiny_metadata())
    return path


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory):
    return make_sample_dataset(tmp_path_factory.mktemp("sample") / "photos")


def one_error_line(capsys) -> str:
    """The error: one line, the last on stderr (class-order warnings may precede it)."""
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if "error:" in line]
    assert len(errors) == 1 and err[-1] == errors[0], err
    return errors[0]


def test_sample_dataset_is_flat_imagenet_layout(sample_dir):
    lines = (sample_dir / "val.txt").read_text().split()
    assert len(lines) == 2 * len(SAMPLE_PHOTOS)
    for name, label in zip(lines[::2], lines[1::2]):
        assert (sample_dir / name).is_file() and 0 <= int(label) < 1000


def test_run_sample_validation(tmp_path):
    from resnet_port.validation import run_sample_validation

    result = run_sample_validation(tiny_model(), tiny_metadata(), tmp_path / "demo", crops=10)
    assert result["images"] == len(SAMPLE_PHOTOS) and result["crops"] == 10 and result["protocol"]["layout"] == "flat"


def test_ten_crop_run_on_sample_photos(tiny_ckpt, sample_dir, tmp_path, capsys):
    out, pred = tmp_path / "r.json", tmp_path / "p.jsonl"
    code = main([str(tiny_ckpt), "--data", str(sample_dir), "--crops", "10", "--json", str(out), "--predictions", str(pred),
                 "--per-class", "--compare-published", *FAST])  # fmt: skip
    assert code == 0
    result = json.loads(out.read_text())
    assert result["images"] == len(SAMPLE_PHOTOS) and result["crops"] == 10
    assert result["top1_error"] == pytest.approx(1 - result["top1"])
    rows = [json.loads(line) for line in pred.read_text().splitlines()]
    assert [r["label"] for r in rows] == [label for _, label, *_ in SAMPLE_PHOTOS]
    assert all(len(r["top5"]) == 5 and r["probs"] == sorted(r["probs"], reverse=True) for r in rows)
    assert "top-1" in capsys.readouterr().out


def test_plain_state_dict_needs_preset(tmp_path, imagefolder, capsys):
    path = tmp_path / "plain.pth"
    torch.save(create_model("resnet18").state_dict(), path)
    assert main([str(path), "--data", str(imagefolder), *FAST]) == 2
    line = one_error_line(capsys)
    assert str(path) in line and "--preset" in line
    assert main([str(path), "--data", str(imagefolder), "--preset", "torchvision", "--resize", "64", "--crop", "56", "--limit", "2", *FAST]) == 0


@pytest.mark.parametrize(
    "setup,expected",
    [
        (lambda tmp, folder: ["--data", str(tmp / "nope")], "no such data folder"),
        (lambda tmp, folder: ["--data", str((tmp / "empty" / "n01440764").mkdir(parents=True) or tmp / "empty")], "no images found"),
        (lambda tmp, folder: ["--data", str(folder), "--labels", str(write(tmp / "val.txt", "missing.JPEG 3\n"))], "missing.JPEG (line 1)"),
        (lambda tmp, folder: ["--data", str(folder), "--crop", "300"], "crop 300 must be positive and at most the resize 64"),
        (lambda tmp, folder: ["--data", str(folder), "--predictions", str(tmp / "no" / "p.jsonl")], "does not exist"),
    ],
    ids=["missing_dir", "empty", "labels_missing_images", "crop_too_big", "predictions_folder"],
)
def test_unusable_input_exits_2(tiny_ckpt, imagefolder, tmp_path, capsys, setup, expected):
    assert main([str(tiny_ckpt), *setup(tmp_path, imagefolder), *FAST]) == 2
    assert expected in one_error_line(capsys)


def test_corrupt_image_exits_2_unless_skipped(tiny_ckpt, corrupt_folder, tmp_path, capsys):
    assert main([str(tiny_ckpt), "--data", str(corrupt_folder), *FAST]) == 2
    line = one_error_line(capsys)
    assert "b_truncated.JPEG" in line and "--skip-bad" in line
    out = tmp_path / "r.json"
    assert main([str(tiny_ckpt), "--data", str(corrupt_folder), "--skip-bad", "--json", str(out), *FAST]) == 0
    assert json.loads(out.read_text())["skipped"][0].endswith("b_truncated.JPEG")


def test_missing_checkpoint_exits_2(tmp_path, imagefolder, capsys):
    assert main([str(tmp_path / "none.pth"), "--data", str(imagefolder), *FAST]) == 2
    assert "no such file" in one_error_line(capsys)


def write(path, text):
    path.write_text(text)
    return path


# -- parity -----------------------------------------------------------------------------------
def test_parity_of_identical_and_perturbed_ports(tiny_ckpt, imagefolder, tmp_path, capsys):
    model = tiny_model()
    same = tmp_path / "same.pth"
    save_checkpoint(same, model.spec, model.state_dict(), tiny_metadata())
    out = tmp_path / "p.json"
    assert main(["--parity", str(tiny_ckpt), str(same), "--data", str(imagefolder), "--json", str(out), *FAST]) == 0
    result = json.loads(out.read_text())
    assert result["top1_agreement"] == 1.0 and result["max_abs_diff"] == 0.0 and result["images"] == len(FOLDER_FILES)
    # One set of parity keys with the converters and audit (resnet_port.parity).
    from resnet_port.parity import PARITY_KEYS

    assert set(PARITY_KEYS) <= set(result) and result["samples"] == result["images"] and result["kl_divergence"] == 0.0

    # A port whose fc bias drifted, under its own (BGR, 0-255) preprocessing with an equivalent first conv.
    other = tiny_model()
    with torch.no_grad():
        # RGB/0-1/mean-std input x_rgb = (p/255 - m) / s; BGR 0-255 input y = p_bgr - 255 m, so
        # conv(x) = conv'(y) with w'[:, bgr c] = w[:, c] / (255 s_c): exactly equivalent up to padding.
        mean, std = torch.tensor((0.485, 0.456, 0.406)), torch.tensor((0.229, 0.224, 0.225))
        w = other.conv1.weight
        w.copy_((w / (255.0 * std).view(1, 3, 1, 1)).flip(1))
        other.fc.bias.add_(torch.linspace(0, 0.3, other.fc.bias.numel()))
    meta = CheckpointMetadata(spec=other.spec, preprocessing=Preprocessing("BGR", 255.0, tuple(255.0 * mean.flip(0)), None, resize=64, crop=56))
    drifted = tmp_path / "drifted.pth"
    save_checkpoint(drifted, other.spec, other.state_dict(), meta)
    assert main(["--parity", str(tiny_ckpt), str(drifted), "--data", str(imagefolder), "--json", str(out), *FAST]) == 0
    result = json.loads(out.read_text())
    # Independent: reference crops, each model fed by hand in its own convention.
    diffs, agree = [], 0
    for folder, name, *_ in FOLDER_FILES:
        crop = torch.from_numpy(ref_crops(imagefolder / folder / name, 64, 56, 1).astype(np.float32)).permute(0, 3, 1, 2)
        with torch.no_grad():
            a = model((crop / 255.0 - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1))
            b = other(crop.flip(1) - 255.0 * mean.flip(0).view(1, 3, 1, 1))
        diffs.append(float((a - b).abs().max()))
        agree += int(a.argmax() == b.argmax())
    assert result["max_abs_diff"] == pytest.approx(max(diffs), abs=1e-3)
    assert result["max_abs_diff"] > 0.29
    assert result["top1_agreement"] == agree / len(FOLDER_FILES)


def test_compare_published_table_text():
    result = {"checkpoint": "x.pth", "arch": "caffe_resnet152", "images": 10, "crops": 10, "skipped": [], "top1": 0.786,
              "top5": 0.943, "top1_error": 0.214, "top5_error": 0.057, "images_per_s": 3.0, "device": "cpu", "processes": 1}  # fmt: skip
    text = format_result(result, comparison_rows("caffe_resnet152", 10, 0.214, 0.057))
    assert "Kaiming He's Caffe release, 10-crop: top-1 error 21.40%, top-5 error 5.70%  (measured 21.40% / 5.70%)" in text
    assert "1-crop: top-1 error 23.00%" in text and "(other protocol)" in text


def test_parity_on_a_bare_folder_of_images(tiny_ckpt, imagefolder, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    for folder, name, *_ in FOLDER_FILES[:3]:
        (bare / name).write_bytes((imagefolder / folder / name).read_bytes())
    out = tmp_path / "p.json"
    assert main(["--parity", str(tiny_ckpt), str(tiny_ckpt), "--data", str(bare), "--crops", "10", "--json", str(out), *FAST]) == 0
    result = json.loads(out.read_text())
    assert result["images"] == 3 and result["crops"] == 10 and result["top1_agreement"] == 1.0
