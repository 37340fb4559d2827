"""The NDArray file reader and writer, against files MXNet itself wrote and read."""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resnet_port.converters.mxnet import read_ndarray_file, write_ndarray_file
from resnet_port.errors import CheckpointError
from tests.peers.mxnet_cache import PEER_PYTHON

MXNET_FILES = ["gluon_resnet18_v1/model.params", "gluon_resnet18_v2/export-0000.params", "symbolic_resnet18/resnet-18-0000.params"]


def _names_at_end(data: bytes) -> list[str]:
    """The names of an NDArray file, found by walking the records independently of the reader."""
    (count,) = struct.unpack_from("<Q", data, 16)
    pos = 24
    sizes = {0: 4, 1: 8, 2: 2, 3: 1, 4: 4, 5: 1, 6: 8, 7: 1}
    for _ in range(count):
        magic, stype, ndim = struct.unpack_from("<IiI", data, pos)
        assert (magic, stype) == (0xF993FAC9, 0)  # what MXNet 1.9.1 writes
        shape = struct.unpack_from(f"<{ndim}q", data, pos + 12)
        dev_type, dev_id, flag = struct.unpack_from("<iii", data, pos + 12 + 8 * ndim)
        assert (dev_type, dev_id) == (1, 0)  # cpu(0)
        pos += 12 + 8 * ndim + 12 + int(np.prod(shape)) * sizes[flag]
    (name_count,) = struct.unpack_from("<Q", data, pos)
    pos += 8
    names = []
    for _ in range(name_count):
        (length,) = struct.unpack_from("<Q", data, pos)
        names.append(data[pos + 8 : pos + 8 + length].decode())
        pos += 8 + length
    assert pos == len(data)
    return names


@pytest.mark.peer
@pytest.mark.parametrize("relative", MXNET_FILES)
def test_layout_of_files_mxnet_wrote(cache: Path, relative: str, tmp_path: Path) -> None:
    path = cache / relative
    data = path.read_bytes()
    assert struct.unpack_from("<QQ", data, 0) == (0x112, 0)
    arrays = read_ndarray_file(path)
    assert list(arrays) == _names_at_end(data)
    assert all(a.dtype == np.float32 for a in arrays.values())
    # Writing what was read gives back MXNet's file byte for byte.
    write_ndarray_file(tmp_path / "copy.params", arrays)
    assert (tmp_path / "copy.params").read_bytes() == data


@pytest.mark.peer
def test_mxnet_reads_what_we_write(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    named = {
        "f32": rng.normal(size=(2, 3, 4)).astype(np.float32),
        "f64": rng.normal(size=(5,)),
        "f16": rng.normal(size=(3, 2)).astype(np.float16),
        "u8": rng.integers(0, 255, (7,)).astype(np.uint8),
        "i8": rng.integers(-100, 100, (2, 2)).astype(np.int8),
        "i32": rng.integers(-1000, 1000, (4,)).astype(np.int32),
        "i64": rng.integers(-1000, 1000, (3,)).astype(np.int64),
    }
    write_ndarray_file(tmp_path / "named.params", named)
    write_ndarray_file(tmp_path / "list.params", [named["f32"], named["i32"]])
    script = (
        "import json, sys, mxnet as mx\n"
        "out = {}\n"
        "for f in sys.argv[1:]:\n"
        "    d = mx.nd.load(f)\n"
        "    items = d.items() if isinstance(d, dict) else enumerate(d)\n"
        "    out[f] = {str(k): [str(v.dtype.__name__ if hasattr(v.dtype, '__name__') else v.dtype), list(v.shape), v.asnumpy().astype('float64').ravel().tolist()] for k, v in items}\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run(
        [str(PEER_PYTHON), "-c", script, str(tmp_path / "named.params"), str(tmp_path / "list.params")],
        capture_output=True, text=True, timeout=120, check=True,
    )
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    named_seen = seen[str(tmp_path / "named.params")]
    for name, array in named.items():
        dtype, shape, values = named_seen[name]
        assert np.dtype(dtype) == array.dtype and tuple(shape) == array.shape
        np.testing.assert_array_equal(np.array(values), array.astype(np.float64).ravel())
    list_seen = seen[str(tmp_path / "list.params")]
    assert list(list_seen) == ["0", "1"] and tuple(list_seen["1"][1]) == (4,)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    dtype=st.sampled_from(["<f4", "<f8", "<f2", "u1", "i1", "<i4", "<i8", "?"]),
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=4),
    named=st.booleans(),
)
def test_round_trip(tmp_path: Path, dtype: str, shape: list[int], named: bool) -> None:
    array = (np.arange(int(np.prod(shape))) % 7).reshape(shape).astype(dtype)
    path = tmp_path / "rt.params"
    write_ndarray_file(path, {"x": array, "y": array[:1]} if named else [array])
    back = read_ndarray_file(path)
    got = back["x"] if named else back[0]
    assert got.dtype == np.dtype(dtype) and got.shape == array.shape
    np.testing.assert_array_equal(got, array)


def _record(magic: int, ndim_fmt: str, shape: tuple[int, ...], flag: int, payload: bytes) -> bytes:
    return (
        struct.pack(f"<Ii{ndim_fmt}", magic, 0, len(shape))
        + struct.pack(f"<{len(shape)}q", *shape)
        + struct.pack("<iii", 1, 0, flag)
        + payload
    )


