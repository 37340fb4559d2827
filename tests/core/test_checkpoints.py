"""The checkpoint format: bit-exact round trips, metadata intact, atomic writes, hostile files refused."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from resnet_port.checkpoints import (
    CheckpointMetadata,
    Preprocessing,
    SourceFile,
    SourceInfo,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from resnet_port.checkpoints.inspect import main as inspect_main
from resnet_port.errors import CheckpointError
from resnet_port.resnet_ref import count_params, create_model

torch.set_num_threads(1)


def _model_and_meta(tmp_path, arch="caffe_resnet50"):
    torch.manual_seed(0)
    model = create_model(arch, num_classes=10).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    src = tmp_path / "source.bin"
    src.write_bytes(b"pretend this is a caffemodel")
    mean_image = np.random.default_rng(0).uniform(90, 130, size=(3, 224, 224)).astype(np.float32)
    meta = CheckpointMetadata(
        spec=model.spec,
        arch=arch,
        preprocessing=Preprocessing("BGR", 255.0, None, None, mean_image=mean_image),
        source=SourceInfo("caffe", [SourceFile.of(src)], {"prototxt": "deploy.prototxt"}),
        conversion_report={"mapped": {"conv1.weight": "conv1/0"}, "skipped": []},
        verification={"max_rel_diff": 1.5e-7},
        published={"top1_error_1crop": 24.7},
    )
    return model, meta


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_round_trip_is_bit_exact_and_keeps_metadata(tmp_path, suffix):
    model, meta = _model_and_meta(tmp_path)
    path = tmp_path / f"model{suffix}"
    save_checkpoint(path, model.spec, model.state_dict(), meta)
    spec, state, meta2 = load_checkpoint(path)
    assert spec == model.spec
    original = model.state_dict()
    assert set(state) == set(original)
    for key, value in original.items():
        assert state[key].dtype == value.dtype and torch.equal(state[key], value), key
    assert meta2.to_dict() == {**meta.to_dict(), "num_params": count_params(model)}
    np.testing.assert_array_equal(meta2.preprocessing.mean_image, meta.preprocessing.mean_image)
    assert meta2.source.files[0].sha256 == meta.source.files[0].sha256
    loaded, _ = load_model(path)
    assert not loaded.training
    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        assert torch.equal(loaded(x), model(x))


def test_safetensors_header_holds_one_namespaced_json_record(tmp_path):
    from safetensors import safe_open

    model, meta = _model_and_meta(tmp_path, "resnet18")
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, model.spec, model.state_dict(), meta)
    with safe_open(str(path), "pt") as handle:
        header = handle.metadata()
    assert set(header) == {"resnet_port"}
    record = json.loads(header["resnet_port"])
    assert record["format_version"] == 1 and record["metadata"]["arch"] == "resnet18"


def test_a_failed_write_leaves_no_file(tmp_path, monkeypatch):
    model, meta = _model_and_meta(tmp_path, "resnet18")
    path = tmp_path / "out.pth"
    # weights that do not fit the spec: refused before anything is written
    bad = dict(model.state_dict())
    bad["fc.weight"] = torch.zeros(3, 3)
    with pytest.raises(CheckpointError, match="fc.weight"):
        save_checkpoint(path, model.spec, bad, meta)
    # a failure in the middle of writing (disk full, say): the partial temp file is removed
    real_save = torch.save

    def failing_save(obj, f, *args, **kwargs):
        real_save({"partial": torch.zeros(10)}, f)
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError):
        save_checkpoint(path, model.spec, model.state_dict(), meta)
    assert os.listdir(tmp_path) == ["source.bin"]


def test_an_existing_file_survives_a_failed_overwrite(tmp_path):
    model, meta = _model_and_meta(tmp_path, "resnet18")
    path = tmp_path / "out.safetensors"
    save_checkpoint(path, model.spec, model.state_dict(), meta)
    before = path.read_bytes()
    bad = dict(model.state_dict())
    del bad["layer1.0.conv1.weight"]
    with pytest.raises(CheckpointError, match="missing: layer1.0.conv1.weight"):
        save_checkpoint(path, model.spec, bad, meta)
    assert path.read_bytes() == before


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_truncated_and_corrupted_files_give_a_clear_error(tmp_path, suffix):
    model, meta = _model_and_meta(tmp_path, "resnet18")
    path = tmp_path / f"good{suffix}"
    save_checkpoint(path, model.spec, model.state_dict(), meta)
    data = path.read_bytes()
    truncated = tmp_path / f"truncated{suffix}"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_model(truncated)
    flipped = bytearray(data)
    for i in range(100, len(flipped), 997):
        flipped[i] ^= 0xFF
    corrupted = tmp_path / f"corrupted{suffix}"
    corrupted.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="corrupted"):
        load_model(corrupted)


@pytest.mark.parametrize(
    "content,expected",
    [(b"", "too short"), (b"hello world, not a checkpoint at all", "not a PyTorch or safetensors"), (b"\x89PNG\r\n\x1a\n" + bytes(100), "not a PyTorch")],
)
def test_non_checkpoint_files_are_named_in_the_error(tmp_path, content, expected):
    path = tmp_path / "notes.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=f"notes.pth.*{expected}"):
        load_model(path)
    with pytest.raises(CheckpointError, match="no such file"):
        load_model(tmp_path / "absent.pth")


class _RunsCode:
    """A pickle payload that would create a file when unpickled."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("wrap", ["bare", "in_state_dict"])
