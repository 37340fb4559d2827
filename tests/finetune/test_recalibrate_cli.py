"""recalibrate-bn end to end: a tiny checkpoint, a folder of real image files, the statistics checked
against all the images pushed through training-mode BN as one batch (PyTorch's own BatchNorm)."""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from resnet_port import resnet_ref
from resnet_port.checkpoints import (
    CheckpointMetadata,
    Preprocessing,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from resnet_port.finetune.cli import recalibrate_bn_main
from resnet_port.validation.data import preprocess_image

IMAGES_PER_CLASS = 6


@pytest.fixture
def image_folder(tmp_path):
    rng = np.random.default_rng(11)
    root = tmp_path / "train"
    for c, wnid in enumerate(("n01440764", "n01443537")):
        (root / wnid).mkdir(parents=True)
        for i in range(IMAGES_PER_CLASS):
            h, w = int(rng.integers(36, 60)), int(rng.integers(36, 60))
            pixels = (rng.random((h, w, 3)) * 255 * (0.5 + 0.5 * c)).astype(np.uint8)
            Image.fromarray(pixels).save(root / wnid / f"img{i}.png")
    return root


@pytest.fixture
def checkpoint(tmp_path):
    spec = dataclasses.replace(resnet_ref.get_spec("resnet18", num_classes=2), layers=(1, 1, 1, 1),
                               widths=(8, 8, 16, 16), stem_width=8)
    torch.manual_seed(2)
    model = resnet_ref.build_model(spec)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-2, 2)
                m.running_var.uniform_(3, 6)
    meta = CheckpointMetadata(spec=spec, preprocessing=Preprocessing(resize=40, crop=32))
    path = tmp_path / "tiny.pth"
    save_checkpoint(path, spec, model.state_dict(), meta)
    return path


def test_recalibrated_checkpoint_holds_the_images_statistics(tmp_path, image_folder, checkpoint, capsys):
    out = tmp_path / "tiny-recal.safetensors"
    code = recalibrate_bn_main([str(checkpoint), "--data", str(image_folder), "--batches", "3", "--batch-size", "4",
                                "--variance", "biased", "--workers", "0", "--device", "cpu", "-o", str(out),
                                "--json", str(tmp_path / "summary.json")])
    assert code == 0
    _, recal, meta = load_checkpoint(out)
    note = meta.notes["bn_recalibration"]
    assert note["mode"] == "sequential" and note["variance"] == "biased" and note["batches"] == 3
    assert note["images"] == 12 and note["batch_size"] == 4 and "input_sha256" in note
    assert json.loads((tmp_path / "summary.json").read_text())["output"] == str(out)

    # independent: every image of the folder (all 12 are used) through the checkpoint's preprocessing,
    # then the whole set as one training batch; momentum 1 makes running stats that batch's statistics
    model, metadata = load_model(checkpoint)
    x = torch.cat([preprocess_image(p, metadata.preprocessing) for p in sorted(image_folder.rglob("*.png"))])
    huge = copy.deepcopy(model).double().train()
    for m in huge.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 1.0
    with torch.no_grad():
        huge(x.double())
    for name, m in huge.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            n = note["observations_per_channel"][name]
            torch.testing.assert_close(recal[f"{name}.running_mean"].double(), m.running_mean, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(recal[f"{name}.running_var"].double(), m.running_var * (n - 1) / n, rtol=1e-4, atol=1e-5)
    # the weights themselves are untouched
    _, original, _ = load_checkpoint(checkpoint)
    assert all(torch.equal(original[k], recal[k]) for k in original if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))


def test_cumulative_mode_is_recorded(tmp_path, image_folder, checkpoint):
    out = tmp_path / "c.pth"
    assert recalibrate_bn_main([str(checkpoint), "--data", str(image_folder), "--batches", "2", "--batch-size", "3",
                                "--mode", "cumulative", "--workers", "0", "--device", "cpu", "-o", str(out)]) == 0
    note = load_checkpoint(out)[2].notes["bn_recalibration"]
    assert note["mode"] == "cumulative" and note["variance"] == "unbiased" and note["images"] == 6


@pytest.mark.parametrize(
    "extra, fragment",
    [(["--batches", "5", "--batch-size", "4"], "needs 20 images"), (["--batches", "0"], "positive")],
)
def test_unusable_requests_exit_2_and_write_nothing(tmp_path, image_folder, checkpoint, capsys, extra, fragment):
    out = tmp_path / "never.pth"
    args = [str(checkpoint), "--data", str(image_folder), "--workers", "0", "-o", str(out)]
    if "--batches" not in extra:
        args += ["--batches", "1"]
    assert recalibrate_bn_main(args + extra) == 2
    err = capsys.readouterr().err
    assert fragment in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob(".never.pth*"))


def test_refuses_to_overwrite_its_input(tmp_path, image_folder, checkpoint, capsys):
    assert recalibrate_bn_main([str(checkpoint), "--data", str(image_folder), "--batches", "1", "-o", str(checkpoint)]) == 2
    assert "overwrite" in capsys.readouterr().err