def _file(records: list[bytes], names: list[str]) -> bytes:
    out = struct.pack("<QQQ", 0x112, 0, len(records)) + b"".join(records) + struct.pack("<Q", len(names))
    return out + b"".join(struct.pack("<Q", len(n.encode())) + n.encode() for n in names)


def test_bfloat16_and_npx_records(tmp_path: Path) -> None:
    """bf16 (flag 12) is the top half of a float32; npx.save's magic 0xF993FACA has an i32 ndim."""
    values = np.array([1.5, -2.25, 3.0e-3], np.float32)
    bf16 = (values.view(np.uint32) >> 16).astype("<u2").tobytes()
    f32 = np.array([[1, 2], [3, 4]], "<f4")
    path = tmp_path / "mixed.params"
    path.write_bytes(_file([_record(0xF993FAC9, "I", (3,), 12, bf16), _record(0xF993FACA, "i", (2, 2), 0, f32.tobytes())], ["b", "n"]))
    arrays = read_ndarray_file(path)
    expected = (values.view(np.uint32) & 0xFFFF0000).view(np.float32)  # truncated to bf16, computed separately
    np.testing.assert_array_equal(arrays["b"], expected)
    assert arrays["b"].dtype == np.float32
    np.testing.assert_array_equal(arrays["n"], f32)


@pytest.mark.peer
def test_legacy_records_as_mxnet_reads_them(tmp_path: Path) -> None:
    """Files of MXNet < 1.0: magic 0xF993FAC8 (no storage type, i64 dims) and, before 0.9, no magic
    (a u32 ndim, u32 dims).  Written here by hand; MXNet 1.9.1 and the reader must agree on them."""
    a = np.arange(6, dtype="<f4").reshape(2, 3) / 4
    b = np.array([7, -8, 9, 10], "<i4")
    v1 = struct.pack("<II2q", 0xF993FAC8, 2, 2, 3) + struct.pack("<iii", 1, 0, 0) + a.tobytes()
    v0 = struct.pack("<I1I", 1, 4) + struct.pack("<iii", 1, 0, 4) + b.tobytes()
    path = tmp_path / "legacy.params"
    path.write_bytes(_file([v1, v0], ["arg:a", "aux:b"]))
    arrays = read_ndarray_file(path)
    np.testing.assert_array_equal(arrays["arg:a"], a)
    np.testing.assert_array_equal(arrays["aux:b"], b)
    script = (
        "import json, sys, mxnet as mx\n"
        "d = mx.nd.load(sys.argv[1])\n"
        "print(json.dumps({k: [list(v.shape), v.asnumpy().ravel().tolist()] for k, v in d.items()}))\n"
    )
    done = subprocess.run([str(PEER_PYTHON), "-c", script, str(path)], capture_output=True, text=True, timeout=120, check=True)
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["arg:a"] == [[2, 3], a.ravel().tolist()] and seen["aux:b"] == [[4], b.tolist()]


def _good(tmp_path: Path) -> Path:
    path = tmp_path / "good.params"
    write_ndarray_file(path, {"a": np.ones((2, 3), np.float32), "b": np.arange(4, dtype=np.int64)})
    return path


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda d: b"\x00" * 8 + d[8:], "not an MXNet NDArray file"),
        (lambda d: d[:24] + struct.pack("<I", 0x12345678) + d[28:], "magic 0x12345678"),
        (lambda d: d[:28] + struct.pack("<i", 1) + d[32:], "storage type 1"),
        (lambda d: d[:24 + 12 + 16 + 8] + struct.pack("<i", 99) + d[24 + 12 + 16 + 12 :], "unknown dtype flag 99"),
        (lambda d: d[:16] + struct.pack("<Q", 10**12) + d[24:], "claims 1000000000000 arrays"),
        (lambda d: d + b"\x00", "unexpected bytes"),
        (lambda d: d[:32] + struct.pack("<I", 99) + d[36:], "99 dimensions"),
    ],
)
def test_corrupt_files_are_refused(tmp_path: Path, mutate, message: str) -> None:
    path = _good(tmp_path)
    path.write_bytes(mutate(path.read_bytes()))
    with pytest.raises(CheckpointError, match=message) as info:
        read_ndarray_file(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_every_truncation_is_refused(tmp_path: Path) -> None:
    path = _good(tmp_path)
    data = path.read_bytes()
    for size in range(len(data)):
        path.write_bytes(data[:size])
        with pytest.raises(CheckpointError, match="truncated|not an MXNet|more than a file") as info:
            read_ndarray_file(path)
        assert str(path) in str(info.value)


def test_name_count_must_match(tmp_path: Path) -> None:
    path = tmp_path / "names.params"
    path.write_bytes(_file([_record(0xF993FAC9, "I", (1,), 0, b"\x00" * 4)] * 2, ["only_one"]))
    with pytest.raises(CheckpointError, match="2 arrays but 1 names"):
        read_ndarray_file(path)


@pytest.mark.fuzz
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_mutations_raise_only_checkpoint_errors(tmp_path: Path, data) -> None:
    original = bytearray(_good(tmp_path).read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(original) - 1))
        original[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(original)))
    path = tmp_path / "fuzz.params"
    path.write_bytes(bytes(original[:cut]))
    try:
        read_ndarray_file(path)
    except CheckpointError:
        pass