def test_a_pickle_that_would_run_code_is_refused_and_nothing_runs(tmp_path, wrap):
    marker = tmp_path / "pwned"
    payload = _RunsCode(str(marker))
    obj = payload if wrap == "bare" else {"state_dict": {"conv1.weight": torch.zeros(1), "evil": payload}}
    path = tmp_path / "evil.pth"
    torch.save(obj, path)
    # sanity: an unrestricted unpickler WOULD run it (proved in a child process, then cleaned up)
    probe = tmp_path / "probe.pth"
    torch.save(_RunsCode(str(tmp_path / "probe_ran")), probe)
    subprocess.run(
        [sys.executable, "-c", f"import torch; torch.load({str(probe)!r}, weights_only=False)"], check=False, capture_output=True
    )
    assert (tmp_path / "probe_ran").exists()
    with pytest.raises(CheckpointError, match="evil.pth.*refused"):
        load_model(path)
    assert not marker.exists()
    # and a raw pickle (not a torch zip) is refused the same way
    raw = tmp_path / "evil_raw.pth"
    raw.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(CheckpointError, match="refused"):
        load_model(raw)
    assert not marker.exists()


def test_inspect_checkpoint_cli(tmp_path, capsys):
    model, meta = _model_and_meta(tmp_path, "resnet50_v1d")
    path = tmp_path / "v1d.safetensors"
    save_checkpoint(path, model.spec, model.state_dict(), meta)
    out_json = tmp_path / "info.json"
    assert inspect_main([str(path), "--json", str(out_json)]) == 0
    info = json.loads(out_json.read_text())
    # recomputed independently of the metadata: parameters from the tensors themselves
    n_params = sum(v.numel() for k, v in model.named_parameters())
    assert info["num_params"] == n_params
    assert round((n_params - 10 * 2048 - 10 + 1000 * 2048 + 1000) / 1e6, 2) == 25.58  # the published V1d-50
    assert info["arch"] == "resnet50_v1d" and info["source"]["files"][0]["path"] == "source.bin"
    assert info["flops"] / 1e9 == pytest.approx(4.36, rel=0.01)
    assert "resnet50_v1d" in capsys.readouterr().out
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"garbage" * 10)
    assert inspect_main([str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.pth" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_get_the_permissions_of_any_new_file(tmp_path, umask, expected):
    """atomic_output writes through mkstemp (0600); the result must be what open() would have made."""
    from resnet_port.checkpoints.io import atomic_output

    old = os.umask(umask)
    try:
        with atomic_output(tmp_path / "report.json") as tmp:
            tmp.write_text("{}")
        control = tmp_path / "control.json"
        control.write_text("{}")
    finally:
        os.umask(old)
    assert (tmp_path / "report.json").stat().st_mode & 0o777 == expected == control.stat().st_mode & 0o777
