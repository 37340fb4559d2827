"""The GluonCV fixture cache (``tests/fixtures/cache/gluoncv``), for the convert-mxnet GluonCV tests.

Kept apart from the MXNet cache (`mxnet_cache`) so that neither script's digest regenerates the
other's files.  ``ensure_gluoncv_fixtures()`` returns the cache root, first regenerating it with
GluonCV's own model code and the real MXNet (``make_gluoncv_fixtures.py`` run by
``.venv-peer/bin/python``; the peer venv is created by ``setup_peer_env.sh`` if absent) when the
manifest is missing, was made by another version of the script, or a file is gone.  A file lock
keeps two test processes from generating at once.  Generation takes about 20 s.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

PEERS_DIR = Path(__file__).resolve().parent
REPO_ROOT = PEERS_DIR.parents[1]
PEER_PYTHON = REPO_ROOT / ".venv-peer" / "bin" / "python"
SETUP_SCRIPT = PEERS_DIR / "setup_peer_env.sh"
FIXTURE_SCRIPT = PEERS_DIR / "make_gluoncv_fixtures.py"
CACHE_ROOT = REPO_ROOT / "tests" / "fixtures" / "cache" / "gluoncv"
GENERATION_TIMEOUT_S = 900
# The nets make_gluoncv_fixtures.py writes (kept in step with it).
MODELS = (
    "resnet18_v1b", "resnet50_v1b", "resnet50_v1c", "resnet50_v1d", "resnet50_v1e", "resnet50_v1s", "small_v1d",
    "cifar_resnet20_v1", "cifar_resnet20_v2", "resnet50_v1b_gn", "se_resnet18_v1",
)


def script_digest() -> str:
    return hashlib.sha256(FIXTURE_SCRIPT.read_bytes()).hexdigest()[:16]


def cache_problem(root: Path = CACHE_ROOT) -> str:
    """'' when the cache at ``root`` is complete and current, else why it is not."""
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        return f"{manifest_path} is missing"
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as exc:
        return f"{manifest_path} is not JSON: {exc}"
    if manifest.get("script_sha256") != script_digest():
        return f"{manifest_path} was made by another version of {FIXTURE_SCRIPT.name}"
    absent = [name for name in MODELS if name not in manifest.get("models", {})]
    if absent:
        return f"{manifest_path} lacks {', '.join(absent)}"
    for name, info in manifest["models"].items():
        missing = [f for f in info.get("files", []) if not (root / name / f).is_file()]
        if missing or not info.get("files"):
            return f"{root / name} lacks {', '.join(missing) or 'its files'}"
    return ""


def ensure_gluoncv_fixtures(root: Path = CACHE_ROOT) -> Path:
    """Return the cache root, generating the fixtures with GluonCV and MXNet first if needed."""
    if not cache_problem(root):
        return root
    root.mkdir(parents=True, exist_ok=True)
    with open(root.parent / ".gluoncv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be generating: wait for it
        if not cache_problem(root):
            return root
        subprocess.run(["bash", str(SETUP_SCRIPT)], check=True, timeout=GENERATION_TIMEOUT_S)
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
        done = subprocess.run(
            [str(PEER_PYTHON), str(FIXTURE_SCRIPT), "--out", str(root)],
            capture_output=True, text=True, timeout=GENERATION_TIMEOUT_S, env=env,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{FIXTURE_SCRIPT.name} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    problem = cache_problem(root)
    if problem:
        raise RuntimeError(f"{FIXTURE_SCRIPT.name} ran but the cache is still incomplete: {problem}")
    return root


def load_manifest(root: Path = CACHE_ROOT) -> dict:
    return json.loads((root / "manifest.json").read_text())


@pytest.fixture(scope="session")
def gluoncv_fixtures() -> Path:
    """The cache root, with every net of make_gluoncv_fixtures.py present (generated if missing)."""
    return ensure_gluoncv_fixtures()
