"""Caffe's HDF5 snapshots (``.caffemodel.h5``): group ``data``, one subgroup per layer with
parameters, datasets ``0``, ``1``, ... in blob order.  They hold no net definition."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from resnet_port.converters.caffe.errors import CaffeFormatError


def read_caffemodel_h5(path: str | Path):
    """A `CaffeModel` with ``net=None`` and the blobs of every layer group, in blob order."""
    import h5py

    from resnet_port.converters.caffe.caffemodel import CaffeModel

    path = Path(path)
    try:
        handle = h5py.File(path, "r")
    except (OSError, RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise CaffeFormatError(f"{path}: not a readable HDF5 file: {exc}") from exc
    try:
        with handle:
            blobs = _read_groups(handle, path)
    except CaffeFormatError:
        raise
    except (RuntimeError, KeyError, ValueError, TypeError, UnicodeDecodeError, OSError) as exc:
        # h5py reports damage inside the file in many ways (group lookup, iteration, dataset read).
        raise CaffeFormatError(f"{path}: damaged HDF5 snapshot: {type(exc).__name__}: {exc}".splitlines()[0]) from exc
    return CaffeModel(path, None, blobs)


def _read_groups(handle, path: Path) -> dict[str, list[np.ndarray]]:
    import h5py

    blobs: dict[str, list[np.ndarray]] = {}
    if "data" not in handle or not isinstance(handle["data"], h5py.Group):
        raise CaffeFormatError(f"{path}: not a Caffe HDF5 snapshot: it has no 'data' group")
    for layer_name, group in handle["data"].items():
        if not isinstance(group, h5py.Group):
            raise CaffeFormatError(f"{path}: data/{layer_name} is not a layer group")
        keys = sorted(group.keys(), key=lambda k: int(k) if k.isdigit() else -1)
        if keys != [str(i) for i in range(len(keys))]:
            raise CaffeFormatError(f"{path}: layer {layer_name!r} has datasets {keys}, expected 0, 1, ...")
        arrays = []
        for key in keys:
            dataset = group[key]
            if not isinstance(dataset, h5py.Dataset) or dataset.dtype.kind != "f":
                raise CaffeFormatError(f"{path}: layer {layer_name!r} blob {key} is not a float dataset")
            arrays.append(np.asarray(dataset[()]))
        blobs[layer_name] = arrays
    return blobs


def write_caffemodel_h5(path: str | Path, blobs: Mapping[str, Sequence[np.ndarray]]) -> Path:
    """Write blobs by layer name as Caffe's ``Net::ToHDF5`` does (atomically)."""
    import h5py

    from resnet_port.checkpoints import atomic_output

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
