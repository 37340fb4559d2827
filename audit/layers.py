"""Where two ports part: the output of every reference module, side by side, in forward order.

Both sides are built from their own spec as the reference ResNet, so a module's name means the
same thing on both (``maxpool``, ``layer3.1``, ``layer3.1.bn2``) and rows pair by name, never by
position.  A module that exists on one side only (a ``data_bn``, a ``final_bn``, a stem pool on
one side, a projection shortcut on one side) is listed as such and the rest is still compared.

Each side sees the same images through its own preprocessing (as the logit comparison does).  The
outputs are caught with forward hooks: side A's are held for one chunk of images, side B's are
compared as they appear, so memory stays at one side's activations for a few images.

``rel_diff`` is max |A - B| / max |A| over the module's output, the measure the verdict uses on
the logits; the first module whose ``rel_diff`` exceeds the tolerance (or whose output shape
differs) is the first divergent layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from resnet_port.audit.inputs import InputSet
from resnet_port.audit.sources import Side
from resnet_port.errors import InputError
from resnet_port.resnet_ref import build_model
from resnet_port.resnet_ref.model import BasicBlock, Bottleneck

# "blocks": stem modules, each residual block, final BN, head pool, fc.  "fine": also every conv,
# BN and pool inside the blocks (shortcut included) and inside a deep stem.  "none": skip.
LAYER_MODES = ("blocks", "fine", "none")
# Modules that read the raw network input: their outputs are in each side's own input convention
# (channel order above all), so they are compared only when both sides read the same order.
INPUT_MODULES = ("data_bn",)
# Images per forward pass: bounds the memory held for side A's activations.
CHUNK = 2


@dataclass
class LayerComparison:
    """The rows of a layer-by-layer comparison and the first one that diverges."""

    mode: str
    rtol: float
    rows: list[dict[str, Any]] = field(default_factory=list)
    first_divergent: str | None = None
    reason: str = ""  # why nothing was compared, when nothing was

    @property
    def only_a(self) -> list[str]:
        return [row["name"] for row in self.rows if row["status"] == "only_a"]

    @property
    def only_b(self) -> list[str]:
        return [row["name"] for row in self.rows if row["status"] == "only_b"]

    def index(self, name: str | None) -> int | None:
        for i, row in enumerate(self.rows):
            if row["name"] == name:
                return i
        return None

    def row(self, name: str | None) -> dict[str, Any] | None:
        i = self.index(name)
        return None if i is None else self.rows[i]

    def summary(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "rtol": self.rtol,
            "compared": sum(1 for row in self.rows if row["status"] in ("compared", "shape")),
            "only_a": self.only_a,
            "only_b": self.only_b,
            "reason": self.reason,
        }


def traced_modules(model: nn.Module, mode: str) -> dict[str, nn.Module]:
    """The modules whose outputs are compared in ``mode``, by reference name.

    ReLUs (shared and in place) and Identity slots carry nothing of their own; stage containers
    (``layerN``) and ``downsample`` Sequentials repeat their last child's output, so only their
    blocks (and, in "fine", their children) are listed.  A deep stem is listed as ``conv1``.
    """
    if mode not in LAYER_MODES:
        raise InputError(f"layer mode {mode!r}: expected one of {', '.join(LAYER_MODES)}")
    selected: dict[str, nn.Module] = {}
    blocks = {name for name, m in model.named_modules() if isinstance(m, (BasicBlock, Bottleneck))}
    for name, module in model.named_modules():
        if not name or isinstance(module, (nn.ReLU, nn.Identity)):
            continue
        is_stage = isinstance(module, nn.Sequential) and any(f"{name}.{c}" in blocks for c, _ in module.named_children())
        if "." not in name:
            if not is_stage:
                selected[name] = module
        elif name in blocks:
            selected[name] = module
        elif mode == "fine" and not isinstance(module, nn.Sequential):
            selected[name] = module
    return selected


def _model(side: Side) -> nn.Module:
    model = build_model(side.spec)
    full = model.state_dict()
    for key, value in side.state_dict.items():
        full[key] = value.to(full[key].dtype)
    model.load_state_dict(full, strict=True)
    return model.eval()


@dataclass
class _Accumulator:
    """Running max |A - B|, max |A| and the dot products of one module's outputs."""

    shape_a: list[int] | None = None
    shape_b: list[int] | None = None
    max_abs: float = 0.0
    max_a: float = 0.0
    dot: float = 0.0
    norm_a: float = 0.0
    norm_b: float = 0.0
    mismatch: bool = False

    def add(self, a: torch.Tensor, b: torch.Tensor) -> None:
        self.shape_a, self.shape_b = list(a.shape[1:]), list(b.shape[1:])
        if a.shape != b.shape:
            self.mismatch = True
            return
        x = a.to(torch.float64).flatten()
        y = b.to(torch.float64).flatten()
        if x.numel() == 0:
            return
        self.max_abs = max(self.max_abs, float((x - y).abs().max()))
        self.max_a = max(self.max_a, float(x.abs().max()))
        self.dot += float(torch.dot(x, y))
        self.norm_a += float(torch.dot(x, x))
        self.norm_b += float(torch.dot(y, y))

    def row(self, name: str, kind: str) -> dict[str, Any]:
        row: dict[str, Any] = {
            "name": name,
            "type": kind,
            "status": "compared",
            "shape_a": self.shape_a,
            "shape_b": self.shape_b,
            "max_abs_diff": None,
            "rel_diff": None,
            "cosine": None,
        }
        if self.mismatch:
            row["status"] = "shape"
            return row
        rel = self.max_abs / (self.max_a or 1.0)
        na, nb = math.sqrt(self.norm_a), math.sqrt(self.norm_b)
        if na == 0.0 or nb == 0.0:
            cosine = 1.0 if na == nb else 0.0
        else:
            cosine = self.dot / (na * nb)
        row.update(max_abs_diff=_finite(self.max_abs), rel_diff=_finite(rel), cosine=_finite(cosine))
        if row["rel_diff"] is None:
            row["status"] = "nonfinite"
        return row


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _merge_order(order_a: list[str], order_b: list[str]) -> list[str]:
    """A's forward order, with each module only B has placed after B's module before it."""
    merged = list(order_a)
    last = -1
    for name in order_b:
        if name in merged:
            last = merged.index(name)
        else:
            last += 1
            merged.insert(last, name)
    return merged


