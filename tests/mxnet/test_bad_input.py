"""Unusable input: one line naming the file and what was expected, exit code 2, no output file."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from resnet_port.converters.mxnet import read_ndarray_file, write_ndarray_file
from resnet_port.converters.mxnet.cli import main

pytestmark = pytest.mark.peer  # the inputs are MXNet-written files, damaged here


def _refused(capsys, tmp_path: Path, argv: list[str], *expected: str) -> str:
    out = tmp_path / "out.pth"
    code = main([*map(str, argv), "-o", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    for text in expected:
        assert text in err, err
    assert not out.exists() and not list(tmp_path.glob(".out.pth.*"))
    return err


@pytest.fixture()
def r18(cache: Path, tmp_path: Path) -> dict[str, np.ndarray]:
    return read_ndarray_file(cache / "gluon_resnet18_v1" / "model.params")


def test_wrong_magic(capsys, tmp_path: Path) -> None:
    bad = tmp_path / "not_mxnet.params"
    bad.write_bytes(b"PK\x03\x04" + bytes(100))
    _refused(capsys, tmp_path, [bad], str(bad), "not an MXNet NDArray file", "expected 0x112")


def test_truncated_file(capsys, cache: Path, tmp_path: Path) -> None:
    bad = tmp_path / "cut.params"
    data = (cache / "gluon_resnet18_v1" / "model.params").read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    _refused(capsys, tmp_path, [bad], str(bad), "truncated")


def test_unknown_dtype(capsys, cache: Path, tmp_path: Path) -> None:
    bad = tmp_path / "dtype.params"
    data = bytearray((cache / "gluon_resnet18_v1" / "model.params").read_bytes())
    # First record: magic, stype, ndim=4, 4 dims, context, then the dtype flag.
    offset = 24 + 12 + 4 * 8 + 8
    assert struct.unpack_from("<i", data, offset)[0] == 0
    struct.pack_into("<i", data, offset, 42)
    bad.write_bytes(bytes(data))
    _refused(capsys, tmp_path, [bad], str(bad), "unknown dtype flag 42", "array #0")


def test_names_that_fit_no_arch(capsys, tmp_path: Path) -> None:
    bad = tmp_path / "other.params"
    write_ndarray_file(bad, {"encoder.layer.0.weight": np.zeros((4, 4), np.float32)})
    _refused(capsys, tmp_path, [bad], str(bad), "fit no Gluon ResNet V1 or V2 layout")


def test_a_name_that_fits_no_row(capsys, tmp_path: Path, r18) -> None:
    bad = tmp_path / "extra.params"
    write_ndarray_file(bad, {**r18, "features.4.0.body.9.weight": np.zeros((1,), np.float32)})
    _refused(capsys, tmp_path, [bad], str(bad), "features.4.0.body.9.weight", "fit no Gluon ResNet V1 name")


def test_shape_mismatch(capsys, tmp_path: Path, r18) -> None:
    bad = tmp_path / "shape.params"
    write_ndarray_file(bad, {**r18, "features.5.0.body.3.weight": np.zeros((128, 64, 3, 3), np.float32)})
    _refused(capsys, tmp_path, [bad], str(bad), "layer2.0.conv2.weight", "(128, 64, 3, 3)", "(128, 128, 3, 3)")


def test_wrong_arch(capsys, cache: Path, tmp_path: Path) -> None:
    _refused(
        capsys, tmp_path, [cache / "gluon_resnet18_v1" / "model.params", "--arch", "resnet18"],
        "describe resnet18_v1, not --arch resnet18", "stride_in",
    )
    _refused(capsys, tmp_path, [cache / "gluon_resnet18_v1" / "model.params", "--arch", "resnet19"], "unknown architecture 'resnet19'")


def test_integer_weights(capsys, tmp_path: Path, r18) -> None:
    bad = tmp_path / "int.params"
    write_ndarray_file(bad, {**r18, "output.bias": np.zeros((1000,), np.int32)})
    _refused(capsys, tmp_path, [bad], str(bad), "output.bias", "int32", "floating-point")


def test_export_params_without_symbol(capsys, cache: Path, tmp_path: Path) -> None:
    bad = tmp_path / "weights.params"
    shutil.copy(cache / "gluon_resnet18_v1" / "export-0000.params", bad)
    _refused(capsys, tmp_path, [bad], str(bad), "pass its symbol JSON with --symbol")


def test_params_of_another_symbol(capsys, cache: Path, tmp_path: Path) -> None:
    params = cache / "symbolic_resnet18" / "resnet-18-0000.params"
    symbol = cache / "symbolic_resnet34" / "resnet-34-symbol.json"
    _refused(capsys, tmp_path, [params, "--symbol", symbol], str(symbol), "stage1_unit3", "no tensor for")


def _symbol(cache: Path) -> dict:
    return json.loads((cache / "symbolic_resnet18" / "resnet-18-symbol.json").read_text())


def _write(tmp_path: Path, graph: dict) -> Path:
    path = tmp_path / "bad-symbol.json"
    path.write_text(json.dumps(graph))
    return path


def test_symbol_with_an_unknown_operator(capsys, cache: Path, tmp_path: Path) -> None:
    graph = _symbol(cache)
    node = next(n for n in graph["nodes"] if n["name"] == "stage2_unit1_relu2")
    node["op"] = "LeakyReLU"
    params = cache / "symbolic_resnet18" / "resnet-18-0000.params"
    _refused(capsys, tmp_path, [params, "--symbol", _write(tmp_path, graph)], "'stage2_unit1_relu2' (LeakyReLU)", "does not know")


def test_symbol_that_is_not_a_resnet(capsys, cache: Path, tmp_path: Path) -> None:
    graph = _symbol(cache)
    node = next(n for n in graph["nodes"] if n["name"] == "stage3_unit2_relu1")
    node["attrs"]["act_type"] = "tanh"
    params = cache / "symbolic_resnet18" / "resnet-18-0000.params"
    _refused(capsys, tmp_path, [params, "--symbol", _write(tmp_path, graph)], "stage3_unit2_relu1", "act_type tanh; expected relu")
    # A unit whose body lost a layer no longer reads as a residual unit.
    graph = _symbol(cache)
    conv2 = next(i for i, n in enumerate(graph["nodes"]) if n["name"] == "stage1_unit2_conv2")
    add = next(n for n in graph["nodes"] if n["op"] == "elemwise_add" and n["inputs"][0][0] == conv2)
    add["inputs"][0] = list(graph["nodes"][conv2]["inputs"][0])  # skip conv2: add relu2 instead
    _refused(capsys, tmp_path, [params, "--symbol", _write(tmp_path, graph)], "_plus1", "has body bn -> relu -> conv -> bn -> relu")


def test_symbol_not_json(capsys, cache: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad-symbol.json"
    bad.write_text("{nodes: [")
    params = cache / "symbolic_resnet18" / "resnet-18-0000.params"
    _refused(capsys, tmp_path, [params, "--symbol", bad], str(bad), "not an MXNet symbol file")


def test_missing_file(capsys, tmp_path: Path) -> None:
    _refused(capsys, tmp_path, [tmp_path / "absent.params"], "absent.params", "cannot read")


def test_failed_parity_exits_1_and_writes_nothing(capsys, cache: Path, tmp_path: Path) -> None:
    folder = cache / "gluon_resnet18_v1"
    wrong = tmp_path / "wrong_logits.npy"
    np.save(wrong, np.load(folder / "logits_mxnet.npy") + 1.0)
    out = tmp_path / "out.pth"
    code = main([str(folder / "model.params"), "-o", str(out), "--verify", str(folder / "input.npy"), str(wrong)])
    assert code == 1 and not out.exists()
    assert "check failed" in capsys.readouterr().err


def test_console_script(tmp_path: Path) -> None:
    """The installed `convert-mxnet` command: --help explains, unusable input exits 2 with one line."""
    import shutil
    import subprocess
    import sys

    command = shutil.which("convert-mxnet") or str(Path(sys.executable).parent / "convert-mxnet")
    shown = subprocess.run([command, "--help"], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and "--symbol" in shown.stdout and "Exit codes" in shown.stdout
    bad = tmp_path / "bad.params"
    bad.write_bytes(b"not mxnet at all")
    done = subprocess.run([command, str(bad), "-o", str(tmp_path / "o.pth")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and str(bad) in done.stderr
    assert not (tmp_path / "o.pth").exists()
