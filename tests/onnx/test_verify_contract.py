"""convert-onnx under the one verification contract (converters/verify.py): the same record keys,
options and exit codes as every converter; a wrong conversion is caught by the referee."""

from __future__ import annotations

import json

import numpy as np

from resnet_port.checkpoints import load_checkpoint
from resnet_port.converters.onnx import cli as onnx_cli
from resnet_port.converters.verify import VERIFICATION_KEYS


def test_record_keys_and_default_check(build, tmp_path, capsys):
    net = build(depth=18, residual="v1")
    out = tmp_path / "r18.pth"
    assert onnx_cli.main([str(net.path), "-o", str(out), "--json", "--verify"]) == 0  # --verify: accepted, no-op
    record = json.loads(capsys.readouterr().out)["verification"]
    assert tuple(record) == VERIFICATION_KEYS
    assert record["passed"] is True and record["referee"].startswith("onnxruntime") and record["tolerance"] == 1e-4
    assert load_checkpoint(out)[2].verification == record


def test_a_wrong_conversion_is_caught(build, tmp_path, capsys, monkeypatch):
    """A converter bug injected after recognition (a BN mean off by one std): onnxruntime, running the
    file itself, must disagree -> exit 1, nothing written."""
    real = onnx_cli.convert_onnx

    def buggy(path):
        conversion = real(path)
        key = "layer2.0.bn1.running_mean"
        conversion.state_dict[key] = conversion.state_dict[key] + conversion.state_dict[key.replace("mean", "var")].sqrt()
        return conversion

    monkeypatch.setattr(onnx_cli, "convert_onnx", buggy)
    net = build(depth=18, residual="v1")
    out = tmp_path / "r18.pth"
    assert onnx_cli.main([str(net.path), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "check failed" in err and "nothing written" in err
    assert not out.exists()


def test_user_logits(build, tmp_path, capsys):
    net = build(depth=18, residual="v2")
    np.save(tmp_path / "x.npy", net.x)
    np.save(tmp_path / "good.npy", net.logits)
    np.save(tmp_path / "bad.npy", net.logits * 1.01)
    assert onnx_cli.main([str(net.path), "-o", str(tmp_path / "a.pth"), "--logits", str(tmp_path / "x.npy"), str(tmp_path / "good.npy")]) == 0
    assert load_checkpoint(tmp_path / "a.pth")[2].verification["referee"] == "logits supplied in good.npy"
    assert onnx_cli.main([str(net.path), "-o", str(tmp_path / "b.pth"), "--logits", str(tmp_path / "x.npy"), str(tmp_path / "bad.npy")]) == 1
    assert not (tmp_path / "b.pth").exists()