def is_divergent(row: dict[str, Any], rtol: float) -> bool:
    if row["status"] in ("shape", "nonfinite"):
        return True
    return row["status"] == "compared" and not row["rel_diff"] <= rtol


def compare_layers(
    a: Side, b: Side, inputs: InputSet, mode: str = "blocks", rtol: float = 1e-4, progress: bool = False
) -> LayerComparison:
    """Run both sides on ``inputs`` and compare every traced module's output, paired by name."""
    if mode not in LAYER_MODES:
        raise InputError(f"layer mode {mode!r}: expected one of {', '.join(LAYER_MODES)}")
    result = LayerComparison(mode=mode, rtol=rtol)
    if mode == "none":
        result.reason = "not asked for (--layers none)"
        return result
    bad = [side for side in (a, b) if side.problems]
    if bad:
        result.reason = f"side {bad[0].label} does not run: {bad[0].problems}"
        return result
    model_a, model_b = _model(a), _model(b)
    traced_a, traced_b = traced_modules(model_a, mode), traced_modules(model_b, mode)
    xa, xb = inputs.batch(a.preprocessing), inputs.batch(b.preprocessing)
    same_input_order = a.preprocessing.channel_order == b.preprocessing.channel_order

    stats: dict[str, _Accumulator] = {}
    order_a: list[str] = []
    order_b: list[str] = []
    held: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(module: nn.Module, args: Any, output: torch.Tensor) -> None:
            if name not in order_a:
                order_a.append(name)
            held[name] = output.detach().clone()  # a later in-place ReLU must not change it

        return hook

    def match(name: str):
        def hook(module: nn.Module, args: Any, output: torch.Tensor) -> None:
            if name not in order_b:
                order_b.append(name)
            mine = held.pop(name, None)
            if mine is not None and (same_input_order or name not in INPUT_MODULES):
                stats.setdefault(name, _Accumulator()).add(mine, output.detach())

        return hook

    handles = [m.register_forward_hook(keep(n)) for n, m in traced_a.items()]
    handles += [m.register_forward_hook(match(n)) for n, m in traced_b.items()]
    try:
        starts = range(0, len(xa), CHUNK)
        for start in tqdm(starts, desc="comparing layers", unit="chunk", disable=not progress, leave=False):
            held.clear()
            with torch.inference_mode():
                model_a(xa[start : start + CHUNK])
                model_b(xb[start : start + CHUNK])
    finally:
        for handle in handles:
            handle.remove()

    for name in _merge_order(order_a, order_b):
        module = traced_a.get(name) or traced_b.get(name)
        kind = type(module).__name__
        in_a, in_b = name in order_a, name in order_b
        if in_a and in_b and name in stats:
            row = stats[name].row(name, kind)
        else:
            status = "only_a" if not in_b else "only_b" if not in_a else "input_convention"
            row = {"name": name, "type": kind, "status": status, "shape_a": None, "shape_b": None,
                   "max_abs_diff": None, "rel_diff": None, "cosine": None}
        result.rows.append(row)
    result.first_divergent = next((row["name"] for row in result.rows if is_divergent(row, rtol)), None)
    return result


def describe(comparison: LayerComparison) -> str:
    """One phrase for a cause's evidence: where the layers part, and by how much."""
    row = comparison.row(comparison.first_divergent)
    if row is None:
        return ""
    if row["status"] == "shape":
        how = f"output shape {row['shape_a']} vs {row['shape_b']}"
    elif row["rel_diff"] is None:
        how = "non-finite outputs"
    else:
        how = f"rel diff {row['rel_diff']:.3g}"
    return f"the layers part at {row['name']} ({how})"
