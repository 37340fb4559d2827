"""Fixtures of the audit tests: a runner for the `audit` command that returns its JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from resnet_port.audit.cli import main


@pytest.fixture
def run_audit(tmp_path: Path):
    """Run `audit A B --json FILE` in-process; return (exit code, parsed JSON or None)."""

    def run(a: Path, b: Path, *extra: str) -> tuple[int, dict | None]:
        out = tmp_path / f"audit-{a.stem}-{b.stem}.json"
        out.unlink(missing_ok=True)
        code = main([str(a), str(b), "--json", str(out), "-q", *extra])
        return code, (json.loads(out.read_text()) if out.exists() else None)

    return run
