"""MXNet's NDArray file format (``nd.save`` / ``save_parameters`` / ``export`` / ``save_checkpoint``),
read and written with numpy alone, so that converting needs no MXNet.

The layout, little-endian, as MXNet 1.x writes it (and as the tests confirm on files MXNet wrote):

    u64 0x112                     list magic
    u64 0                         reserved
    u64 N                         number of arrays, then N array records:
        u32 magic                 0xF993FAC9 (nd.save) or 0xF993FACA (npx.save, numpy semantics)
        i32 storage type          0 = dense (sparse arrays are refused)
        shape                     ndim (u32 for 0xF993FAC9, i32 for 0xF993FACA), then ndim x i64
                                  (older files: magic 0xF993FAC8 has no storage type; before MXNet
                                  0.9 there is no magic, the record starts with a u32 ndim and its
                                  dims are u32)
        [nothing more when the shape is empty / unknown]
        i32 dev_type, i32 dev_id  the context it was saved from (ignored)
        i32 dtype                 see DTYPES
        raw C-order data
    u64 M                         number of names: N, or 0 for an unnamed list
        M x (u64 length, UTF-8 bytes)

Every read is bounds-checked: a truncated or corrupt file raises `CheckpointError` naming the file,
the array and the byte offset, never an IndexError or a silent short array.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from resnet_port.errors import CheckpointError

LIST_MAGIC = 0x112
NDARRAY_MAGIC_V2 = 0xF993FAC9  # nd.save: u32 ndim, an empty shape means "no data"
NDARRAY_MAGIC_V3 = 0xF993FACA  # npx.save: i32 ndim, -1 means unknown, 0 is a scalar
NDARRAY_MAGIC_V1 = 0xF993FAC8  # MXNet 0.9-0.12 (before storage types)
MAX_NDIM = 32  # a record whose first word is at most this is a pre-0.9 one: that word is its ndim
STORAGE_DENSE = 0
BF16 = 12

# MXNet's type flags (mshadow) and the numpy dtypes they hold; bf16 is widened to float32 on read.
DTYPES: dict[int, np.dtype] = {
    0: np.dtype("<f4"),
    1: np.dtype("<f8"),
    2: np.dtype("<f2"),
    3: np.dtype("u1"),
    4: np.dtype("<i4"),
    5: np.dtype("i1"),
    6: np.dtype("<i8"),
    7: np.dtype("?"),
    BF16: np.dtype("<u2"),
}
DTYPE_NAMES = {0: "float32", 1: "float64", 2: "float16", 3: "uint8", 4: "int32", 5: "int8", 6: "int64", 7: "bool", 12: "bfloat16"}
FLAG_OF_DTYPE = {dtype: flag for flag, dtype in DTYPES.items() if flag != BF16}


class _Reader:
    """A cursor over the file's bytes whose reads fail with the file, the offset and what was read."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.path = path

    def take(self, size: int, what: str) -> memoryview:
        if size < 0 or self.pos + size > len(self.data):
            raise CheckpointError(
                f"{self.path}: truncated MXNet NDArray file: {what} needs {size} bytes at offset {self.pos}, "
                f"only {len(self.data) - self.pos} left"
            )
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))

    def u64(self, what: str) -> int:
        return self.unpack("<Q", what)[0]


def _read_array(reader: _Reader, index: int) -> np.ndarray | None:
    """One array record; None for an array saved without data (empty or unknown shape)."""
    where = f"array #{index}"
    start = reader.pos
    (magic,) = reader.unpack("<I", f"the magic of {where}")
    dim_format = "q"
    if magic in (NDARRAY_MAGIC_V2, NDARRAY_MAGIC_V3):
        (stype,) = reader.unpack("<i", f"the storage type of {where}")
        if stype != STORAGE_DENSE:
            raise CheckpointError(f"{reader.path}: {where} has storage type {stype}; only dense arrays (0) are supported")
        (ndim,) = reader.unpack("<I" if magic == NDARRAY_MAGIC_V2 else "<i", f"the ndim of {where}")
    elif magic == NDARRAY_MAGIC_V1:  # MXNet 0.9-0.12: no storage type, u32 ndim, i64 dims
        (ndim,) = reader.unpack("<I", f"the ndim of {where}")
    elif magic <= MAX_NDIM:  # before 0.9: no magic at all; the first word is ndim, the dims are u32
        ndim, dim_format = magic, "I"
    else:
        raise CheckpointError(
            f"{reader.path}: {where} at offset {start} has magic 0x{magic:08X}; expected 0x{NDARRAY_MAGIC_V2:08X} "
            f"(nd.save), 0x{NDARRAY_MAGIC_V3:08X} (npx.save), 0x{NDARRAY_MAGIC_V1:08X} (MXNet < 1.0) or a legacy ndim"
        )
    if ndim == -1 or (ndim == 0 and magic != NDARRAY_MAGIC_V3):
        return None  # saved with no shape: MXNet writes nothing more for it
    if not 0 <= ndim <= MAX_NDIM:
        raise CheckpointError(f"{reader.path}: {where} claims {ndim} dimensions; expected 0 to {MAX_NDIM}")
    shape = reader.unpack(f"<{ndim}{dim_format}", f"the shape of {where}")
    if any(d < 0 for d in shape):
        if magic == NDARRAY_MAGIC_V3 and any(d == -1 for d in shape):
            return None  # a shape with unknown dimensions carries no data either
        raise CheckpointError(f"{reader.path}: {where} has a negative dimension in shape {shape}")
    reader.unpack("<ii", f"the context of {where}")
    (flag,) = reader.unpack("<i", f"the dtype of {where}")
    if flag not in DTYPES:
        known = ", ".join(f"{k} {v}" for k, v in DTYPE_NAMES.items())
        raise CheckpointError(f"{reader.path}: {where} has unknown dtype flag {flag}; known flags: {known}")
    dtype = DTYPES[flag]
    count = math.prod(shape)  # Python ints: a forged shape must not wrap around int64 to a small count
    raw = reader.take(count * dtype.itemsize, f"the {DTYPE_NAMES[flag]} data of {where} with shape {tuple(shape)}")
    try:
        array = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
    except ValueError as exc:  # an empty array with a forged huge dimension (found by fuzzing)
        raise CheckpointError(f"{reader.path}: {where} has an impossible shape {tuple(shape)} ({exc})") from exc
    if flag == BF16:
        # bfloat16 is the top half of a float32: widen exactly.
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array.astype(array.dtype.newbyteorder("="), copy=False)


