"""`resnet-port <verb>`: one command for every tool; the console scripts stay as aliases of the same
functions, with the same --help."""

from __future__ import annotations

import shutil
import subprocess
import sys
import re
from pathlib import Path

import pytest

from resnet_port.main import VERBS, main

ROOT = Path(__file__).resolve().parents[2]
# [project.scripts] read with a regex: tomllib is Python >= 3.11 and the project supports 3.10.
_SECTION = re.search(r"^\[project\.scripts\]\n(.*?)(?:^\[|\Z)", (ROOT / "pyproject.toml").read_text(), re.M | re.S).group(1)
SCRIPTS = dict(re.findall(r'^([\w-]+)\s*=\s*"([^"]+)"', _SECTION, re.M))
ALL_VERBS = ["convert-caffe", "convert-mxnet", "convert-onnx", "validate", "audit", "inspect-checkpoint",
             "convert-solver", "recalibrate-bn", "demo", "archs"]


def _help(function, argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        function(argv)
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_every_tool_is_a_verb_and_every_console_script_an_alias():
    assert list(VERBS) == ALL_VERBS
    assert SCRIPTS["resnet-port"] == "resnet_port.main:main"
    for name, target in SCRIPTS.items():
        if name != "resnet-port":
            assert VERBS[name].target == target, name  # the alias runs the very same function


def test_top_level_help_lists_each_verb_on_one_line(capsys):
    text = _help(main, ["--help"], capsys)
    for name, verb in VERBS.items():
        lines = [line for line in text.splitlines() if line.split()[:1] == [name]]
        assert len(lines) == 1 and verb.summary in lines[0], name


@pytest.mark.parametrize("name", ALL_VERBS)
def test_verb_help_equals_the_console_script_help(name, capsys, monkeypatch):
    through_main = _help(main, [name, "--help"], capsys)
    monkeypatch.setattr(sys, "argv", [name, "--help"])  # as the console script is started
    direct = _help(lambda argv: VERBS[name].load()(None), None, capsys)
    assert through_main == direct and "usage:" in direct
    if name in SCRIPTS:
        assert f"usage: {name}" in direct


def test_installed_commands_give_the_same_help():
    """The installed entry points themselves: `resnet-port convert-caffe --help` == `convert-caffe --help`."""
    bindir = Path(sys.executable).parent
    for name in ("convert-caffe", "validate"):
        alias = shutil.which(name) or str(bindir / name)
        front = shutil.which("resnet-port") or str(bindir / "resnet-port")
        a = subprocess.run([front, name, "--help"], capture_output=True, text=True, timeout=120)
        b = subprocess.run([alias, "--help"], capture_output=True, text=True, timeout=120)
        assert a.returncode == b.returncode == 0 and a.stdout == b.stdout, name
    module = subprocess.run([sys.executable, "-m", "resnet_port", "--help"], capture_output=True, text=True, timeout=120)
    assert module.returncode == 0 and "convert-mxnet" in module.stdout


def test_errors_exit_2_with_one_line(capsys, tmp_path):
    assert main([]) == 2
    assert "give a verb" in capsys.readouterr().err
    assert main(["convertcaffe"]) == 2
    assert "unknown verb 'convertcaffe'" in capsys.readouterr().err
    # A verb's own errors keep its name and exit code, as its console script.
    assert main(["convert-caffe", str(tmp_path / "absent.caffemodel"), "-o", str(tmp_path / "x.pth")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("convert-caffe: error:") and "absent.caffemodel" in err[0]
    assert list(tmp_path.iterdir()) == []
