"""convert-mxnet under the one verification contract (converters/verify.py): by default the
converted model is checked against an independent float64 evaluation of the MXNet files (no user
logits needed), with the same keys, options and exit codes as every converter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from resnet_port.checkpoints import load_checkpoint
from resnet_port.converters.mxnet import cli as mxnet_cli
from resnet_port.converters.verify import VERIFICATION_KEYS


def _run(argv, capsys):
    code = mxnet_cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("name,files,referee", [
    ("symbolic_resnet18", ["resnet-18-0000.params"], "symbol graph"),  # symbol found beside the params
    ("gluon_resnet18_v1", ["export-0000.params", "--symbol", "export-symbol.json"], "symbol graph"),
    ("gluon_resnet18_v2", ["model.params"], "Gluon model-zoo ResNet V2"),
    ("gluon_resnet18_v1", ["model.params"], "Gluon model-zoo ResNet V1"),
])
def test_default_check_against_the_independent_referee(cache: Path, tmp_path: Path, capsys, name, files, referee):
    folder = cache / name
    argv = [folder / f if f.endswith((".params", ".json")) else f for f in files]
    out = tmp_path / "m.safetensors"
    code, stdout, _ = _run([*argv, "-o", out, "--json"], capsys)
    assert code == 0
    record = json.loads(stdout)["verification"]
    assert tuple(record) == VERIFICATION_KEYS
    assert referee in record["referee"] and record["passed"] is True and record["max_rel_diff"] < 1e-5
    assert load_checkpoint(out)[2].verification == record


def test_absurd_tolerance_fails_and_writes_nothing(cache: Path, tmp_path: Path, capsys):
    out = tmp_path / "m.pth"
    code, _, err = _run([cache / "symbolic_resnet18" / "resnet-18-0000.params", "-o", out, "--tolerance", "1e-12"], capsys)
    assert code == 1 and not out.exists() and list(tmp_path.iterdir()) == []
    assert "check failed" in err and "nothing written" in err


def test_a_wrong_conversion_is_caught(cache: Path, tmp_path: Path, capsys, monkeypatch):
    """A converter bug injected after conversion (one BN's variance off by 10%): the referee, which
    evaluates the MXNet files itself, must disagree -> exit 1, nothing written."""
    real = mxnet_cli.convert_mxnet

    def buggy(*args, **kwargs):
        conversion = real(*args, **kwargs)
        conversion.state_dict["layer1.0.bn1.running_var"] = conversion.state_dict["layer1.0.bn1.running_var"] * 1.1
        return conversion

    monkeypatch.setattr(mxnet_cli, "convert_mxnet", buggy)
    out = tmp_path / "m.pth"
    code, _, err = _run([cache / "symbolic_resnet18" / "resnet-18-0000.params", "-o", out], capsys)
    assert code == 1 and not out.exists() and "disagrees with the MXNet symbol graph" in err


def test_no_verify_and_user_logits(cache: Path, tmp_path: Path, capsys):
    folder = cache / "gluon_resnet18_v2"
    code, _, _ = _run([folder / "model.params", "-o", tmp_path / "a.pth", "--no-verify"], capsys)
    record = load_checkpoint(tmp_path / "a.pth")[2].verification
    assert code == 0 and tuple(record) == VERIFICATION_KEYS and record["skipped"] == "--no-verify"
    for flag in ("--logits", "--verify"):  # --verify INPUT LOGITS: convert-mxnet's older spelling
        out = tmp_path / f"b{flag}.pth"
        code, _, _ = _run([folder / "model.params", "-o", out, flag, folder / "input.npy", folder / "logits_mxnet.npy"], capsys)
        assert code == 0 and load_checkpoint(out)[2].verification["referee"] == "logits supplied in logits_mxnet.npy"
    with pytest.raises(SystemExit) as exit_info:  # an argparse usage error
        _run([folder / "model.params", "-o", tmp_path / "c.pth", "--verify", folder / "input.npy"], capsys)
    assert exit_info.value.code == 2 and "INPUT.npy LOGITS.npy" in capsys.readouterr().err


def test_layout_without_a_referee_says_what_to_do(cache: Path, tmp_path: Path, capsys, monkeypatch):
    """Gluon names the model-zoo graph does not cover have no built-in referee: exit 2 naming the way out."""
    from resnet_port.converters.mxnet import verify as mxnet_verify

    monkeypatch.setattr(mxnet_verify, "gluon_layout", lambda names: (_ for _ in ()).throw(mxnet_verify.GluonLayoutError("other layout")))
    out = tmp_path / "m.pth"
    code, _, err = _run([cache / "gluon_resnet18_v1" / "model.params", "-o", out], capsys)
    assert code == 2 and "--logits" in err and "--no-verify" in err and not out.exists()
