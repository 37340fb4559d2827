"""convert-onnx end to end: the written checkpoint reproduces onnxruntime, and what the CLI says."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from resnet_port.checkpoints import load_checkpoint, load_model
from resnet_port.converters.onnx.cli import main
from tests.onnx.conftest import TOLERANCE, rel_diff


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_written_checkpoint_reproduces_onnxruntime(build, tmp_path, capsys, suffix):
    net = build(depth=50, residual="v2", data_gamma=np.array([0.5, 1.5, 2.0], np.float32))
    out = tmp_path / f"r50v2{suffix}"
    report = tmp_path / "report.json"
    assert main([str(net.path), "-o", str(out), "--report", str(report)]) == 0
    printed = capsys.readouterr().out
    assert "check vs onnxruntime" in printed and "folded" in printed
    model, metadata = load_model(out)
    with torch.inference_mode():
        logits = model.eval()(torch.from_numpy(net.x))
    assert rel_diff(net.logits, logits) <= TOLERANCE
    assert metadata.verification["passed"] is True
    assert metadata.verification["max_rel_diff"] <= TOLERANCE
    assert metadata.source.framework == "onnx"
    written = json.loads(report.read_text())
    assert written["mapped"]["fc.weight"] == "fc_weight"
    assert written["num_mapped"] == len(load_checkpoint(out)[1]) - sum(
        1 for k in load_checkpoint(out)[1] if k.endswith("num_batches_tracked")
    )


def test_json_summary(build, tmp_path, capsys):
    net = build(depth=18, residual="v1")
    out = tmp_path / "r18.pth"
    assert main([str(net.path), "-o", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["output"] == str(out)
    assert summary["verification"]["passed"] is True
    assert summary["verification"]["top1_agreement"] == 1.0


def test_symbolic_input_dimensions(build, tmp_path, capsys):
    """A graph with batch and size left open: the check probes it at 2 x 3 x 224 x 224."""
    net = build(depth=18, residual="v2", dynamic=True, size=48)
    out = tmp_path / "dyn.pth"
    assert main([str(net.path), "-o", str(out), "--json"]) == 0
    verification = json.loads(capsys.readouterr().out)["verification"]
    assert verification["passed"] is True and "[2, 3, 224, 224]" in verification["input"]
    model, metadata = load_model(out)
    assert metadata.source.details["input_shape"] == ["N", 3, "H", "W"]
    with torch.inference_mode():
        assert rel_diff(net.logits, model.eval()(torch.from_numpy(net.x))) <= TOLERANCE


def test_no_verify_is_recorded_as_skipped(build, tmp_path, capsys):
    net = build(depth=18, residual="v1")
    out = tmp_path / "r18.pth"
    assert main([str(net.path), "-o", str(out), "--no-verify"]) == 0
    assert "skipped" in capsys.readouterr().out
    _, _, metadata = load_checkpoint(out)
    assert metadata.verification["skipped"] == "--no-verify"
    assert metadata.verification["passed"] is None and metadata.verification["max_abs_diff"] is None


def test_a_failed_check_writes_nothing(build, tmp_path, capsys):
    # Tolerance 0: float32 rounding differs between onnxruntime and torch, so the check must fail.
    net = build(depth=34, residual="v2")
    out = tmp_path / "r34.pth"
    assert main([str(net.path), "-o", str(out), "--tolerance", "0"]) == 1
    err = capsys.readouterr().err
    assert "disagrees with onnxruntime" in err and "nothing written" in err
    assert not out.exists()


def test_missing_onnx_package_says_how_to_install(build, tmp_path, capsys, monkeypatch):
    net = build(depth=18)
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if it were not installed
    assert main([str(net.path), "-o", str(tmp_path / "x.pth")]) == 2
    err = capsys.readouterr().err
    assert "pip install" in err and "onnx" in err
    assert not (tmp_path / "x.pth").exists()


def test_help_explains(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for word in ("onnxruntime", "--tolerance", "--no-verify", "--json", "first node"):
        assert word in text


def test_unusable_output_paths_are_refused_first(build, tmp_path, capsys):
    net = build(depth=18, run=False)
    assert main([str(net.path), "-o", str(tmp_path / "r18.txt")]) == 2
    assert "use .pth or .safetensors" in capsys.readouterr().err
    assert main([str(net.path), "-o", str(tmp_path / "absent" / "r18.pth")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.onnx"]


def test_without_onnxruntime_the_graph_is_evaluated_in_torch(build, tmp_path, capsys, monkeypatch):
    net = build(depth=50, residual="v2", stem_pool="max_ceil", size=40)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    out = tmp_path / "r50.pth"
    assert main([str(net.path), "-o", str(out), "--json"]) == 0
    verification = json.loads(capsys.readouterr().out)["verification"]
    assert verification["passed"] is True and "evaluated node by node" in verification["referee"]
