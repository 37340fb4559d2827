"""Which layers a TEST-phase net holds: Caffe's NetStateRule filter (``include``/``exclude`` by phase)."""

from __future__ import annotations

from typing import Any

TEST_PHASE = 1  # caffe.Phase.TEST


def in_test_phase(layer: Any) -> bool:
    """True when Caffe would keep ``layer`` in a TEST net (phase rules only; levels and stages unused)."""
    if layer.include:
        return any(not rule.HasField("phase") or rule.phase == TEST_PHASE for rule in layer.include)
    return not any(rule.HasField("phase") and rule.phase == TEST_PHASE for rule in layer.exclude)


__all__ = ["TEST_PHASE", "in_test_phase"]
