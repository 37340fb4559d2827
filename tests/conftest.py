"""Suite-wide hooks.

The suite writes large files (real-depth checkpoints, the peer fixture cache): a run that fills the
disk fails as a wall of unrelated setup errors.  The header says how much room the run started with,
and a test that errors while the disk is nearly full says so, so that the cause is in the log.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings

# CI sets FUZZ_SEED: the property-based tests then draw the same examples on every run (Hypothesis'
# derandomize), so a red CI run reproduces and a green dry run predicts CI.  Tests that fix their
# own settings keep them; tests/fuzz/harness.py seeds its rounds from FUZZ_SEED itself.
if os.environ.get("FUZZ_SEED") is not None:
    settings.register_profile("reproducible", derandomize=True)
    settings.load_profile("reproducible")

REPO = Path(__file__).resolve().parent.parent
LOW_DISK_BYTES = 1 << 30  # below this, a setup error is most likely the disk


def _free_bytes(path: str | Path) -> int:
    return shutil.disk_usage(path).free


def pytest_report_header(config: pytest.Config) -> list[str]:
    tmp = tempfile.gettempdir()
    return [
        f"free disk: {_free_bytes(REPO) / 2**30:.1f} GiB at {REPO}, {_free_bytes(tmp) / 2**30:.1f} GiB at {tmp}",
    ]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if report.failed:
        free = min(_free_bytes(REPO), _free_bytes(tempfile.gettempdir()))
        if free < LOW_DISK_BYTES:
            report.sections.append(("disk", f"only {free / 2**20:.0f} MiB free: this failure is likely the disk filling up"))
    return report
