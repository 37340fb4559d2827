"""The measurements of an audit: specs field by field, every tensor, eps per layer, and outputs.

Tensors are paired by their reference name only (both sides are already in the reference names),
never by order.  BatchNorm statistics are reported apart from the affine parameters, since the
classic porting bugs touch one and not the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from resnet_port.audit.inputs import InputSet
from resnet_port.audit.sources import Side
from resnet_port.parity import compare_logits, spec_differences, within_tolerance
from resnet_port.resnet_ref import ResNetSpec, build_model

# A tensor whose largest difference is at most this fraction of its largest value is "close".
TENSOR_RTOL = 1e-6


def spec_diff(a: ResNetSpec, b: ResNetSpec) -> list[dict[str, Any]]:
    """Every spec field whose value differs, with both values (`resnet_port.parity.spec_differences`)."""
    return spec_differences(a, b)


def bn_modules(*state_dicts: dict[str, torch.Tensor]) -> list[str]:
    """BatchNorm module names: those that own a running mean, in state_dict order."""
    names: dict[str, None] = {}
    for state_dict in state_dicts:
        for key in state_dict:
            if key.endswith(".running_mean"):
                names[key[: -len(".running_mean")]] = None
    return list(names)


def tensor_kind(key: str, bns: set[str]) -> str:
    module, _, leaf = key.rpartition(".")
    if module in bns:
        return "bn_stats" if leaf in ("running_mean", "running_var") else "bn_affine"
    if module == "fc":
        return "fc"
    return "conv"


def _diffs(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float, float]:
    x = a.detach().to(torch.float64).flatten()
    y = b.detach().to(torch.float64).flatten()
    if x.numel() == 0:
        return 0.0, 0.0, 1.0
    max_abs = float((x - y).abs().max())
    scale = float(x.abs().max()) or 1.0
    nx, ny = float(x.norm()), float(y.norm())
    if nx == 0.0 or ny == 0.0:
        cosine = 1.0 if nx == ny else 0.0
    else:
        cosine = float(torch.dot(x, y) / (nx * ny))
    return max_abs, max_abs / scale, cosine


def tensor_rows(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
    """One row per tensor name of either side (``num_batches_tracked`` aside)."""
    bns = set(bn_modules(a, b))
    names = [k for k in a] + [k for k in b if k not in a]
    rows = []
    for name in names:
        if name.endswith("num_batches_tracked"):
            continue
        ta, tb = a.get(name), b.get(name)
        row: dict[str, Any] = {
            "name": name,
            "kind": tensor_kind(name, bns),
            "shape_a": None if ta is None else list(ta.shape),
            "shape_b": None if tb is None else list(tb.shape),
            "max_abs_diff": None,
            "max_rel_diff": None,
            "cosine": None,
        }
        if ta is None or tb is None:
            row["status"] = "only_b" if ta is None else "only_a"
        elif ta.shape != tb.shape:
            row["status"] = "shape"
        else:
            max_abs, max_rel, cosine = _diffs(ta, tb)
            row.update(max_abs_diff=max_abs, max_rel_diff=max_rel, cosine=cosine)
            if torch.equal(ta.to(torch.float64), tb.to(torch.float64)):
                row["status"] = "equal"
            else:
                row["status"] = "close" if max_rel <= TENSOR_RTOL else "differs"
        rows.append(row)
    return rows


def eps_rows(a: Side, b: Side) -> list[dict[str, Any]]:
    """Each BatchNorm whose eps differs between the sides."""
    rows = []
    for name in bn_modules(a.state_dict, b.state_dict):
        eps_a, eps_b = a.spec.eps_for(name), b.spec.eps_for(name)
        if eps_a != eps_b:
            rows.append({"module": name, "eps_a": eps_a, "eps_b": eps_b})
    return rows


def summarize_tensors(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per kind (conv, bn_stats, bn_affine, fc): counts by status and the largest differences."""
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = out.setdefault(row["kind"], {"count": 0, "max_abs_diff": 0.0, "max_rel_diff": 0.0, "min_cosine": 1.0})
        entry["count"] += 1
        entry[row["status"]] = entry.get(row["status"], 0) + 1
        if row["max_abs_diff"] is not None:
            entry["max_abs_diff"] = max(entry["max_abs_diff"], row["max_abs_diff"])
            entry["max_rel_diff"] = max(entry["max_rel_diff"], row["max_rel_diff"])
            entry["min_cosine"] = min(entry["min_cosine"], row["cosine"])
    return out


def run_side(side: Side, inputs: InputSet) -> np.ndarray | None:
    """Logits (float64) of a side on ``inputs`` through its own preprocessing; None if it cannot run."""
    if side.problems:
        return None
    model = build_model(side.spec)
    full = model.state_dict()
    for key, value in side.state_dict.items():
        full[key] = value.to(full[key].dtype)
    model.load_state_dict(full, strict=True)
    model.eval()
    with torch.inference_mode():
        return model(inputs.batch(side.preprocessing)).double().numpy()


@dataclass
class OutputComparison:
    """Logits of both sides on the same images, and what they say together."""

    logits_a: np.ndarray | None
    logits_b: np.ndarray | None
    reason: str = ""  # why they could not be compared, when they could not

    @property
    def comparable(self) -> bool:
        return self.logits_a is not None and self.logits_b is not None and self.logits_a.shape == self.logits_b.shape

    @property
    def discrepancy(self) -> float:
        """max |logit difference| / max |logit of A|: inf when the outputs cannot be compared."""
        if not self.comparable:
            return float("inf")
        return float(compare_logits(self.logits_a, self.logits_b)["max_rel_diff"])

    def agrees(self, rtol: float) -> bool:
        """The converters' pass rule (`resnet_port.parity.within_tolerance`): max |diff| <= rtol x max |logit|
        and the same top-1 on every input, so that a near-tie flipped by the port is not "equivalent"."""
        return self.comparable and within_tolerance(compare_logits(self.logits_a, self.logits_b), rtol)

    def to_dict(self) -> dict[str, Any]:
        """``comparable`` and, when they are, the parity record of `resnet_port.parity` (A the reference)."""
        if not self.comparable:
            return {"comparable": False, "reason": self.reason}
        return {"comparable": True, **compare_logits(self.logits_a, self.logits_b)}


def compare_outputs(a: Side, b: Side, inputs: InputSet, logits_a: np.ndarray | None = None) -> OutputComparison:
    """Run both sides (A's logits may be passed in, as the diagnosis reruns only B)."""
    la = run_side(a, inputs) if logits_a is None else logits_a
    lb = run_side(b, inputs)
    reason = ""
    if la is None or lb is None:
        bad = a if la is None else b
        reason = f"side {bad.label} does not run: {bad.problems}"
    elif la.shape != lb.shape:
        reason = f"output shapes differ: {la.shape[1:]} vs {lb.shape[1:]}"
    return OutputComparison(la, lb, reason)
