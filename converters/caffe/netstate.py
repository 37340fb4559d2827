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



def param_hw(repeated: Any, h: Any, w: Any, default: int) -> tuple[int, int]:
    """A Caffe (height, width) pair: the explicit ``*_h``/``*_w`` fields when both are set, else the
    repeated field (one value for both, or two), else ``default``."""
    if h is not None and w is not None:
        return int(h), int(w)
    values = [int(v) for v in (repeated if not isinstance(repeated, int) else [repeated])]
    if not values:
        return default, default
    return values[0], values[-1]


def set_field(msg: Any, name: str) -> Any:
    """The field's value when the message sets it, else None (an unset field and its default differ)."""
    return getattr(msg, name) if msg.HasField(name) else None


__all__ = ["DATA_TYPES", "LOSS_TYPES", "TEST_PHASE", "in_test_phase", "param_hw", "set_field"]
