"""The MXNet / onnxruntime fixture cache, for the tests of convert-mxnet and convert-onnx.

``ensure_mxnet_fixtures()`` returns the cache root (``tests/fixtures/cache/mxnet``), first
regenerating it with the real frameworks (``make_fixtures.py`` run in the peer venv; see
`fixture_cache.FixtureCache`) when it is missing or stale.  Import the ``mxnet_fixtures`` pytest
fixture into a conftest to use it:

    from tests.peers.mxnet_cache import mxnet_fixtures  # noqa: F401
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.peers.fixture_cache import PEER_PYTHON, PEERS_DIR, FixtureCache

# The models make_fixtures.py writes (kept in step with it: the cache check needs every one).
GLUON_MODELS = tuple(f"gluon_resnet{d}_v{v}" for v in (1, 2) for d in (18, 34, 50, 101, 152))
SYMBOLIC_MODELS = tuple(f"symbolic_resnet{d}" for d in (18, 34, 50, 101, 152))

CACHE = FixtureCache("mxnet", PEERS_DIR / "make_fixtures.py", GLUON_MODELS + SYMBOLIC_MODELS, timeout_s=1800)
CACHE_ROOT = CACHE.root


def ensure_mxnet_fixtures(root: Path = CACHE_ROOT) -> Path:
    """Return the cache root, generating the fixtures with the real MXNet first if needed."""
    return CACHE.ensure(root)


@pytest.fixture(scope="session")
def mxnet_fixtures() -> Path:
    """The cache root, with every model folder of make_fixtures.py present (generated if missing)."""
    return ensure_mxnet_fixtures()


__all__ = ["CACHE_ROOT", "GLUON_MODELS", "PEER_PYTHON", "SYMBOLIC_MODELS", "ensure_mxnet_fixtures", "mxnet_fixtures"]
