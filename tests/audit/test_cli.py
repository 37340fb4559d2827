"""The `audit` command: unusable input exits 2 with one line naming the file, no output is left
half-written, and the readable table carries the verdict."""

from __future__ import annotations

import json

import pytest

from resnet_port.audit.cli import main
from tests.audit.pairs import caffe_prep, random_state_dict, save, small_spec


@pytest.fixture
def good(tmp_path):
    spec = small_spec("caffe_resnet50")
    return save(tmp_path / "good.pth", spec, random_state_dict(spec, 1), caffe_prep())


def _one_line_error(capsys, *expected: str) -> None:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    for text in expected:
        assert text in err, err


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("missing.pth", None, "no such file"),
        ("garbage.pth", b"PK\x03\x04" + b"not a zip archive" * 4, "corrupted or truncated"),
        ("empty.safetensors", b"", "too short"),
        ("notes.txt", b"hello world, not a network", "cannot tell what kind of file"),
    ],
)
def test_unusable_input_exits_2(tmp_path, capsys, good, name, content, expected):
    bad = tmp_path / name
    if content is not None:
        bad.write_bytes(content)
    out = tmp_path / "report.json"
    assert main([str(good), str(bad), "--json", str(out)]) == 2
    _one_line_error(capsys, str(bad), expected)
    assert not out.exists()
    assert not list(tmp_path.glob(".report.json.*"))  # no temporary file left behind


def test_bad_options_exit_2(tmp_path, capsys, good):
    assert main([str(good), str(good), "--num-inputs", "0"]) == 2
    _one_line_error(capsys, "--num-inputs")
    assert main([str(good), str(good), "--images", str(tmp_path / "nowhere")]) == 2
    _one_line_error(capsys, "nowhere")


def test_table_and_json(tmp_path, capsys, good):
    out = tmp_path / "r.json"
    assert main([str(good), str(good), "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert table.strip().splitlines()[-1].startswith("verdict  identical")
    report = json.loads(out.read_text())
    assert {"verdict", "causes", "max_abs_diff", "top1_agreement", "tensors"} <= set(report)
    assert report["max_abs_diff"] == 0.0 and report["top1_agreement"] == 1.0
    assert all(row["status"] == "equal" for row in report["tensors"])


def test_json_to_stdout(capsys, good):
    assert main([str(good), str(good), "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["verdict"] == "identical"


def test_real_images_folder(tmp_path, capsys, good):
    from PIL import Image
    import numpy as np

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    out = tmp_path / "r.json"
    assert main([str(good), str(good), "--images", str(folder), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["inputs"]["count"] == 2 and report["outputs"]["samples"] == 2


def test_real_images_each_side_with_its_own_preprocessing(tmp_path, good):
    """A Caffe net (BGR 0-255 minus means) and its correct RGB port, on real image files decoded by
    validation's pipeline: the same pictures reach both, so they agree."""
    from PIL import Image
    import numpy as np
    import torch

    from resnet_port.checkpoints import load_checkpoint

    spec, sd, meta = load_checkpoint(good)
    rgb = dict(sd, **{"conv1.weight": sd["conv1.weight"].flip(1).contiguous()})
    port = save(tmp_path / "rgb_port.pth", spec, rgb, caffe_prep(channel_order="RGB", mean=(123.0, 117.0, 104.0)))
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    out = tmp_path / "r.json"
    assert main([str(good), str(port), "--images", str(folder), "--json", str(out), "-q"]) == 0
    report = json.loads(out.read_text())
    assert (report["verdict"], report["causes"]) == ("equivalent", [])
    # and the unflipped port (declared RGB, weights still BGR) is caught on the same images
    bad = save(tmp_path / "bad_port.pth", spec, sd, caffe_prep(channel_order="RGB", mean=(123.0, 117.0, 104.0)))
    assert main([str(good), str(bad), "--images", str(folder), "--json", str(out), "-q"]) == 1
    assert [c["key"] for c in json.loads(out.read_text())["causes"]] == ["channel_order"]
    assert torch.equal(sd["conv1.weight"], load_checkpoint(bad)[1]["conv1.weight"])


def test_help_lists_every_cause(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    from resnet_port.audit import CAUSE_KEYS

    assert all(key in text for key in CAUSE_KEYS)
