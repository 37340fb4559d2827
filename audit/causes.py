"""The classic porting bugs, each a hypothesis: a signature to look for in the two sides, and the
fix that would undo it.

A signature alone is not a diagnosis: `audit.diagnose` names a cause only when applying its fix to
side B brings B's outputs to A's (or at least halves the gap).  Each hypothesis is one named
signature function, registered with its fix under a stable key; registering a key twice raises.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from resnet_port.audit.compare import bn_modules, eps_rows
from resnet_port.audit.sources import Side
from resnet_port.checkpoints import Preprocessing
from resnet_port.errors import InputError

# The keys, in the order they are tried and printed.  They are public: scripts read them from --json.
CAUSE_KEYS = (
    "channel_order",
    "bn_scale_factor",
    "bn_eps",
    "fix_gamma",
    "stride_placement",
    "pool_rounding",
    "input_scale",
    "mean_image",
    "missing_mean",
    "class_order",
    "transposed_fc",
    "missing_bias",
)
# Two tensors are "equal up to" a transformation when they differ by at most this, relative.
MATCH_RTOL = 1e-4


@dataclass
class Finding:
    """A signature seen in the evidence: one line for people, and what the fix needs."""

    evidence: str
    data: dict[str, Any] = field(default_factory=dict)


Signature = Callable[[Side, Side], "Finding | None"]
Fix = Callable[[Side, Side, Finding], Side]


@dataclass(frozen=True)
class Hypothesis:
    key: str
    signature: Signature
    fix: Fix


HYPOTHESES: dict[str, Hypothesis] = {}


def hypothesis(key: str, fix: Fix) -> Callable[[Signature], Signature]:
    """Register the decorated signature function, with ``fix``, under ``key``."""

    def register(signature: Signature) -> Signature:
        if key not in CAUSE_KEYS:
            raise InputError(f"unknown cause key {key!r}; the keys are {', '.join(CAUSE_KEYS)}")
        if key in HYPOTHESES:
            raise InputError(f"cause {key!r} is registered twice")
        HYPOTHESES[key] = Hypothesis(key, signature, fix)
        return signature

    return register


# -- helpers ------------------------------------------------------------------------------------
def _f64(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(torch.float64)


def _rel(x: torch.Tensor, y: torch.Tensor) -> float:
    """max |x - y| over the larger of the two maxima: 0 for equal tensors, ~1 for unrelated ones."""
    x, y = _f64(x), _f64(y)
    if x.shape != y.shape:
        return float("inf")
    scale = max(float(x.abs().max()), float(y.abs().max())) if x.numel() else 0.0
    return float((x - y).abs().max()) / scale if scale else 0.0


def _pair(a: Side, b: Side, key: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    ta, tb = a.state_dict.get(key), b.state_dict.get(key)
    if ta is None or tb is None:
        return None
    return ta, tb


def _stem_key(side: Side) -> str:
    return "conv1.weight" if "conv1.weight" in side.state_dict else "conv1.0.weight"


def _with_tensors(side: Side, updates: dict[str, torch.Tensor | None], **changes: Any) -> Side:
    state = dict(side.state_dict)
    for key, value in updates.items():
        if value is None:
            state.pop(key, None)
        else:
            state[key] = value.to(side.state_dict[key].dtype if key in side.state_dict else torch.float32)
    return side.changed(state_dict=state, **changes)


def _to_rgb(values: np.ndarray, order: str) -> np.ndarray:
    return values[::-1].copy() if order == "BGR" else values


# -- channel_order ------------------------------------------------------------------------------
def _flip_input_channels(a: Side, b: Side, finding: Finding) -> Side:
    key = finding.data["key"]
    updates = {key: b.state_dict[key].flip(1)}
    for name in ("data_bn.weight", "data_bn.bias", "data_bn.running_mean", "data_bn.running_var"):
        if name in b.state_dict:
            updates[name] = b.state_dict[name].flip(0)
    return _with_tensors(b, updates)


@hypothesis("channel_order", fix=_flip_input_channels)
def channel_order_signature(a: Side, b: Side) -> Finding | None:
    """The stem's first conv of B equals A's with RGB and BGR swapped, beyond what the declared
    channel orders account for."""
    key = _stem_key(a)
    pair = _pair(a, b, key)
    if pair is None or pair[0].shape != pair[1].shape or pair[0].shape[1] < 2:
        return None
    wa, wb = pair
    order_a, order_b = a.preprocessing.channel_order, b.preprocessing.channel_order
    expected = wa.flip(1) if order_a != order_b else wa  # a correct port reorders with the metadata
    as_declared, swapped = _rel(wb, expected), _rel(wb, expected.flip(1))
    if swapped > MATCH_RTOL or as_declared <= 10 * max(swapped, 1e-7):
        return None
    return Finding(
        f"{key} of B is A's with the input channels reversed (rel diff {swapped:.1e}, {as_declared:.1e} "
        f"as declared), while A reads {order_a} and B reads {order_b}",
        {"key": key},
    )


# -- bn_scale_factor ----------------------------------------------------------------------------
def _divide_bn_stats(a: Side, b: Side, finding: Finding) -> Side:
    updates = {}
    for module, factor in finding.data["factors"].items():
        for leaf in ("running_mean", "running_var"):
            updates[f"{module}.{leaf}"] = _f64(b.state_dict[f"{module}.{leaf}"]) / factor
    return _with_tensors(b, updates)


@hypothesis("bn_scale_factor", fix=_divide_bn_stats)
def bn_scale_factor_signature(a: Side, b: Side) -> Finding | None:
    """Running mean and variance of B are A's times one factor per layer (Caffe's third
    BatchNorm blob, not divided out)."""
    factors = {}
    for module in bn_modules(a.state_dict, b.state_dict):
        means = _pair(a, b, f"{module}.running_mean")
        variances = _pair(a, b, f"{module}.running_var")
        if means is None or variances is None or variances[0].shape != variances[1].shape:
            continue
        va, vb = _f64(variances[0]), _f64(variances[1])
        usable = va.abs() > 1e-12
        if not bool(usable.any()) or torch.equal(va, vb):
            continue
        ratios = vb[usable] / va[usable]
        factor = float(ratios.median())
        if not factor > 0 or abs(factor - 1.0) <= 1e-3:
            continue
        if float((ratios - factor).abs().max()) > 1e-3 * factor:
            continue
        if _rel(_f64(means[1]), _f64(means[0]) * factor) > 1e-3:
            continue
        factors[module] = factor
    if not factors:
        return None
    values = sorted(factors.values())
    example = next(iter(factors))
    spread = f"{values[0]:.6g}" if values[0] == values[-1] else f"{values[0]:.6g}..{values[-1]:.6g}"
    return Finding(
        f"running mean/var of {len(factors)} BatchNorm(s) of B are A's times one factor per layer "
        f"({spread}; e.g. {example} x{factors[example]:.6g})",
        {"factors": factors},
    )


# -- bn_eps -------------------------------------------------------------------------------------
def _take_eps(a: Side, b: Side, finding: Finding) -> Side:
    return b.changed(spec=b.spec.replace(bn_eps=a.spec.bn_eps, bn_eps_overrides=a.spec.bn_eps_overrides))


@hypothesis("bn_eps", fix=_take_eps)
def bn_eps_signature(a: Side, b: Side) -> Finding | None:
    """The BatchNorm eps of some layers differs (1e-5 in Caffe/PyTorch, 2e-5 in MXNet's ResNets,
    1e-3 as MXNet's default)."""
    rows = eps_rows(a, b)
    if not rows:
        return None
    total = len(bn_modules(a.state_dict, b.state_dict))
    first = rows[0]
    return Finding(
        f"eps differs in {len(rows)} of {total} BatchNorms: A {first['eps_a']:g}, B {first['eps_b']:g} "
        f"(e.g. {first['module']})",
        {"modules": [row["module"] for row in rows]},
    )


# -- fix_gamma ----------------------------------------------------------------------------------
def _restore_gamma(a: Side, b: Side, finding: Finding) -> Side:
    updates = {f"{m}.weight": _f64(a.state_dict[f"{m}.weight"]) for m in finding.data["modules"]}
    return _with_tensors(b, updates)


@hypothesis("fix_gamma", fix=_restore_gamma)
def fix_gamma_signature(a: Side, b: Side) -> Finding | None:
    """In some BatchNorms one side's gamma is exactly 1 and the other's is not: one port honoured
    MXNet's ``fix_gamma`` (gamma = 1 whatever is stored) and the other used the stored gamma."""
    modules, ones_on = [], set()
    for module in bn_modules(a.state_dict, b.state_dict):
        pair = _pair(a, b, f"{module}.weight")
        if pair is None or pair[0].shape != pair[1].shape or torch.equal(pair[0], pair[1]):
            continue
        one_a, one_b = bool((pair[0] == 1).all()), bool((pair[1] == 1).all())
        if one_a != one_b:
            modules.append(module)
            ones_on.add("A" if one_a else "B")
    if not modules:
        return None
    return Finding(
        f"gamma of {len(modules)} BatchNorm(s) is exactly 1 on side {'/'.join(sorted(ones_on))} and not on the "
        f"other (e.g. {modules[0]}): one side ignores the stored gamma",
        {"modules": modules},
    )


# -- stride_placement ---------------------------------------------------------------------------
def _take_stride(a: Side, b: Side, finding: Finding) -> Side:
    return b.changed(spec=b.spec.replace(stride_in=a.spec.stride_in))


@hypothesis("stride_placement", fix=_take_stride)
def stride_placement_signature(a: Side, b: Side) -> Finding | None:
    """Bottleneck stride in the 1x1 (paper, Caffe, Gluon V1) on one side, the 3x3 (torchvision
    "v1.5") on the other: the weights have the same shapes either way, only the outputs tell."""
    if a.spec.block != "bottleneck" or b.spec.block != "bottleneck" or a.spec.stride_in == b.spec.stride_in:
        return None
    return Finding(
        f"bottleneck stride sits in the {a.spec.stride_in} conv on A and the {b.spec.stride_in} conv on B "
        "(same weight shapes)"
    )


# -- pool_rounding ------------------------------------------------------------------------------
POOL_WORDS = {"max": "3x3/2 pad 1, floor", "max_ceil": "3x3/2 pad 0, ceil"}


def _take_pool(a: Side, b: Side, finding: Finding) -> Side:
    return b.changed(spec=b.spec.replace(stem_pool=a.spec.stem_pool))


@hypothesis("pool_rounding", fix=_take_pool)
def pool_rounding_signature(a: Side, b: Side) -> Finding | None:
    """The stem max pool rounds up (Caffe) on one side and down (PyTorch, MXNet) on the other."""
    pools = {a.spec.stem_pool, b.spec.stem_pool}
    if len(pools) != 2 or not pools <= set(POOL_WORDS):
        return None
    return Finding(
        f"stem max pool is {POOL_WORDS[a.spec.stem_pool]} on A, {POOL_WORDS[b.spec.stem_pool]} on B"
    )


# -- input_scale --------------------------------------------------------------------------------
def _rgb_scale(prep: Preprocessing, channels: int) -> np.ndarray:
    """What one unit of a [0, 1] RGB pixel becomes at the network input, per RGB channel."""
    std = np.ones(channels) if prep.std is None else np.asarray(prep.std, dtype=np.float64)
    return _to_rgb(prep.pixel_max / std, prep.channel_order)


def _rescale_pixels(a: Side, b: Side, finding: Finding) -> Side:
    prep = dataclasses.replace(b.preprocessing, pixel_max=b.preprocessing.pixel_max / finding.data["ratio"])
    return b.changed(preprocessing=prep)


@hypothesis("input_scale", fix=_rescale_pixels)
def input_scale_signature(a: Side, b: Side) -> Finding | None:
    """B scales pixels 255 times more (or less) than A: 0-255 values fed where 0-1 was meant."""
    channels = a.spec.in_chans
    ratios = _rgb_scale(b.preprocessing, channels) / _rgb_scale(a.preprocessing, channels)
    ratio = float(np.median(ratios))
    if not np.allclose(ratios, ratio, rtol=1e-3):
        return None
    if not any(abs(ratio / target - 1.0) < 0.02 for target in (255.0, 1.0 / 255.0)):
        return None
    pa, pb = a.preprocessing, b.preprocessing
    return Finding(
        f"B's input is {ratio:.4g}x A's for the same image (pixels 0-{pb.pixel_max:g}, std {pb.std} on B; "
        f"0-{pa.pixel_max:g}, std {pa.std} on A)",
        {"ratio": ratio},
    )


# -- mean_image ---------------------------------------------------------------------------------
def _image_means_in(source: Preprocessing, target: Preprocessing) -> np.ndarray:
    """Per-channel averages of ``source``'s mean image, in ``target``'s channel order and scale."""
    means = np.asarray(source.mean_image, dtype=np.float64).mean(axis=(1, 2))
    rgb01 = _to_rgb(means, source.channel_order) / source.pixel_max
    return _to_rgb(rgb01, target.channel_order) * target.pixel_max  # RGB<->BGR is its own inverse


def _take_mean_handling(a: Side, b: Side, finding: Finding) -> Side:
    pa, pb = a.preprocessing, b.preprocessing
    if pa.mean_image is not None:
        image = np.asarray(pa.mean_image, dtype=np.float64)
        if pa.channel_order != pb.channel_order:
            image = image[::-1]
        image = image / pa.pixel_max * pb.pixel_max
        prep = dataclasses.replace(pb, mean_image=image.astype(np.float32), mean=None)
    else:
        prep = dataclasses.replace(pb, mean_image=None, mean=tuple(_image_means_in(pb, pb)))
    return b.changed(preprocessing=prep)


@hypothesis("mean_image", fix=_take_mean_handling)
def mean_image_signature(a: Side, b: Side) -> Finding | None:
    """One side subtracts a mean image (Kaiming He's release), the other only its per-channel
    averages."""
    pa, pb = a.preprocessing, b.preprocessing
    if (pa.mean_image is None) == (pb.mean_image is None):
        return None
    with_image, without = (pa, pb) if pa.mean_image is not None else (pb, pa)
    if without.mean is None or len(without.mean) != with_image.mean_image.shape[0]:
        return None
    averages = _image_means_in(with_image, without)
    if np.abs(averages - np.asarray(without.mean)).max() > 0.01 * without.pixel_max:
        return None
    image_side = "A" if with_image is pa else "B"
    other = "B" if image_side == "A" else "A"
    return Finding(
        f"side {image_side} subtracts a mean image {list(with_image.mean_image.shape)}; side {other} only its "
        f"per-channel averages {tuple(round(float(v), 3) for v in without.mean)}"
    )


# -- missing_mean -------------------------------------------------------------------------------
def _subtracts(prep: Preprocessing) -> bool:
    return prep.mean is not None or prep.mean_image is not None


def _take_mean_of(a: Side, b: Side, finding: Finding) -> Side:
    """B subtracts what A subtracts, in B's channel order and pixel scale (or nothing, as A)."""
    pa, pb = a.preprocessing, b.preprocessing
    mean = image = None
    if pa.mean is not None:
        mean = tuple(float(v) for v in _to_rgb(_to_rgb(np.asarray(pa.mean, np.float64), pa.channel_order) / pa.pixel_max, pb.channel_order) * pb.pixel_max)
    if pa.mean_image is not None:
        image = np.asarray(pa.mean_image, dtype=np.float64)
        image = (image[::-1] if pa.channel_order != pb.channel_order else image) / pa.pixel_max * pb.pixel_max
        image = image.astype(np.float32)
    return b.changed(preprocessing=dataclasses.replace(pb, mean=mean, mean_image=image))


@hypothesis("missing_mean", fix=_take_mean_of)
def missing_mean_signature(a: Side, b: Side) -> Finding | None:
    """One side subtracts a mean from the pixels and the other none: a port that forgot the mean (or
    a conversion run without --mean / --mean-values)."""
    pa, pb = a.preprocessing, b.preprocessing
    if _subtracts(pa) == _subtracts(pb):
        return None
    with_mean, side, other = (pa, "A", "B") if _subtracts(pa) else (pb, "B", "A")
    what = (
        f"a mean image {list(with_mean.mean_image.shape)}" if with_mean.mean_image is not None
        else f"the per-channel mean {tuple(round(float(v), 3) for v in with_mean.mean)}"
    )
    return Finding(f"side {side} subtracts {what}; side {other} subtracts no mean")


# -- class_order --------------------------------------------------------------------------------
def _unpermute_classes(a: Side, b: Side, finding: Finding) -> Side:
    perm = finding.data["perm"]  # B row i holds A row perm[i]
    updates = {}
    for key in ("fc.weight", "fc.bias"):
        if key in b.state_dict:
            value = b.state_dict[key]
            restored = torch.empty_like(value)
            restored[perm] = value
            updates[key] = restored
    return _with_tensors(b, updates)


@hypothesis("class_order", fix=_unpermute_classes)
def class_order_signature(a: Side, b: Side) -> Finding | None:
    """The classifier rows of B are A's rows in another order (a different class list order)."""
    pair = _pair(a, b, "fc.weight")
    if pair is None or pair[0].shape != pair[1].shape or pair[0].ndim != 2:
        return None
    wa, wb = _f64(pair[0]), _f64(pair[1])
    if _rel(wa, wb) <= MATCH_RTOL:
        return None
    distances = torch.cdist(wb, wa)
    perm = distances.argmin(dim=1)
    scale = float(wa.abs().max()) or 1.0
    rows = torch.arange(len(perm))
    if float(distances[rows, perm].max()) > MATCH_RTOL * scale * wa.shape[1] ** 0.5:
        return None
    if len(set(perm.tolist())) != len(perm) or bool((perm == rows).all()):
        return None
    biases = _pair(a, b, "fc.bias")
    if biases is not None and _rel(biases[1], biases[0][perm]) > MATCH_RTOL:
        return None
    moved = int((perm != rows).sum())
    first = int((perm != rows).nonzero()[0])
    return Finding(
        f"fc rows of B are A's rows permuted: {moved} of {len(perm)} classes moved (e.g. B row {first} "
        f"is A row {int(perm[first])})",
        {"perm": perm},
    )


# -- transposed_fc ------------------------------------------------------------------------------
def _untranspose_fc(a: Side, b: Side, finding: Finding) -> Side:
    w = b.state_dict["fc.weight"]
    mode = finding.data["mode"]
    if mode == "transpose":
        fixed = w.t().contiguous()
    elif mode == "reshape_b":  # B = A.T.reshape(A.shape): undo the reshape, then transpose
        fixed = w.reshape(w.shape[1], w.shape[0]).t().contiguous()
    else:  # reshape_a: A = B.T.reshape(B.shape)
        fixed = w.t().contiguous().reshape(w.shape)
    side = _with_tensors(b, {"fc.weight": fixed})
    if side.spec.num_classes != fixed.shape[0]:
        side = side.changed(spec=side.spec.replace(num_classes=int(fixed.shape[0])))
    return side


@hypothesis("transposed_fc", fix=_untranspose_fc)
def transposed_fc_signature(a: Side, b: Side) -> Finding | None:
    """B's classifier is A's transposed, or A's transpose read back with a reshape (a (in, out)
    matrix reshaped to (out, in) instead of transposed)."""
    pair = _pair(a, b, "fc.weight")
    if pair is None or pair[0].ndim != 2 or pair[1].ndim != 2:
        return None
    wa, wb = _f64(pair[0]), _f64(pair[1])
    if wa.shape == wb.shape and _rel(wa, wb) <= MATCH_RTOL:
        return None
    out_f, in_f = wa.shape
    if wb.shape == (in_f, out_f) and _rel(wb.t(), wa) <= MATCH_RTOL:
        mode, how = "transpose", f"B's fc.weight {list(wb.shape)} is A's {list(wa.shape)} transposed"
    elif wb.shape == wa.shape and out_f != in_f and _rel(wb.reshape(in_f, out_f).t(), wa) <= MATCH_RTOL:
        mode, how = "reshape_b", f"B's fc.weight is A's transpose reshaped to {list(wb.shape)} (reshape, not transpose)"
    elif wb.shape == wa.shape and out_f != in_f and _rel(wa.reshape(in_f, out_f).t(), wb) <= MATCH_RTOL:
        mode, how = "reshape_a", f"A's fc.weight is B's transpose reshaped to {list(wa.shape)} (reshape, not transpose)"
    else:
        return None
    return Finding(how, {"mode": mode})


# -- missing_bias -------------------------------------------------------------------------------
def _take_biases(a: Side, b: Side, finding: Finding) -> Side:
    updates: dict[str, torch.Tensor | None] = {}
    for key in finding.data["keys"]:
        updates[key] = a.state_dict.get(key)
    spec = b.spec
    if set(a.spec.conv_bias) != set(b.spec.conv_bias):
        spec = spec.replace(conv_bias=a.spec.conv_bias)
    state = dict(b.state_dict)
    for key, value in updates.items():
        if value is None:
            state.pop(key, None)
        else:
            state[key] = value
    return b.changed(spec=spec, state_dict=state)


@hypothesis("missing_bias", fix=_take_biases)
def missing_bias_signature(a: Side, b: Side) -> Finding | None:
    """A bias that one side has is absent, or all zero, on the other (Caffe's conv1 bias on
    ResNet-50, a Scale layer's beta, a classifier bias left at its initial zeros)."""
    found = []
    for key in list(a.state_dict) + [k for k in b.state_dict if k not in a.state_dict]:
        if not key.endswith(".bias"):
            continue
        ta, tb = a.state_dict.get(key), b.state_dict.get(key)
        zero_a = ta is None or not bool(ta.any())
        zero_b = tb is None or not bool(tb.any())
        if zero_a != zero_b:
            lacking = "A" if zero_a else "B"
            state = "absent" if (ta if zero_a else tb) is None else "all zero"
            found.append((key, lacking, state))
    if not found:
        return None
    key, lacking, state = found[0]
    more = f" and {len(found) - 1} more" if len(found) > 1 else ""
    return Finding(
        f"{key} is {state} on side {lacking} but not on the other{more}", {"keys": [k for k, _, _ in found]}
    )


if set(HYPOTHESES) != set(CAUSE_KEYS):  # every key has a hypothesis, checked at import
    raise RuntimeError(f"causes without a hypothesis: {sorted(set(CAUSE_KEYS) - set(HYPOTHESES))}")
