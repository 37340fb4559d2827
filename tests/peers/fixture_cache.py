"""A fixture cache written by a script run in the peer venv, regenerated when it is stale.

A cache folder holds ``manifest.json`` (``script_sha256``: the digest of the script that wrote it;
``models``: each model folder with its ``files``).  `FixtureCache.ensure` returns the folder, first
running the script with ``.venv-peer/bin/python`` (the venv made or checked by ``setup_peer_env.sh``)
when the manifest is missing, was made by another version of the script, lacks a model, or a file
is gone.  A file lock beside the folder keeps two test processes from generating at once.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

PEERS_DIR = Path(__file__).resolve().parent
REPO_ROOT = PEERS_DIR.parents[1]
PEER_PYTHON = REPO_ROOT / ".venv-peer" / "bin" / "python"
SETUP_SCRIPT = PEERS_DIR / "setup_peer_env.sh"
CACHES = REPO_ROOT / "tests" / "fixtures" / "cache"


@dataclass(frozen=True)
class FixtureCache:
    name: str  # the folder under tests/fixtures/cache, and the lock's name
    script: Path  # the fixture script; its digest is in the manifest
    models: tuple[str, ...]  # the model folders the script writes (kept in step with it)
    timeout_s: int

    @property
    def root(self) -> Path:
        return CACHES / self.name

    def script_digest(self) -> str:
        """The digest the script writes into its manifest (a changed script regenerates)."""
        return hashlib.sha256(self.script.read_bytes()).hexdigest()[:16]

    def problem(self, root: Path | None = None) -> str:
        """'' when the cache at ``root`` is complete and current, else why it is not."""
        root = root or self.root
        manifest_path = root / "manifest.json"
        if not manifest_path.is_file():
            return f"{manifest_path} is missing"
        try:
            manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as exc:
            return f"{manifest_path} is not JSON: {exc}"
        if manifest.get("script_sha256") != self.script_digest():
            return f"{manifest_path} was made by another version of {self.script.name}"
        absent = [name for name in self.models if name not in manifest.get("models", {})]
        if absent:
            return f"{manifest_path} lacks {', '.join(absent)}"
        for name, info in manifest.get("models", {}).items():
            missing = [f for f in info.get("files", []) if not (root / name / f).is_file()]
            if missing or not info.get("files"):
                return f"{root / name} lacks {', '.join(missing) or 'its files'}"
        return ""

    def ensure(self, root: Path | None = None) -> Path:
        """Return the cache root, generating the fixtures with the real peer frameworks first if needed."""
        root = root or self.root
        if not self.problem(root):
            return root
        root.mkdir(parents=True, exist_ok=True)
        with open(root.parent / f".{self.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be generating: wait for it
            if not self.problem(root):
                return root
            subprocess.run(["bash", str(SETUP_SCRIPT)], check=True, timeout=self.timeout_s)  # idempotent
            env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
            done = subprocess.run(
                [str(PEER_PYTHON), str(self.script), "--out", str(root)],
                capture_output=True, text=True, timeout=self.timeout_s, env=env,
            )  # fmt: skip
            if done.returncode != 0:
                raise RuntimeError(f"{self.script.name} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        problem = self.problem(root)
        if problem:
            raise RuntimeError(f"{self.script.name} ran but the cache is still incomplete: {problem}")
        return root

    def manifest(self, root: Path | None = None) -> dict:
        return json.loads(((root or self.root) / "manifest.json").read_text())
