"""A checkpoint whose pickle would run code on load is refused, and nothing runs.

The payload, if unpickled by plain `pickle`, opens (so creates) a marker file; the control test
shows it does exactly that, so its absence after the toolkit refused the file proves the toolkit
never executed it.
"""

from __future__ import annotations

import argparse
import builtins
import pickle
import re
import sys
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


# ---- stand-in loading: foreign globals are recorded, never imported or run -----------------------------

EVIL_PACKAGE = '''
from pathlib import Path
Path({imported!r}).write_text("imported")

def boom(path):
    Path(path).write_text("called")

class Trap:
    """Runs code on every path an unpickler could take: reduce, construction, setstate."""
    def __init__(self, path):
        self.path = path
    def __reduce__(self):
        return (Trap, (self.path,), {{"path": self.path}})
    def __new__(cls, *args):
        Path({constructed!r}).write_text("new")
        return object.__new__(cls)
    def __setstate__(self, state):
        Path(state["path"]).write_text("setstate")

class CallsBoom:
    def __init__(self, path):
        self.path = path
    def __reduce__(self):
        return (boom, (self.path,))
'''


def _evil_package(root: Path, markers: dict[str, Path]) -> None:
    pkg = root / "evilpkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(EVIL_PACKAGE.format(imported=str(markers["imported"]), constructed=str(markers["constructed"])))


def _stand_in_evil_file(tmp_path: Path) -> tuple[Path, dict[str, Path], Path]:
    """A torchvision-layout state_dict plus foreign objects whose own code writes marker files."""
    site = tmp_path / "site"
    markers = {name: tmp_path / name for name in ("imported", "constructed", "setstate", "called")}
    _evil_package(site, markers)
    sys.path.insert(0, str(site))
    try:
        import evilpkg

        weights = {"fc.weight": torch.ones(3, 4), "fc.bias": torch.zeros(3)}
        payload = {"state_dict": weights, "trap": evilpkg.Trap(str(markers["setstate"])), "hook": evilpkg.CallsBoom(str(markers["called"]))}
        path = tmp_path / "stand_in_evil.pth"
        torch.save(payload, path)
    finally:
        sys.modules.pop("evilpkg", None)
        sys.path.remove(str(site))
    for marker in markers.values():
        marker.unlink(missing_ok=True)
    return path, markers, site


def test_stand_in_payload_is_live(tmp_path):
    """Control: with the package importable, an unrestricted load runs all three paths."""
    path, markers, site = _stand_in_evil_file(tmp_path)
    sys.path.insert(0, str(site))
    try:
        torch.load(path, weights_only=False)
    finally:
        sys.modules.pop("evilpkg", None)
        sys.path.remove(str(site))
    assert all(m.exists() for m in markers.values()), {k: m.exists() for k, m in markers.items()}


def test_stand_ins_never_import_or_run_foreign_code(tmp_path):
    from resnet_port.checkpoints.untrusted import StandIn, load_untrusted

    path, markers, site = _stand_in_evil_file(tmp_path)
    sys.path.insert(0, str(site))  # importable, so only the loader's own restraint keeps it from running
    try:
        tensors, record, _ = read_raw(path)
        loaded = load_untrusted(path)
        assert "evilpkg" not in sys.modules
    finally:
        sys.modules.pop("evilpkg", None)
        sys.path.remove(str(site))
    assert not any(m.exists() for m in markers.values()), {k: m.exists() for k, m in markers.items()}
    assert set(tensors) == {"fc.weight", "fc.bias"} and record is None
    assert sorted(loaded.stand_ins) == ["evilpkg.Trap", "evilpkg.boom"]
    trap, hook = loaded.payload["trap"], loaded.payload["hook"]
    assert isinstance(trap, StandIn) and trap.qualified_name == "evilpkg.Trap"
    assert trap.args == (str(markers["setstate"]),) and trap.state == {"path": str(markers["setstate"])}
    assert isinstance(hook, StandIn) and hook.qualified_name == "evilpkg.boom" and hook.args == (str(markers["called"]),)


class _Reduces:
    def __init__(self, func, *args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def _code_payloads(marker: Path) -> list[tuple[str, object]]:
    """(global named in the error, payload) for globals that are code by nature; each would create ``marker``."""
    import importlib
    import os
    import runpy
    import subprocess

    script = marker.with_suffix(".py")
    script.write_text(f"open({str(marker)!r}, 'w').close()\n")
    return [
        (f"{os.system.__module__}.system", _Reduces(os.system, f"touch {marker}")),
        ("commands.call (Python 2's name of subprocess.call)", _Reduces(subprocess.call, ["touch", str(marker)])),
        ("builtins.eval", _Reduces(eval, f"open({str(marker)!r}, 'w')")),
        ("builtins.exec", _Reduces(exec, f"open({str(marker)!r}, 'w').close()")),
        ("io.open", _Reduces(open, str(marker), "w")),
        ("runpy.run_path", _Reduces(runpy.run_path, str(script))),
        ("importlib.import_module", _Reduces(importlib.import_module, "this")),  # no marker: import only
        ("builtins.getattr", _Reduces(getattr, argparse.Namespace(system=1), "system")),
        ("builtins.__import__", _Reduces(__import__, "os")),
        ("shutil.rmtree", _Reduces(__import__("shutil").rmtree, str(marker.parent / "nothing-here"), True)),
        ("pickle.loads", _Reduces(pickle.loads, pickle.dumps(1))),
        ("marshal.loads", _Reduces(__import__("marshal").loads, __import__("marshal").dumps(1))),
        ("sys.exit", _Reduces(sys.exit, 0)),
    ]


def test_code_payloads_are_live(tmp_path):
    """Control: the marker-writing payloads do write it under an unrestricted load."""
    marker = tmp_path / "ran"
    for name, payload in _code_payloads(marker):
        if name.split()[-1].rstrip(")") not in ("io.open", "builtins.eval", "builtins.exec", "subprocess.call", "runpy.run_path") and "system" not in name:
            continue
        marker.unlink(missing_ok=True)
        path = tmp_path / "live.pth"
        torch.save({"state_dict": {"fc.weight": torch.ones(1, 1)}, "x": payload}, path)
        result = torch.load(path, weights_only=False)
        del result
        assert marker.exists(), name


def test_code_globals_are_refused_by_name_even_beside_stand_ins(tmp_path):
    marker = tmp_path / "ran"
    for name, payload in _code_payloads(marker):
        path = tmp_path / "code.pth"
        # beside a foreign (stand-in-able) object, so the stand-in path is active for this file
        torch.save({"state_dict": {"fc.weight": torch.ones(1, 1)}, "args": argparse.Namespace(x=1), "x": payload}, path)
        with pytest.raises(CheckpointError, match=rf"code.pth: refused to load: the pickle names the global {re.escape(name)}"):
            read_raw(path)
        assert not marker.exists(), name
