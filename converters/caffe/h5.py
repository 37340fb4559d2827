"""Caffe's HDF5 snapshots (``.caffemodel.h5``): group ``data``, one subgroup per layer with
parameters, datasets ``0``, ``1``, ... in blob order.  They hold no net definition."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from converters.caffe.errors import CaffeFormatError


def read_caffemodel_h5(path: str | Path):
    """A `CaffeModel` with ``net=None`` and the blobs of every layer group, in blob order."""
    import h5py

    from converters.caffe.caffemodel import CaffeModel

    path = Path(path)
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise CaffeFormatError(f"{path}: not a readable HDF5 file: {exc}") from exc
    blobs: dict[str, list[np.ndarray]] = {}
    with handle:
        if "data" not in handle or not isinstance(handle["data"], h5py.Group):
            raise CaffeFormatError(f"{path}: not a Caffe HDF5 snapshot: it has no 'data' group")
        for layer_name, group in handle["data"].items():
            if not isinstance(group, h5py.Group):
                raise CaffeFormatError(f"{path}: data/{layer_name} is not a layer group")
            keys = sorted(group.keys(), key=lambda k: int(k) if k.isdigit() else -1)
            if [k for k in keys] != [str(i) for i in range(len(keys))]:
                raise CaffeFormatError(f"{path}: layer {layer_name!r} has datasets {keys}, expected 0, 1, ...")
            try:
                blobs[layer_name] = [np.asarray(group[k][()]) for k in keys]
            except OSError as exc:
                raise CaffeFormatError(f"{path}: layer {layer_name!r}: unreadable dataset: {exc}") from exc
    return CaffeModel(path, None, blobs)


def write_caffemodel_h5(path: str | Path, blobs: Mapping[str, Sequence[np.ndarray]]) -> Path:
    """Write blobs by layer name as Caffe's ``Net::ToHDF5`` does (atomically)."""
    import h5py

    from checkpoints import atomic_output

    path = Path(path)
    with atomic_output(path) as tmp:
        with h5py.File(tmp, "w") as handle:
            data = handle.create_group("data")
            for layer_name, arrays in blobs.items():
                if not len(arrays):
                    continue
                group = data.create_group(layer_name)
                for i, array in enumerate(arrays):
                    group.create_dataset(str(i), data=np.asarray(array))
    return path


__all__ = ["read_caffemodel_h5", "write_caffemodel_h5"]
