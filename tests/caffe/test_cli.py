"""convert-caffe end to end: a good conversion, and every kind of bad input -> one line, exit 2, no file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from resnet_port.checkpoints import load_checkpoint, load_model
from resnet_port.converters.caffe import parse_prototxt, write_binaryproto, write_caffemodel, write_caffemodel_h5
from resnet_port.converters.caffe.cli import main
from tests.caffe.conftest import CAFFE_REF


def run(argv, capsys):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_convert_writes_checkpoint_report_and_json(tiny, tmp_path, capsys):
    out = tmp_path / "tiny.safetensors"
    report = tmp_path / "report.json"
    code, stdout, _ = run(
        [tiny["model"], "--prototxt", tiny["prototxt"], "--mean-values", 104, 117, 123, "--verify", "-o", out, "--report", report, "--json"],
        capsys,
    )
    assert code == 0
    summary = json.loads(stdout)
    assert summary["verification"]["max_rel_diff"] < 1e-5
    spec, sd, metadata = load_checkpoint(out)
    assert metadata.preprocessing.channel_order == "BGR" and metadata.preprocessing.pixel_max == 255.0
    assert metadata.preprocessing.mean == (104.0, 117.0, 123.0)
    assert (metadata.preprocessing.resize, metadata.preprocessing.crop) == (64, 64)  # the net's own 64x64 input: no resize
    written = json.loads(report.read_text())
    # Every target tensor is accounted for, and the BN factor blob appears in its sources.
    assert written["num_mapped"] == len(sd) - sum(k.endswith("num_batches_tracked") for k in sd)
    assert written["mapped"]["bn1.running_mean"] == "bn_conv1.blobs[0] / bn_conv1.blobs[2]"
    assert written["mapped"]["conv1.bias"] == "conv1.blobs[1]"


def test_console_script_help_runs():
    result = subprocess.run([sys.executable, "-m", "resnet_port.converters.caffe", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--prototxt" in result.stdout and "--rgb" in result.stdout


def _expect_refusal(argv, out: Path, capsys, *fragments):
    code, _, err = run(argv, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]  # no temp leftovers


def test_truncated_caffemodel(tiny, tmp_path, capsys):
    cut = tmp_path / "cut.caffemodel"
    data = tiny["model"].read_bytes()
    cut.write_bytes(data[: len(data) * 3 // 4])
    out = tmp_path / "o.pth"
    _expect_refusal([cut, "-o", out], out, capsys, "cut.caffemodel", "truncated", "layer '")


@pytest.mark.parametrize(
    "content",
    [b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(200)), b"PK\x03\x04" + bytes(300), b""],
    ids=["png", "zip", "empty"],
)
def test_non_caffe_file(tmp_path, capsys, content):
    bad = tmp_path / "model.caffemodel"
    bad.write_bytes(content)
    out = tmp_path / "o.pth"
    _expect_refusal([bad, "-o", out], out, capsys, "model.caffemodel")


def test_prototxt_given_as_model(tmp_path, capsys):
    out = tmp_path / "o.pth"
    _expect_refusal([CAFFE_REF / "ResNet-50-deploy.prototxt", "-o", out], out, capsys, "ResNet-50-deploy.prototxt", "--prototxt")


def test_prototxt_caffemodel_mismatch_is_a_warning_and_the_prototxt_wins(tiny, tmp_path, capsys):
    """Caffe copies blobs by layer name and checks only their shapes: a stride that differs between the
    caffemodel's own net and the prototxt is warned about, and the prototxt's value is used."""
    edited = tmp_path / "edited.prototxt"
    edited.write_text(tiny["text"].replace('name: "res3a_branch2a" type: "Convolution" bottom: "res2a" top: "res3a_branch2a" convolution_param { num_output: 8 kernel_size: 1 pad: 0 stride: 2',
                                           'name: "res3a_branch2a" type: "Convolution" bottom: "res2a" top: "res3a_branch2a" convolution_param { num_output: 8 kernel_size: 1 pad: 0 stride: 1'))
    assert edited.read_text() != tiny["text"]
    out = tmp_path / "o.pth"
    # The prototxt's stride 1 makes a graph whose projection (stride 2) no longer matches its body.
    _expect_refusal([tiny["model"], "--prototxt", edited, "-o", out], out, capsys, "edited.prototxt", "res3a_branch1", "stride")


def test_missing_layer(tiny, tmp_path, capsys):
    blobs = {k: v for k, v in tiny["blobs"].items() if k != "res4a_branch2b"}
    h5 = write_caffemodel_h5(tmp_path / "partial.caffemodel.h5", blobs)
    out = tmp_path / "o.pth"
    _expect_refusal([h5, "--prototxt", tiny["prototxt"], "-o", out], out, capsys, "partial.caffemodel.h5", "res4a_branch2b", "missing layer")
    # The same for a caffemodel whose own definition lacks the layer.
    net = parse_prototxt(tiny["text"])
    keep = [layer for layer in net.layer if layer.name != "bn2a_branch1"]
    del net.layer[:]
    net.layer.extend(keep)
    model = write_caffemodel(tmp_path / "partial.caffemodel", net, {k: v for k, v in tiny["blobs"].items() if k != "bn2a_branch1"})
    _expect_refusal([model, "--prototxt", tiny["prototxt"], "-o", out], out, capsys, "partial.caffemodel", "bn2a_branch1", "missing layer")


def test_shape_mismatch(tiny, tmp_path, capsys):
    blobs = dict(tiny["blobs"])
    weight = blobs["res3a_branch2b"][0]
    blobs["res3a_branch2b"] = [np.zeros((weight.shape[0], weight.shape[1], 1, 1), np.float32)]
    h5 = write_caffemodel_h5(tmp_path / "bad.caffemodel.h5", blobs)
    out = tmp_path / "o.pth"
    _expect_refusal([h5, "--prototxt", tiny["prototxt"], "-o", out], out, capsys, "res3a_branch2b", "blob 0", "expected [8, 8, 3, 3]")


def test_mean_file_of_the_wrong_shape(tiny, tmp_path, capsys):
    mean = tmp_path / "gray_mean.binaryproto"
    write_binaryproto(mean, np.full((1, 1, 224, 224), 110.0, np.float32))
    out = tmp_path / "o.pth"
    _expect_refusal([tiny["model"], "--mean", mean, "-o", out], out, capsys, "gray_mean.binaryproto", "[1, 1, 224, 224]", "(1, 3, H, W)")


def test_h5_without_prototxt(tiny, tmp_path, capsys):
    out = tmp_path / "o.pth"
    _expect_refusal([tiny["h5"], "-o", out], out, capsys, "tiny.caffemodel.h5", "--prototxt")


def test_release_mean_file_is_recorded(tiny, tmp_path, capsys):
    out = tmp_path / "m.pth"
    code, _, _ = run([tiny["model"], "--mean", CAFFE_REF / "ResNet_mean.binaryproto", "-o", out], capsys)
    assert code == 0
    model, metadata = load_model(out)
    image = metadata.preprocessing.mean_image
    assert image.shape == (3, 224, 224)
    # BGR: the release's mean image has blue ~104, green ~117, red ~123 on average.
    assert np.allclose(image.reshape(3, -1).mean(1), [104, 117, 123], atol=3)
    assert isinstance(model, torch.nn.Module)


def test_rgb_flips_conv1_and_the_mean_image(tiny, tmp_path, capsys):
    bgr_out, rgb_out = tmp_path / "bgr.pth", tmp_path / "rgb.pth"
    mean = CAFFE_REF / "ResNet_mean.binaryproto"
    assert run([tiny["model"], "--mean", mean, "-o", bgr_out], capsys)[0] == 0
    assert run([tiny["model"], "--mean", mean, "--rgb", "-o", rgb_out], capsys)[0] == 0
    bgr_model, bgr_meta = load_model(bgr_out)
    rgb_model, rgb_meta = load_model(rgb_out)
    assert (bgr_meta.preprocessing.channel_order, rgb_meta.preprocessing.channel_order) == ("BGR", "RGB")
    assert np.array_equal(rgb_meta.preprocessing.mean_image, bgr_meta.preprocessing.mean_image[::-1])
    x = torch.from_numpy(np.random.default_rng(0).uniform(-120, 135, (1, 3, 64, 64)).astype(np.float32))
    with torch.inference_mode():
        assert torch.allclose(bgr_model.eval()(x), rgb_model.eval()(x.flip(1)), rtol=0, atol=1e-5)
