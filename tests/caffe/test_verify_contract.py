"""convert-caffe under the one verification contract (converters/verify.py): the interpreter check
runs by default and can fail: exit 1 and nothing written when the conversion and the source
disagree, 0 when they agree; --no-verify skips it, --logits takes the user's own Caffe logits."""

from __future__ import annotations

import json

import numpy as np
import pytest

from resnet_port.checkpoints import load_checkpoint
from resnet_port.converters.caffe import convert as caffe_convert
from resnet_port.converters.caffe.cli import main
from resnet_port.converters.caffe.interpreter import CaffeInterpreter
from resnet_port.converters.verify import VERIFICATION_KEYS, VerificationFailed


def run(argv, capsys):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_check_runs_by_default_and_passes(tiny, tmp_path, capsys):
    out = tmp_path / "t.pth"
    code, stdout, _ = run([tiny["model"], "-o", out, "--json"], capsys)
    assert code == 0
    record = json.loads(stdout)["verification"]
    assert tuple(record) == VERIFICATION_KEYS
    assert record["passed"] is True and record["skipped"] is None and record["tolerance"] == 1e-4
    assert "interpreter" in record["referee"] and record["max_rel_diff"] < 1e-5
    assert load_checkpoint(out)[2].verification == record


def test_verify_flag_is_an_accepted_no_op(tiny, tmp_path, capsys):
    code, stdout, _ = run([tiny["model"], "--verify", "-o", tmp_path / "t.pth", "--json"], capsys)
    assert code == 0 and json.loads(stdout)["verification"]["passed"] is True


def test_absurd_tolerance_fails_and_writes_nothing(tiny, tmp_path, capsys):
    """float64 interpreter vs float32 model differ by ~1e-7 relative: a tolerance of 1e-12 must fail."""
    out = tmp_path / "t.pth"
    code, _, err = run([tiny["model"], "-o", out, "--tolerance", "1e-12"], capsys)
    assert code == 1 and not out.exists() and list(tmp_path.iterdir()) == []
    assert "check failed" in err and "nothing written" in err and len(err.strip().splitlines()) == 1


def test_a_wrong_conversion_is_caught(tiny, tmp_path, capsys, monkeypatch):
    """A converter bug (one BN's variance off by 10%, the classic porting slip) injected before the
    check: the interpreter, which reads the Caffe file itself, must disagree -> exit 1, no file."""
    real = caffe_convert.finish_conversion

    def buggy(spec, state_dict, *args, **kwargs):
        state_dict = dict(state_dict)
        state_dict["bn1.running_var"] = state_dict["bn1.running_var"] * 1.1
        return real(spec, state_dict, *args, **kwargs)

    monkeypatch.setattr(caffe_convert, "finish_conversion", buggy)
    out = tmp_path / "t.pth"
    code, _, err = run([tiny["model"], "-o", out], capsys)
    assert code == 1 and not out.exists()
    assert "disagrees with the independent Caffe-graph interpreter" in err
    with pytest.raises(VerificationFailed) as failed:
        caffe_convert.convert_caffe(tiny["model"], verify=True)
    assert failed.value.record["passed"] is False and failed.value.record["max_rel_diff"] > 1e-4


def test_no_verify_records_a_skipped_check(tiny, tmp_path, capsys):
    out = tmp_path / "t.pth"
    code, stdout, _ = run([tiny["model"], "-o", out, "--no-verify", "--json"], capsys)
    assert code == 0
    record = load_checkpoint(out)[2].verification
    assert tuple(record) == VERIFICATION_KEYS and record["skipped"] == "--no-verify" and record["passed"] is None


@pytest.mark.parametrize("rgb", [False, True])
def test_user_logits(tiny, tmp_path, capsys, rgb):
    """--logits: the user's Caffe logits on the user's (BGR, as Caffe takes) input; right ones pass
    (also with --rgb, where the model is given the channels reversed), wrong ones fail."""
    rng = np.random.default_rng(5)
    x = rng.uniform(-100, 100, (2, 3, 40, 40)).astype(np.float32)
    logits = CaffeInterpreter(tiny["net"], tiny["blobs"]).forward({"data": x})["fc"].numpy()
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "good.npy", logits)
    np.save(tmp_path / "bad.npy", logits[::-1].copy())
    extra = ["--rgb"] if rgb else []
    code, stdout, _ = run([tiny["model"], *extra, "-o", tmp_path / "a.pth", "--logits", tmp_path / "x.npy", tmp_path / "good.npy", "--json"], capsys)
    assert code == 0
    record = json.loads(stdout)["verification"]
    assert record["referee"] == "logits supplied in good.npy" and record["passed"] is True
    code, _, err = run([tiny["model"], *extra, "-o", tmp_path / "b.pth", "--logits", tmp_path / "x.npy", tmp_path / "bad.npy"], capsys)
    assert code == 1 and not (tmp_path / "b.pth").exists()
