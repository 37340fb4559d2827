"""The ILSVRC2012 devkit: its ground truth is in the devkit's own class numbering, not the models'.

``ILSVRC2012_validation_ground_truth.txt`` gives one ILSVRC2012_ID (1..1000) a line, line i for
``ILSVRC2012_val_{i:08d}.JPEG``.  Those IDs follow the devkit's synset order (ID 1 is n02119789, kit
fox), while every released model numbers its classes in sorted-WordNet-id order (class 0 is
n01440764, tench).  Taking ``ID - 1`` as the class index is the classic silent mistake: it scores
about 0.1%.  The mapping is ``data/meta.mat``'s ``synsets`` table (ILSVRC2012_ID, WNID, words, ...),
read here with scipy.io, from the extracted ``ILSVRC2012_devkit_t12`` folder or its ``.tar.gz``.
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from resnet_port.validation.sources import DatasetError

META = "data/meta.mat"
GROUND_TRUTH = "data/ILSVRC2012_validation_ground_truth.txt"


class DevkitError(DatasetError):
    """The devkit folder or archive cannot be used."""


@dataclass
class Devkit:
    """ILSVRC2012_ID -> WordNet id, for the leaf classes (IDs of synsets without children)."""

    source: Path
    wnid_of_id: dict[int, str]

    @property
    def classes(self) -> list[str]:
        """The devkit's classes in sorted-WordNet-id order: the models' class order."""
        return sorted(self.wnid_of_id.values())


def _read(devkit: Path, relative: str) -> tuple[bytes, str] | None:
    """(bytes, where) of ``relative`` in a devkit folder or archive; None when absent."""
    name = Path(relative).name
    if devkit.is_dir():
        for candidate in (devkit / relative, devkit / name):
            if candidate.is_file():
                return candidate.read_bytes(), str(candidate)
        return None
    if devkit.is_file() and tarfile.is_tarfile(devkit):
        try:
            with tarfile.open(devkit) as archive:
                for member in archive:
                    if member.isfile() and (member.name.endswith("/" + relative) or member.name == relative):
                        handle = archive.extractfile(member)
                        return (handle.read() if handle else b""), f"{devkit}:{member.name}"
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DevkitError(f"{devkit}: cannot read the devkit archive ({exc})") from exc
        return None
    if devkit.is_file() and devkit.name == Path(relative).name:
        return devkit.read_bytes(), str(devkit)
    if not devkit.exists():
        raise DevkitError(f"{devkit}: no such devkit (the ILSVRC2012_devkit_t12 folder or its .tar.gz)")
    raise DevkitError(f"{devkit}: not a devkit folder, .tar.gz or meta.mat")


def ground_truth_file(devkit: str | Path) -> tuple[bytes, str] | None:
    """The devkit's own validation ground truth, when it holds one."""
    return _read(Path(devkit), GROUND_TRUTH)


def read_devkit(devkit: str | Path) -> Devkit:
    """``meta.mat``'s synsets: ILSVRC2012_ID -> WNID for the 1000 (or however many) leaf classes."""
    devkit = Path(devkit)
    found = _read(devkit, META)
    if found is None:
        raise DevkitError(f"{devkit}: holds no {META}")
    data, where = found
    try:
        import scipy.io
    except ImportError as exc:
        raise DevkitError("reading the devkit's meta.mat needs scipy: pip install scipy") from exc
    try:
        synsets = scipy.io.loadmat(io.BytesIO(data), squeeze_me=True)["synsets"]
        ids, wnids = synsets["ILSVRC2012_ID"], synsets["WNID"]
        children = synsets["num_children"] if "num_children" in synsets.dtype.names else None
    except (KeyError, ValueError, TypeError, IndexError, NotImplementedError) as exc:
        raise DevkitError(f"{where}: not the devkit's meta.mat (expected a 'synsets' struct with ILSVRC2012_ID and WNID; {exc})") from exc
    wnid_of_id: dict[int, str] = {}
    for row, (raw_id, raw_wnid) in enumerate(zip(np.atleast_1d(ids), np.atleast_1d(wnids)), 1):
        ident, wnid = int(np.asarray(raw_id).reshape(-1)[0]), str(np.asarray(raw_wnid).reshape(-1)[0])
        if children is not None and int(np.asarray(np.atleast_1d(children)[row - 1]).reshape(-1)[0]) != 0:
            continue  # an inner node of the hierarchy, not a class
        if ident in wnid_of_id:
            raise DevkitError(f"{where}: synsets row {row}: ILSVRC2012_ID {ident} appears twice")
        wnid_of_id[ident] = wnid
    if not wnid_of_id:
        raise DevkitError(f"{where}: synsets holds no leaf class")
    if len(set(wnid_of_id.values())) != len(wnid_of_id):
        raise DevkitError(f"{where}: synsets maps two ILSVRC2012_IDs to one WNID")
    return Devkit(devkit, wnid_of_id)
