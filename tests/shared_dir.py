"""Where the project's read-only shared folder is: $RESNET_PORT_SHARED, the checkout's sibling
`shared/` (as CI lays it out), or /work/shared.  Tests that need it fail, never skip, without it."""

from __future__ import annotations

import os
from pathlib import Path


def shared_dir() -> Path:
    candidates = [Path(os.environ["RESNET_PORT_SHARED"])] if os.environ.get("RESNET_PORT_SHARED") else []
    candidates += [Path(__file__).resolve().parents[2] / "shared", Path("/work/shared")]
    for candidate in candidates:
        if (candidate / "reference").is_dir():
            return candidate
    return candidates[0]


SHARED = shared_dir()
