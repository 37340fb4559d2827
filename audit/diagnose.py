"""The audit itself: measure both sides, decide the verdict, and name the causes that explain
the difference.

Diagnosis tests each hypothesis against the outputs instead of guessing from a signature: while
B's logits differ from A's beyond the tolerance, every cause whose signature is present is tried
by applying its fix to (a copy of) B; the fix that closes the gap most is kept if it brings B
within tolerance or at least halves the gap, and the search goes on from there.  Signatures whose
fixes do not help are reported as rejected, with their evidence, so a reader sees what was tested.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from resnet_port.audit.causes import CAUSE_KEYS, HYPOTHESES, Finding
from resnet_port.audit.compare import (
    OutputComparison,
    compare_outputs,
    eps_rows,
    spec_diff,
    summarize_tensors,
    tensor_rows,
)
from resnet_port.audit.inputs import InputSet
from resnet_port.audit.layers import LayerComparison, compare_layers, describe
from resnet_port.audit.sources import Side
from resnet_port.converters.common import PARITY_RTOL
from resnet_port.errors import ResnetPortError

VERDICTS = ("identical", "equivalent", "different")
DEFAULT_RTOL = PARITY_RTOL  # for "equivalent"
LOCATE_IMAGES = 2  # images used to find the first module a named cause changes


@dataclass
class Cause:
    key: str
    evidence: str
    discrepancy_before: float
    discrepancy_after: float
    first_layer: str | None = None  # the first module whose output undoing the cause changes

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "evidence": self.evidence,
            "first_layer": self.first_layer,
            "rel_logit_diff_before": _finite(self.discrepancy_before),
            "rel_logit_diff_after_fix": _finite(self.discrepancy_after),
        }


@dataclass
class AuditResult:
    verdict: str
    a: Side
    b: Side
    rtol: float
    causes: list[Cause] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    spec_diff: list[dict[str, Any]] = field(default_factory=list)
    eps: list[dict[str, Any]] = field(default_factory=list)
    tensors: list[dict[str, Any]] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)
    layers: LayerComparison | None = None

    @property
    def exit_code(self) -> int:
        return 1 if self.verdict == "different" else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "causes": [cause.to_dict() for cause in self.causes],
            "max_abs_diff": self.outputs.get("max_abs_diff"),
            "top1_agreement": self.outputs.get("top1_agreement"),
            "kl_divergence": self.outputs.get("kl_divergence"),
            "rtol": self.rtol,
            "outputs": self.outputs,
            "inputs": self.inputs,
            "first_divergent_layer": None if self.layers is None else self.layers.first_divergent,
            "layers": [] if self.layers is None else self.layers.rows,
            "layer_summary": None if self.layers is None else self.layers.summary(),
            "rejected_hypotheses": self.rejected,
            "notes": self.notes,
            "sides": {"a": side_summary(self.a), "b": side_summary(self.b)},
            "spec_diff": self.spec_diff,
            "eps_diff": self.eps,
            "tensor_summary": summarize_tensors(self.tensors),
            "tensors": self.tensors,
        }


def side_summary(side: Side) -> dict[str, Any]:
    return {
        "path": str(side.path),
        "kind": side.kind,
        "arch": side.metadata.arch,
        "framework": side.metadata.source.framework,
        "preprocessing": side.preprocessing.to_dict(),
        "problems": side.problems,
    }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _preprocessing_equal(a: Side, b: Side) -> bool:
    pa, pb = a.preprocessing, b.preprocessing
    if pa != pb:  # dataclass equality leaves the mean image out
        return False
    if (pa.mean_image is None) != (pb.mean_image is None):
        return False
    return pa.mean_image is None or np.array_equal(pa.mean_image, pb.mean_image)


def _identical(a: Side, b: Side, rows: list[dict[str, Any]]) -> bool:
    # "identical" is kept for two files of one format holding the same network bit for bit; across
    # formats one side went through a conversion, and the best it can be is "equivalent".
    return (
        a.kind == b.kind
        and a.spec == b.spec
        and all(row["status"] == "equal" for row in rows)
        and all(a.state_dict[k].dtype == b.state_dict[k].dtype for k in a.state_dict if k in b.state_dict)
        and _preprocessing_equal(a, b)
        and a.metadata.class_order == b.metadata.class_order
    )


def audit(
    a: Side, b: Side, inputs: InputSet, rtol: float = DEFAULT_RTOL, progress: bool = False, layers: str = "blocks"
) -> AuditResult:
    """Compare two sides on ``inputs`` and diagnose what makes them differ.

    ``layers`` ("blocks", "fine" or "none") sets how finely module outputs are compared to find
    where the two sides part; each named cause is then located the same way.
    """
    rows = tensor_rows(a.state_dict, b.state_dict)
    result = AuditResult(
        verdict="different",
        a=a,
        b=b,
        rtol=rtol,
        spec_diff=spec_diff(a.spec, b.spec),
        eps=eps_rows(a, b),
        tensors=rows,
        inputs={"source": inputs.description, "count": len(inputs)},
    )
    comparison = compare_outputs(a, b, inputs)
    result.outputs = comparison.to_dict()
    result.layers = compare_layers(a, b, inputs, mode=layers, rtol=rtol, progress=progress)
    if _identical(a, b, rows):
        result.verdict = "identical"
        return result
    if comparison.logits_a is None:
        result.notes.append(f"side A does not run ({a.problems}): without its outputs no cause can be confirmed")
    if comparison.agrees(rtol):
        result.verdict = "equivalent"
        for key in CAUSE_KEYS:
            finding = _signature(key, a, b)
            if finding is not None:
                result.notes.append(f"{key} signature seen, but outputs agree within tolerance: {finding.evidence}")
        return result
    _search_causes(result, comparison, inputs, progress)
    if not result.causes:
        result.notes.append("no known porting bug explains the difference")
    elif result.causes[-1].discrepancy_after > rtol:
        result.notes.append(
            f"after undoing the named causes B still differs from A by {result.causes[-1].discrepancy_after:.3g} "
            "(relative logits): something else differs too"
        )
    return result


def _signature(key: str, a: Side, b: Side) -> Finding | None:
    return HYPOTHESES[key].signature(a, b)


def _search_causes(result: AuditResult, comparison: OutputComparison, inputs: InputSet, progress: bool) -> None:
    a, current = result.a, result.b
    logits_a = comparison.logits_a
    gap = comparison.discrepancy
    if logits_a is None:
        return
    tried: dict[str, Finding] = {}
    remaining = list(CAUSE_KEYS)
    bar = tqdm(desc="testing causes", unit="trial", disable=not progress, leave=False)
    while remaining and gap > result.rtol:
        trials = []
        for key in remaining:
            finding = _signature(key, a, current)
            if finding is None:
                continue
            tried[key] = finding
            try:
                fixed = HYPOTHESES[key].fix(a, current, finding)
                after = compare_outputs(a, fixed, inputs, logits_a=logits_a).discrepancy
            except (ResnetPortError, RuntimeError, ValueError, IndexError) as exc:
                tried[key] = Finding(f"{finding.evidence}; its fix could not be applied ({exc})")
                continue
            trials.append((after, key, finding, fixed))
            bar.update(1)
        if not trials:
            break
        after, key, finding, fixed = min(trials, key=lambda t: t[0])
        if not (after <= result.rtol or after < 0.5 * gap):
            break
        result.causes.append(_located(Cause(key, finding.evidence, gap, after), current, fixed, inputs, result))
        remaining.remove(key)
        tried.pop(key, None)
        current, gap = fixed, after
    bar.close()
    for key, finding in tried.items():
        if key in remaining:
            result.rejected.append({"key": key, "evidence": finding.evidence, "reason": "undoing it does not close the gap"})


def _located(cause: Cause, before: Side, after: Side, inputs: InputSet, result: AuditResult) -> Cause:
    """Where the cause's signature starts: the first module whose output undoing it changes."""
    mode = "none" if result.layers is None else result.layers.mode
    if mode == "none":
        return cause
    # a few images show which module the fix changes first; the A-like (fixed) side goes first
    few = InputSet(inputs.description, images=inputs.images[:LOCATE_IMAGES], files=inputs.files[:LOCATE_IMAGES])
    where = compare_layers(after, before, few, mode=mode, rtol=result.rtol)
    if where.first_divergent is not None:
        cause.first_layer = where.first_divergent
        cause.evidence = f"{cause.evidence}; {describe(where)}"
    return cause
