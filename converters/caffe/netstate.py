"""Which layers a TEST-phase net holds: Caffe's NetStateRule filter (``include``/``exclude`` by phase)."""

from __future__ import annotations

from typing import Any

TEST_PHASE = 1  # caffe.Phase.TEST
# Layers that feed the net (their first top is the image blob; a second, if any, the labels).
DATA_TYPES = ("Input", "Data", "ImageData", "HDF5Data", "MemoryData", "DummyData", "WindowData")
# Training-only heads: they take the logits and the labels and give a loss or a metric.
LOSS_TYPES = ("SoftmaxWithLoss", "Accuracy", "SigmoidCrossEntropyLoss", "EuclideanLoss", "HingeLoss", "InfogainLoss", "MultinomialLogisticLoss")


def in_test_phase(layer: Any) -> bool:
    """True when Caffe would keep ``layer`` in a TEST net (phase rules only; levels and stages unused)."""
    if layer.include:
        return any(not rule.HasField("phase") or rule.phase == TEST_PHASE for rule in layer.include)
    return not any(rule.HasField("phase") and rule.phase == TEST_PHASE for rule in layer.exclude)


__all__ = ["DATA_TYPES", "LOSS_TYPES", "TEST_PHASE", "in_test_phase"]
