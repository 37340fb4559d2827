"""The GluonCV fixture cache (``tests/fixtures/cache/gluoncv``), for the convert-mxnet GluonCV tests.

Kept apart from the MXNet cache (`mxnet_cache`) so that neither script's digest regenerates the
other's files.  ``ensure_gluoncv_fixtures()`` returns the cache root, first regenerating it with
GluonCV's own model code and the real MXNet (``make_gluoncv_fixtures.py`` run in the peer venv; see
`fixture_cache.FixtureCache`) when it is missing or stale.  Generation takes about 20 s.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.peers.fixture_cache import PEERS_DIR, FixtureCache

# The nets make_gluoncv_fixtures.py writes (kept in step with it).
MODELS = (
    "resnet18_v1b", "resnet50_v1b", "resnet50_v1c", "resnet50_v1d", "resnet50_v1e", "resnet50_v1s", "small_v1d",
    "cifar_resnet20_v1", "cifar_resnet20_v2", "cifar_resnet56_v2", "thumb_resnet18_v1", "thumb_resnet18_v2",
    "thumb_small_v2",
    "resnet50_v1b_gn", "se_resnet18_v1",
)

CACHE = FixtureCache("gluoncv", PEERS_DIR / "make_gluoncv_fixtures.py", MODELS, timeout_s=900)
CACHE_ROOT = CACHE.root


def ensure_gluoncv_fixtures(root: Path = CACHE_ROOT) -> Path:
    """Return the cache root, generating the fixtures with GluonCV and MXNet first if needed."""
    return CACHE.ensure(root)


@pytest.fixture(scope="session")
def gluoncv_fixtures() -> Path:
    """The cache root, with every net of make_gluoncv_fixtures.py present (generated if missing)."""
    return ensure_gluoncv_fixtures()
