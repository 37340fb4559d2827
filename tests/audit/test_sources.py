"""Loading the sides: plain torchvision / mmcls state dicts, kind dispatch, and a converter that is
not installed."""

from __future__ import annotations

import shutil
import sys

import pytest
import torch

from resnet_port.audit.sources import file_kind, load_side
from resnet_port.checkpoints import CheckpointMetadata, preset_preprocessing, save_checkpoint
from resnet_port.errors import InputError
from resnet_port.resnet_ref import get_spec
from tests.audit.pairs import random_state_dict


@pytest.fixture(scope="module")
def resnet18_files(tmp_path_factory):
    """One set of resnet18 weights as a toolkit checkpoint, a plain torchvision state_dict and an
    mmcls classifier checkpoint (backbone. / head.fc. names, written out here)."""
    folder = tmp_path_factory.mktemp("r18")
    spec = get_spec("resnet18")
    sd = random_state_dict(spec, seed=3)
    toolkit = save_checkpoint(folder / "toolkit.pth", spec, sd, CheckpointMetadata(spec=spec, arch="resnet18", preprocessing=preset_preprocessing("torchvision")))
    plain = folder / "torchvision.pth"
    torch.save({k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}, plain)
    mmcls = folder / "mmcls.pth"
    renamed = {(f"head.{k}" if k.startswith("fc.") else f"backbone.{k}"): v for k, v in sd.items()}
    torch.save({"meta": {"epoch": 100}, "state_dict": renamed}, mmcls)
    yield toolkit, plain, mmcls
    shutil.rmtree(folder, ignore_errors=True)  # free the disk for the modules after this one


@pytest.mark.slow
def test_plain_state_dicts_load_as_the_same_network(resnet18_files, run_audit):
    toolkit, plain, mmcls = resnet18_files
    code, report = run_audit(toolkit, plain, "-n", "2")
    assert (code, report["verdict"], report["causes"]) == (0, "identical", [])
    code, report = run_audit(plain, mmcls, "-n", "2", "--preset-b", "torchvision")
    assert (code, report["verdict"], report["causes"]) == (0, "identical", [])
    assert report["sides"]["b"]["arch"] == "resnet18"


@pytest.mark.slow
def test_plain_state_dict_class_order_bug(resnet18_files, tmp_path, run_audit):
    toolkit, plain, _ = resnet18_files
    sd = torch.load(plain, weights_only=True)
    perm = torch.arange(1000).roll(1)  # every class shifted by one: an off-by-one class list
    sd["fc.weight"], sd["fc.bias"] = sd["fc.weight"][perm], sd["fc.bias"][perm]
    shifted = tmp_path / "shifted.pth"
    torch.save(sd, shifted)
    code, report = run_audit(toolkit, shifted, "-n", "2")
    assert code == 1 and [c["key"] for c in report["causes"]] == ["class_order"]


@pytest.mark.slow
def test_transposed_classifier_that_does_not_fit_is_named(resnet18_files, tmp_path, run_audit):
    """A port that stored fc.weight as (in, out): it does not even fit resnet18, yet the audit
    loads it, names the cause, and shows that transposing it makes the outputs agree."""
    toolkit, plain, _ = resnet18_files
    sd = torch.load(plain, weights_only=True)
    sd["fc.weight"] = sd["fc.weight"].t().contiguous()
    transposed = tmp_path / "transposed.pth"
    torch.save(sd, transposed)
    code, report = run_audit(toolkit, transposed, "-n", "2", "--arch-b", "resnet18")
    assert (code, report["verdict"]) == (1, "different")
    assert report["outputs"]["comparable"] is False
    assert [c["key"] for c in report["causes"]] == ["transposed_fc"]
    assert report["causes"][0]["rel_logit_diff_after_fix"] <= 1e-4


@pytest.mark.parametrize(
    "name, head, kind",
    [
        ("a.caffemodel", b"\n\x05", "caffe"),
        ("a.caffemodel.h5", b"\x89HDF\r\n\x1a\n", "caffe"),
        ("no_suffix", b"\x89HDF\r\n\x1a\n" + b"\0" * 8, "caffe"),
        ("resnet-50-0000.params", b"\x12\x01", "mxnet"),
        ("no_suffix_params", (0x112).to_bytes(8, "little") + b"\0" * 8, "mxnet"),
        ("model.onnx", b"\x08\x07", "onnx"),
        ("weights", b"PK\x03\x04" + b"\0" * 12, "checkpoint"),
        ("x.safetensors", b"\0" * 16, "checkpoint"),
    ],
)
def test_file_kind(tmp_path, name, head, kind):
    path = tmp_path / name
    path.write_bytes(head)
    assert file_kind(path) == kind


def test_missing_converter_is_a_clear_input_error(tmp_path, monkeypatch):
    onnx_file = tmp_path / "model.onnx"
    onnx_file.write_bytes(b"\x08\x07")
    monkeypatch.setitem(sys.modules, "resnet_port.converters.onnx", None)  # as if the ONNX converter were not installed
    with pytest.raises(InputError, match="not available"):
        load_side("A", onnx_file)
