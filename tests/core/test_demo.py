"""The README's main-job command, end to end, as a user runs it (a subprocess, no user files)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_resnet_port_demo_runs_end_to_end(tmp_path):
    out = tmp_path / "demo.json"
    proc = subprocess.run(
        [sys.executable, "-m", "resnet_port", "demo", "--out-dir", str(tmp_path / "work"), "--crops", "10", "--json", str(out)],
        capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    # the Caffe file the writer made converts back to the architecture it came from ...
    assert result["conversion"]["arch"] == "caffe_resnet50" and result["conversion"]["skipped"] == []
    # ... verified by the independent interpreter and against the weights we started from
    assert result["conversion"]["verification"]["max_rel_diff"] < 1e-4
    assert result["round_trip"]["max_rel_diff"] < 1e-4 and result["round_trip"]["top1_agreement"] == 1.0
    assert all(f["weights_bit_exact"] for f in result["files"].values())
    assert result["validation"]["crops"] == 10 and result["validation"]["images"] >= 4
    assert "caffe_resnet50" in proc.stdout and "result: OK" in proc.stdout


def test_demo_refuses_a_non_caffe_arch(capsys):
    from resnet_port.main import main

    assert main(["demo", "--arch", "resnet50"]) == 2
    assert "caffe_resnet50" in capsys.readouterr().err
