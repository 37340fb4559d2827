"""Fixtures of the convert-caffe tests: the shared reference files and the golden data, unpacked once."""

from __future__ import annotations

import lzma
import os
import shutil
from pathlib import Path

import pytest

SHARED = Path(os.environ.get("RESNET_PORT_SHARED", Path(__file__).resolve().parents[3] / "shared"))
CAFFE_REF = SHARED / "reference" / "caffe"
GOLDEN = SHARED / "reference" / "caffe-golden"
CACHE = Path(__file__).resolve().parents[1] / "fixtures" / "cache" / "caffe"


def unpacked(name: str) -> Path:
    """``GOLDEN/name.xz`` decompressed once into the (gitignored) cache; reused across runs."""
    src = GOLDEN / f"{name}.xz"
    if not src.exists():
        pytest.fail(f"golden file {src} is missing: set RESNET_PORT_SHARED to the shared folder")
    dest = CACHE / name
    if dest.exists() and dest.stat().st_mtime >= src.stat().st_mtime:
        return dest
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + f".{os.getpid()}.tmp")
    with lzma.open(src) as fin, open(tmp, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 22)
    os.replace(tmp, dest)
    return dest


@pytest.fixture(scope="session")
def caffe_ref() -> Path:
    return CAFFE_REF


@pytest.fixture(scope="session")
def golden() -> Path:
    return GOLDEN
