"""resnet_port.parity: the one logit comparison (converters, validate --parity, audit) and the one
spec comparison, checked against figures computed independently here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from resnet_port.errors import InputError
from resnet_port.parity import PARITY_KEYS, ParityTally, compare_logits, spec_differences, within_tolerance
from resnet_port.resnet_ref import get_spec


def _independent(ref: np.ndarray, ours: np.ndarray) -> dict:
    """Loop-by-loop figures, written without numpy's vector helpers."""
    max_abs = max(abs(float(a) - float(b)) for ra, rb in zip(ref, ours) for a, b in zip(ra, rb))
    scale = max(abs(float(a)) for row in ref for a in row)
    mean_abs = sum(abs(float(a) - float(b)) for ra, rb in zip(ref, ours) for a, b in zip(ra, rb)) / ref.size
    agree = sum(int(list(ra).index(max(ra)) == list(rb).index(max(rb))) for ra, rb in zip(ref, ours)) / len(ref)
    kls = []
    for ra, rb in zip(ref, ours):
        za, zb = sum(math.exp(v) for v in ra), sum(math.exp(v) for v in rb)
        kls.append(sum(math.exp(a) / za * (a - math.log(za) - b + math.log(zb)) for a, b in zip(ra, rb)))
    return {"max_abs_diff": max_abs, "max_rel_diff": max_abs / scale, "mean_abs_diff": mean_abs,
            "max_abs_reference": scale, "top1_agreement": agree, "kl_divergence": sum(kls) / len(kls),
            "kl_divergence_max": max(kls), "samples": len(ref)}


def test_compare_logits_figures():
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 3, (5, 11))
    ours = ref + rng.normal(0, 0.5, ref.shape)
    got = compare_logits(ref, torch.from_numpy(ours).float())  # a tensor on one side, float32
    expected = _independent(ref, ours.astype(np.float32).astype(np.float64))
    assert tuple(got) == PARITY_KEYS
    for key in PARITY_KEYS:
        assert got[key] == pytest.approx(expected[key], rel=1e-9, abs=1e-12), key


def test_tally_over_batches_equals_the_whole():
    rng = np.random.default_rng(1)
    ref, ours = rng.normal(0, 2, (9, 7)), rng.normal(0, 2, (9, 7))
    tally = ParityTally()
    for lo, hi in ((0, 4), (4, 5), (5, 9)):
        tally.add(ref[lo:hi], ours[lo:hi])
    whole = compare_logits(ref, ours)
    assert tally.result() == pytest.approx(whole)


def test_top1_over_given_indices():
    """10-crop: the differences over every crop's logits, the agreement over the images' own top-1."""
    ref = np.zeros((4, 3))
    ours = np.zeros((4, 3))
    ours[0, 0] = 1.0
    tally = ParityTally()
    same = tally.add(ref, ours, np.array([2, 1]), np.array([2, 0]))
    assert same.tolist() == [True, False]
    result = tally.result()
    assert result["samples"] == 2 and result["top1_agreement"] == 0.5 and result["max_abs_diff"] == 1.0


def test_tolerance_rule_is_relative_and_needs_every_top1():
    assert within_tolerance({"max_rel_diff": 1e-4, "top1_agreement": 1.0}, 1e-4)
    assert not within_tolerance({"max_rel_diff": 1.0001e-4, "top1_agreement": 1.0}, 1e-4)
    assert not within_tolerance({"max_rel_diff": 0.0, "top1_agreement": 0.99}, 1e-4)
    ref = np.array([[1000.0, 0.0]])
    assert compare_logits(ref, ref + 0.05)["max_rel_diff"] == pytest.approx(5e-5)  # scale-free


def test_shapes_must_match():
    with pytest.raises(InputError, match="shapes differ"):
        compare_logits(np.zeros((2, 3)), np.zeros((2, 4)))


def test_spec_differences():
    a, b = get_spec("resnet50"), get_spec("resnet50_v1")
    fields = {d["field"]: (d["a"], d["b"]) for d in spec_differences(a, b)}
    assert fields == {k: (a.to_dict()[k], b.to_dict()[k]) for k in a.to_dict() if a.to_dict()[k] != b.to_dict()[k]}
    assert "stride_in" in fields
    assert spec_differences(a, a.replace(num_classes=10), ignore=("num_classes",)) == []
    assert [d["field"] for d in spec_differences(a, a.replace(num_classes=10))] == ["num_classes"]


def test_a_nan_fails_whatever_comes_after_it():
    tally = ParityTally()
    tally.add(np.ones((1, 3)), np.array([[1.0, np.nan, 1.0]]))
    tally.add(np.ones((2, 3)), np.ones((2, 3)))
    result = tally.result()
    assert math.isnan(result["max_abs_diff"]) and not within_tolerance(result, 1e-4)
    assert not within_tolerance(compare_logits(np.ones((1, 2)), np.full((1, 2), np.inf)), 1e-4)
