"""How two computations of one network are compared: their logits, and their specs.

Every parity figure the toolkit prints comes from here, so that a converter's check, ``validate
--parity`` and ``audit`` report the same quantities under the same names:

- ``samples``: rows compared (images; for multi-crop runs, images, not crops);
- ``max_abs_diff``: the largest |reference - ours| over every logit;
- ``max_rel_diff``: that over the largest |reference logit| (``max_abs_reference``); this is the
  figure the tolerance (``converters.common.PARITY_RTOL``) applies to, because a logit scale of 10
  or of 1000 should not change what "equal" means;
- ``mean_abs_diff``: the mean |difference| over every logit;
- ``top1_agreement``: the fraction of samples whose argmax agrees;
- ``kl_divergence`` / ``kl_divergence_max``: mean and largest KL(softmax(reference) || softmax(ours))
  per logit row: how far the predicted distributions, not only the argmax, moved.

`compare_logits` compares two whole arrays; `ParityTally` accumulates the same figures over batches
(``validate --parity`` streams a data set through both models).  `spec_differences` lists the fields
in which two specs differ.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from resnet_port.errors import InputError

# The keys of every parity record, in the order they are written.
PARITY_KEYS = (
    "samples",
    "max_abs_diff",
    "max_rel_diff",
    "mean_abs_diff",
    "max_abs_reference",
    "top1_agreement",
    "kl_divergence",
    "kl_divergence_max",
)


def _as_rows(values: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().to(torch.float64).numpy()
    array = np.asarray(values, dtype=np.float64)
    return array.reshape(len(array), -1) if array.ndim else array.reshape(1, 1)


def _max(a: float, b: float) -> float:
    """max() that keeps a NaN (Python's max(0.0, nan) is 0.0): a NaN logit must fail every check."""
    return math.nan if math.isnan(a) or math.isnan(b) else max(a, b)


def _log_softmax(rows: np.ndarray) -> np.ndarray:
    shifted = rows - rows.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


class ParityTally:
    """The parity figures accumulated batch by batch (one `add` per batch, then `result`).

    ``add`` takes the logit rows of both sides; where the argmax is to be taken over something
    else than a row (10-crop: the crop-averaged probabilities of one image), pass the two top-1
    index vectors as well.
    """

    def __init__(self) -> None:
        self.samples = 0
        self.agree = 0
        self.max_abs = 0.0
        self.max_ref = 0.0
        self.sum_abs = 0.0
        self.count = 0
        self.sum_kl = 0.0
        self.max_kl = 0.0
        self.rows = 0

    def add(
        self,
        reference: np.ndarray | torch.Tensor,
        ours: np.ndarray | torch.Tensor,
        top1_reference: np.ndarray | torch.Tensor | None = None,
        top1_ours: np.ndarray | torch.Tensor | None = None,
    ) -> np.ndarray:
        """Add one batch; return the per-sample top-1 agreement (bool array)."""
        ref, out = _as_rows(reference), _as_rows(ours)
        if ref.shape != out.shape:
            raise InputError(f"output shapes differ: reference {tuple(ref.shape)}, compared {tuple(out.shape)}")
        if ref.size:
            diff = np.abs(ref - out)
            self.max_abs = _max(self.max_abs, float(diff.max()))
            self.max_ref = _max(self.max_ref, float(np.abs(ref).max()))
            self.sum_abs += float(diff.sum())
            self.count += diff.size
            with np.errstate(invalid="ignore", over="ignore"):  # inf / NaN logits: NaN figures, a failed check
                log_p, log_q = _log_softmax(ref), _log_softmax(out)
                kl = np.sum(np.exp(log_p) * (log_p - log_q), axis=1)
            self.sum_kl += float(kl.sum())
            self.max_kl = _max(self.max_kl, float(kl.max()))
            self.rows += len(kl)
        if top1_reference is None or top1_ours is None:
            same = ref.argmax(1) == out.argmax(1) if ref.size else np.zeros(0, bool)
        else:
            same = np.asarray(_as_rows(top1_reference)).ravel() == np.asarray(_as_rows(top1_ours)).ravel()
        self.samples += int(len(same))
        self.agree += int(same.sum())
        return same

    @classmethod
    def total(cls, parts: "list[ParityTally] | tuple[ParityTally, ...]") -> "ParityTally":
        """The tally of several shards' tallies: sums add, maxima take the max (so shards add up exactly)."""
        out = cls()
        for part in parts:
            for name in ("samples", "agree", "sum_abs", "count", "sum_kl", "rows"):
                setattr(out, name, getattr(out, name) + getattr(part, name))
            out.max_abs = _max(out.max_abs, part.max_abs)
            out.max_ref = _max(out.max_ref, part.max_ref)
            out.max_kl = _max(out.max_kl, part.max_kl)
        return out

    def result(self) -> dict[str, Any]:
        """The parity record (`PARITY_KEYS`)."""
        return {
            "samples": self.samples,
            "max_abs_diff": self.max_abs,
            "max_rel_diff": self.max_abs / (self.max_ref or 1.0),  # NaN stays NaN, and fails the tolerance
            "mean_abs_diff": self.sum_abs / self.count if self.count else 0.0,
            "max_abs_reference": self.max_ref,
            "top1_agreement": self.agree / self.samples if self.samples else 0.0,
            "kl_divergence": self.sum_kl / self.rows if self.rows else 0.0,
            "kl_divergence_max": self.max_kl,
        }


def compare_logits(reference: np.ndarray | torch.Tensor, ours: np.ndarray | torch.Tensor) -> dict[str, Any]:
    """The parity record of two logit arrays of the same shape (reference first: it sets the scale)."""
    tally = ParityTally()
    tally.add(reference, ours)
    return tally.result()


def within_tolerance(record: dict[str, Any], tolerance: float) -> bool:
    """The toolkit's one pass rule: max |diff| <= tolerance x max |reference logit|, same top-1 everywhere."""
    return bool(record["max_rel_diff"] <= tolerance and record["top1_agreement"] == 1.0)


def spec_differences(a: Any, b: Any, ignore: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Every spec field whose value differs, with both values: ``[{"field", "a", "b"}]``.

    ``a`` and ``b`` are `ResNetSpec`s; fields named in ``ignore`` (e.g. ``"num_classes"``) are left out.
    """
    da, db = a.to_dict(), b.to_dict()
    return [{"field": name, "a": da[name], "b": db.get(name)} for name in da if name not in ignore and da[name] != db.get(name)]


__all__ = ["PARITY_KEYS", "ParityTally", "compare_logits", "spec_differences", "within_tolerance"]