def read_ndarray_file(path: str | Path) -> dict[str, np.ndarray] | list[np.ndarray]:
    """Read an MXNet NDArray file: a dict name -> array for a named file, a list for an unnamed one.

    Arrays saved without data (an empty shape) are dropped from a named file and kept as empty
    float32 arrays in a list, so that list positions still match what MXNet saved.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read the file: {exc.strerror or exc}") from exc
    reader = _Reader(data, path)
    magic = reader.u64("the file magic")
    if magic != LIST_MAGIC:
        raise CheckpointError(
            f"{path}: not an MXNet NDArray file: magic 0x{magic:X}, expected 0x{LIST_MAGIC:X} "
            "(the file nd.save, save_parameters and export write)"
        )
    reader.u64("the reserved field")
    count = reader.u64("the array count")
    if count * 24 > len(data):  # every record takes at least 24 bytes
        raise CheckpointError(f"{path}: claims {count} arrays, more than a file of {len(data)} bytes can hold")
    arrays = [_read_array(reader, i) for i in range(count)]
    name_count = reader.u64("the name count")
    if name_count not in (0, count):
        raise CheckpointError(f"{path}: holds {count} arrays but {name_count} names; expected {count} or 0")
    names = []
    for i in range(name_count):
        length = reader.u64(f"the length of name #{i}")
        raw = reader.take(length, f"name #{i}")
        try:
            names.append(bytes(raw).decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise CheckpointError(f"{path}: name #{i} is not UTF-8: {exc}") from exc
    if reader.pos != len(data):
        raise CheckpointError(f"{path}: {len(data) - reader.pos} unexpected bytes after the names, at offset {reader.pos}")
    if not name_count:
        return [np.zeros((0,), np.float32) if a is None else a for a in arrays]
    out: dict[str, np.ndarray] = {}
    for name, array in zip(names, arrays):
        if name in out:
            raise CheckpointError(f"{path}: the name {name!r} occurs twice")
        if array is not None:
            out[name] = array
    return out


def _encode_array(array: np.ndarray, name: str) -> bytes:
    array = np.asarray(array)
    dtype = array.dtype.newbyteorder("<")
    flag = FLAG_OF_DTYPE.get(dtype)
    if flag is None:
        raise CheckpointError(f"array {name!r}: dtype {array.dtype} has no MXNet type flag; use one of {', '.join(DTYPE_NAMES.values())}")
    header = struct.pack("<IiI", NDARRAY_MAGIC_V2, STORAGE_DENSE, array.ndim)
    if array.ndim == 0:
        raise CheckpointError(f"array {name!r}: nd.save cannot hold a 0-d array; reshape it to (1,)")
    header += struct.pack(f"<{array.ndim}q", *array.shape)
    header += struct.pack("<iii", 1, 0, flag)  # context: cpu(0), as MXNet's own saves from the CPU
    return header + np.ascontiguousarray(array, dtype=dtype).tobytes()


def write_ndarray_file(path: str | Path, arrays: Mapping[str, np.ndarray] | Sequence[np.ndarray]) -> Path:
    """Write arrays as ``nd.save`` does: a mapping gives a named file, a sequence an unnamed one.

    Written atomically (a temporary file renamed into place), so no half-written file is left.
    """
    from resnet_port.checkpoints.io import atomic_output

    if isinstance(arrays, Mapping):
        names = [str(n) for n in arrays]
        values = list(arrays.values())
    else:
        names, values = [], list(arrays)
    parts = [struct.pack("<QQQ", LIST_MAGIC, 0, len(values))]
    parts += [_encode_array(v, names[i] if names else f"#{i}") for i, v in enumerate(values)]
    parts.append(struct.pack("<Q", len(names)))
    for name in names:
        encoded = name.encode("utf-8")
        parts.append(struct.pack("<Q", len(encoded)) + encoded)
    path = Path(path)
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as handle:
            for part in parts:
                handle.write(part)
    return path


__all__ = ["DTYPES", "DTYPE_NAMES", "read_ndarray_file", "write_ndarray_file"]
