"""The one resolver of the project's read-only shared folder (reference files, golden data, seeds):
``$RESNET_PORT_SHARED`` when set, else the checkout's sibling ``../shared`` (as CI lays it out).
No machine's absolute path: tests that need the folder fail, never skip, without it, and say so."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    configured = os.environ.get("RESNET_PORT_SHARED")
    return Path(configured) if configured else REPO_ROOT.parent / "shared"


def shared_file(*parts: str) -> Path:
    """A file of the shared folder; a clear failure naming it and the resolver when it is absent."""
    import pytest

    path = shared_dir().joinpath(*parts)
    if not path.exists():
        pytest.fail(f"{path} is missing: set RESNET_PORT_SHARED to the project's shared folder (default: {REPO_ROOT.parent / 'shared'})")
    return path


SHARED = shared_dir()
