"""The MXNet / onnxruntime fixture cache, for the tests of convert-mxnet and convert-onnx.

``ensure_mxnet_fixtures()`` returns the cache root (``tests/fixtures/cache/mxnet``), first
regenerating it with the real frameworks (``make_fixtures.py`` run by ``.venv-peer/bin/python``, the
peer venv being created by ``setup_peer_env.sh`` if absent) when its manifest is missing, was made by
another version of the script, or a model folder is gone.  A file lock keeps two test processes from
generating at once.  Import the ``mxnet_fixtures`` pytest fixture into a conftest to use it:

    from tests.peers.mxnet_cache import mxnet_fixtures  # noqa: F401
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
FIXTURE_SCRIPT = PEERS_DIR / "make_fixtures.py"
CACHE_ROOT = REPO_ROOT / "tests" / "fixtures" / "cache" / "mxnet"
GENERATION_TIMEOUT_S = 1800
# The models make_fixtures.py writes (kept in step with it: cache_problem checks the manifest has them).
GLUON_MODELS = tuple(f"gluon_resnet{d}_v{v}" for v in (1, 2) for d in (18, 34, 50, 101, 152))
SYMBOLIC_MODELS = tuple(f"symbolic_resnet{d}" for d in (18, 34, 50, 101, 152))


def script_digest() -> str:
    """The digest make_fixtures.py writes into its manifest (a changed script regenerates)."""
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
    absent = [name for name in GLUON_MODELS + SYMBOLIC_MODELS if name not in manifest.get("models", {})]
    if absent:
        return f"{manifest_path} lacks {', '.join(absent)}"
    for name, info in manifest.get("models", {}).items():
        missing = [f for f in info.get("files", []) if not (root / name / f).is_file()]
        if missing or not info.get("files"):
            return f"{root / name} lacks {', '.join(missing) or 'its files'}"
    return ""


def ensure_mxnet_fixtures(root: Path = CACHE_ROOT) -> Path:
    """Return the cache root, generating the fixtures with the real MXNet first if needed."""
    if not cache_problem(root):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / ".mxnet.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be generating: wait for it
        if not cache_problem(root):
            return root
        if not PEER_PYTHON.exists():
            subprocess.run(["bash", str(SETUP_SCRIPT)], check=True, timeout=GENERATION_TIMEOUT_S)
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
        done = subprocess.run(
            [str(PEER_PYTHON), str(FIXTURE_SCRIPT), "--out", str(root)],
            capture_output=True,
            text=True,
            timeout=GENERATION_TIMEOUT_S,
            env=env,
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
def mxnet_fixtures() -> Path:
    """The cache root, with every model folder of make_fixtures.py present (generated if missing)."""
    return ensure_mxnet_fixtures()
