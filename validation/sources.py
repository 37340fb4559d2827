"""Where the image files are: a folder, or an uncompressed tar read in place.

ImageNet's validation set ships as ``ILSVRC2012_img_val.tar`` (6.4 GB, 50,000 flat JPEGs).  Extracting
it costs the disk and the time; reading it in place needs only where each member's bytes start.
`TarSource` indexes the member headers once (a seek per member, no data read), and every reading
process, each DataLoader worker included, opens the tar itself on first use: an open file handle
shared across a ``fork`` would share its position, and one pickled into a worker cannot be.
A compressed tar cannot be read at an offset and is refused with a clear error.
"""

from __future__ import annotations

import os
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from resnet_port.errors import InputError

# torchvision's IMG_EXTENSIONS, compared case-insensitively (ImageNet's files end in .JPEG).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class DatasetError(InputError):
    """The data folder, tar or labels file cannot be used."""


def is_image_file(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


@dataclass(frozen=True)
class Member:
    """Where one image's bytes lie inside a tar."""

    archive: Path
    offset: int
    size: int


# (process id, archive) -> open file: each process opens the tar once, on its first read.
_OPEN: dict[tuple[int, Path], BinaryIO] = {}


def read_member(member: Member) -> bytes:
    key = (os.getpid(), member.archive)
    handle = _OPEN.get(key)
    if handle is None:
        handle = _OPEN[key] = open(member.archive, "rb")
    handle.seek(member.offset)
    data = handle.read(member.size)
    if len(data) != member.size:
        raise OSError(f"{member.archive}: the tar ends inside a member (offset {member.offset}, {member.size} bytes)")
    return data


@dataclass
class TarSource:
    """The image members of an uncompressed tar: relative name -> `Member`."""

    path: Path
    members: dict[str, Member] = field(default_factory=dict)
    prefix: str = ""  # a wrapper folder every member sat in (``ILSVRC2012_img_val/``), taken off the names

    def display(self, name: str) -> Path:
        """How a member is named in messages and predictions: the tar's path and its full member name."""
        return self.path / (self.prefix + name)

    @classmethod
    def open(cls, path: str | Path) -> "TarSource":
        path = Path(path).resolve()
        try:
            with tarfile.open(path, mode="r:") as archive:
                members = {
                    _clean(m.name): Member(path, m.offset_data, m.size)
                    for m in archive
                    if m.isfile() and is_image_file(PurePosixPath(m.name).name)
                }
        except tarfile.ReadError as exc:
            if _compression(path):
                raise DatasetError(
                    f"{path}: a {_compression(path)}-compressed tar cannot be read in place: extract it, or decompress "
                    "it to an uncompressed .tar"
                ) from exc
            raise DatasetError(f"{path}: not a readable uncompressed tar, or a truncated one ({exc})") from exc
        except OSError as exc:
            raise DatasetError(f"{path}: cannot read the tar ({exc})") from exc
        members, prefix = _strip_wrapper(members)
        return cls(path, dict(sorted(members.items())), prefix)

    def top_level(self) -> list[str]:
        return [name for name in self.members if "/" not in name]

    def folders(self) -> list[str]:
        return sorted({name.split("/", 1)[0] for name in self.members if "/" in name})


_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd"}


def _compression(path: Path) -> str | None:
    with open(path, "rb") as handle:
        head = handle.read(6)
    return next((kind for magic, kind in _MAGIC.items() if head.startswith(magic)), None)


def _strip_wrapper(members: dict[str, Member]) -> tuple[dict[str, Member], str]:
    """A tar made of one folder (``tar cf val.tar ILSVRC2012_img_val/`` or ``val/n01440764/...``) reads
    as that folder: the single top folder every member sits in is taken off, unless it is a WordNet
    id, i.e. the one class folder of an ImageFolder tar."""
    prefix = ""
    while members and all("/" in name for name in members):
        top = {name.split("/", 1)[0] for name in members}
        if len(top) != 1 or _WNID.match(next(iter(top))):
            break
        head = next(iter(top)) + "/"
        prefix += head
        members = {name[len(head) :]: m for name, m in members.items()}
    return members, prefix


_WNID = re.compile(r"^n\d{8}$")


def _clean(name: str) -> str:
    """A member name as a relative posix path: ``./a/b.JPEG`` -> ``a/b.JPEG``."""
    parts = [p for p in PurePosixPath(name).parts if p not in (".", "/")]
    return "/".join(parts)
