"""A checkpoint whose pickle would run code on load is refused, and nothing runs.

The payload, if unpickled by plain `pickle`, opens (so creates) a marker file; the control test
shows it does exactly that, so its absence after the toolkit refused the file proves the toolkit
never executed it.
"""

from __future__ import annotations

import builtins
import pickle
from pathlib import Path

import pytest
import torch

from resnet_port.audit.cli import main as audit_main
from resnet_port.audit.sources import load_side
from resnet_port.checkpoints import load_model, read_raw
from resnet_port.errors import CheckpointError


class _CreatesFile:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.open, (str(self.marker), "w"))


def _evil_files(folder: Path, marker: Path) -> list[Path]:
    weights = {"fc.weight": torch.ones(2, 2)}
    zipped, legacy, raw = folder / "zip.pth", folder / "legacy.pth", folder / "raw.pth"
    torch.save({"state_dict": weights, "hook": _CreatesFile(marker)}, zipped)
    torch.save({"state_dict": weights, "hook": _CreatesFile(marker)}, legacy, _use_new_zipfile_serialization=False)
    raw.write_bytes(pickle.dumps({"state_dict": weights, "hook": _CreatesFile(marker)}, protocol=2))
    return [zipped, legacy, raw]


def test_payload_is_live(tmp_path):
    """Control: plain pickle runs the payload, so the refusal tests below are meaningful."""
    marker = tmp_path / "ran"
    for path in _evil_files(tmp_path, marker):
        marker.unlink(missing_ok=True)
        if path.name == "raw.pth":
            pickle.loads(path.read_bytes())
        else:
            torch.load(path, weights_only=False)
        assert marker.exists(), path


@pytest.mark.parametrize("loader", [read_raw, load_model, lambda p: load_side("A", p)], ids=["read_raw", "load_model", "audit.load_side"])
def test_code_running_pickle_is_refused(tmp_path, loader):
    marker = tmp_path / "ran"
    for path in _evil_files(tmp_path, marker):
        with pytest.raises(CheckpointError, match="refused to load"):
            loader(path)
        assert not marker.exists(), f"{path.name}: the pickle ran code"


def test_audit_cli_refuses_it(tmp_path, capsys):
    marker = tmp_path / "ran"
    evil = _evil_files(tmp_path, marker)[0]
    out = tmp_path / "report.json"
    code = audit_main([str(evil), str(evil), "--json", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert not marker.exists()
    assert not out.exists()
    assert len(err.strip().splitlines()) == 1 and "refused to load" in err and str(evil) in err
