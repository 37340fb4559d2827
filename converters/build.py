"""A `Skeleton` -> ``(spec, state_dict, report)``: every spec decision, written once for every source.

The rules (each checked by tests/converters/test_build.py on hand-made skeletons):

- **Stages.**  A new stage starts at a block whose stride is not 1 or whose output width differs
  from the previous block's.  The first stage must have stride 1 and every later stage starts with
  a stride-2 block, as the reference ResNet builds them; anything else is refused naming the block.
- **Widths.**  A stage's width is its output channels / expansion (4 for bottlenecks); the
  bottleneck inner width gives ``base_width`` (inner * 64 / width), which must be one integer for
  every block.
- **Stride placement.**  Read from the strided bottlenecks (conv1 -> ``"1x1"``, conv2 ->
  ``"3x3"``).  Where nothing tells (basic blocks, or no strided block) both readings build the same
  network: the registered one is taken, else ``"1x1"`` for v1 and ``"3x3"`` for v2 (the registry's
  convention: Gluon V1 / Caffe vs Gluon V2 / torchvision).
- **Stem.**  One 7x7/2 pad-3 conv (``"7x7"``), one 3x3/1 pad-1 conv (``"3x3"``), or three 3x3 convs,
  the first strided, of widths w/2, w/2, w or any other (``"deep"``; ``stem_widths`` keeps the first
  two when they are not w/2: timm's tiered 24-32-64).  Stem pool: 3x3/2 pad 1 floor max pool
  (``"max"``), 3x3/2 pad 0 ceil (``"max_ceil"``), or none.  A one-conv stem's BN-ReLU may be a BN
  alone (``stem_relu`` False) or absent (``stem_norm`` ``"bn"`` / ``"none"``); the deep stem's may not.
- **v2 projections** read the pre-activated input, or every one of them the raw block input
  (``v2_shortcut_input``); a mix is refused naming the block.
- **BatchNorm eps.**  ``bn_eps`` is the most common eps over every BN (input, stem, blocks, final);
  on a tie the smallest value wins.  Every BN whose eps differs is named in ``bn_eps_overrides``.
- **Conv biases.**  A role (stem, conv1, conv2, conv3, downsample) carries a bias when any conv of
  that role has one; the role's other convs get zeros (exact), noted in the report.
- **Projections.**  ``"when_needed"`` when a block projects exactly where the shape changes;
  ``"first_of_stage"`` when every stage's first block projects (even where an identity fits) and no
  other block does.  When both hold they build the same network: the registered one is taken,
  else ``"when_needed"``.  Anything else is refused.
- **Input BN.**  A BN whose gamma the source ignores (fix_gamma) or lacks: with a zero (or absent)
  beta it is both the affine-free and the fixed-gamma BN (registered reading taken, else
  affine-free); with a non-zero beta the fixed-gamma one, or the affine-free one with beta folded
  into its mean (registered reading taken, else fixed-gamma).  A BN with a learnt gamma/beta that are
  1/0 reads the same way; any other learnt gamma/beta is folded exactly into affine-free statistics
  (the sign of gamma into the stem conv's input channels).
- **Registered name.**  Among the equivalent readings above, the one ``arch`` names if given, else
  the first that `resnet_ref.find_arch` knows, else the first.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from itertools import product
from typing import Iterator

import numpy as np
import torch

from resnet_port.converters.common import ConversionReport
from resnet_port.converters.skeleton import BatchNorm, Block, Conv, Pool, Skeleton, SourceLayer, SourceTensor
from resnet_port.errors import ConversionError, SpecError
from resnet_port.resnet_ref import ResNetSpec, find_arch, get_spec, list_archs


@dataclass
class Built:
    """What `build` returns; unpacks as ``spec, state_dict, report``.

    ``block_names`` gives each skeleton block's reference prefix (``"layer2.0"``), in order.
    """

    spec: ResNetSpec
    state_dict: dict[str, torch.Tensor]
    report: ConversionReport
    block_names: list[str]
    arch: str | None

    def __iter__(self) -> Iterator:
        return iter((self.spec, self.state_dict, self.report))


def stages(skeleton: Skeleton) -> list[list[Block]]:
    """The blocks split into stages: a new stage at a block whose stride != 1 or whose output width
    differs from the previous block's."""
    out: list[list[Block]] = []
    for block in skeleton.blocks:
        if not out or block.stride != 1 or block.out_channels != out[-1][-1].out_channels:
            out.append([])
        out[-1].append(block)
    return out


def majority_eps(eps: dict[str, float]) -> tuple[float, tuple[tuple[str, float], ...]]:
    """(bn_eps, overrides): the most common eps, the smallest on a tie; every other BN named."""
    counts = Counter(eps.values())
    common = min(counts, key=lambda value: (-counts[value], value))
    return common, tuple((name, value) for name, value in eps.items() if value != common)


def pick_registered(candidates: list[ResNetSpec], arch: str | None = None) -> tuple[ResNetSpec, str | None]:
    """Of equivalent readings of one network: the one ``arch`` names, else the first registered one,
    else the first.  Returns it with its registered name (None when unregistered)."""
    if arch is not None and arch in list_archs():
        for spec in candidates:
            if get_spec(arch, spec.num_classes) == spec:
                return spec, arch
    for spec in candidates:
        name = find_arch(spec)
        if name is not None:
            return spec, name
    return candidates[0], None


class _Checker:
    def __init__(self, skeleton: Skeleton) -> None:
        self.where = skeleton.where

    def fail(self, label: str, message: str) -> ConversionError:
        return ConversionError(f"{self.where}: {label}: {message}")

    def conv(self, conv: Conv, kernel: int, role: str, stride: int | None = None) -> None:
        """Kernel, 'same' padding k//2, no dilation, no groups, equal strides."""
        pad = kernel // 2
        if conv.kernel != (kernel, kernel) or conv.pad != (pad,) * 4 or conv.dilation != (1, 1) or conv.groups != 1:
            raise self.fail(
                conv.label,
                f"{role} is kernel {conv.kernel[0]}x{conv.kernel[1]}, pad {list(conv.pad)}, dilation {conv.dilation}, "
                f"group {conv.groups}; the reference ResNet's {role} is {kernel}x{kernel}, pad {pad}, dilation 1, group 1",
            )
        if conv.stride[0] != conv.stride[1]:
            raise self.fail(conv.label, f"has stride {conv.stride[0]}x{conv.stride[1]}; the reference ResNet needs equal strides")
        if stride is not None and conv.stride[0] != stride:
            raise self.fail(conv.label, f"the {role} has stride {conv.stride[0]}, expected {stride}")

    def feeds(self, conv: Conv, channels: int) -> None:
        if conv.in_channels != channels:
            shape = tuple(int(d) for d in conv.weight.array.shape)
            expected = (shape[0], channels // conv.groups, *shape[2:])
            raise self.fail(
                conv.label,
                f"weight has shape {shape}: {conv.in_channels} input channels, but its input has {channels} "
                f"(expected {expected})",
            )

    def bn(self, bn: BatchNorm | None, channels: int, what: str, label: str) -> BatchNorm:
        if bn is None:
            raise self.fail(label, f"has no BatchNorm {what}; the reference ResNet has one there")
        if bn.channels != channels:
            raise self.fail(bn.label, f"has {bn.channels} channels, expected {channels} ({what})")
        return bn


def _stem_norm(check: _Checker, skeleton: Skeleton, kind: str) -> str:
    """What follows a one-conv stem: BN-ReLU, BN alone, or nothing (ResNetSpec.stem_norm)."""
    last = skeleton.stem[-1]
    if last.bn is None:
        pre_activation = bool(skeleton.blocks) and skeleton.blocks[0].residual == "v2"
        if skeleton.stem_relu or (kind == "deep" and not pre_activation):
            raise check.fail(
                last.conv.label,
                "has no BatchNorm after it; only a one-conv stem without a ReLU, or a pre-activation net's deep stem, may lack one",
            )
        return "none"
    if not skeleton.stem_relu:
        if kind == "deep":
            raise check.fail(last.bn.label, "ends the deep stem without a ReLU; the deep stem ends with BN-ReLU")
        return "bn"
    return "bn_relu"


def _v2_shortcut_input(check: _Checker, skeleton: Skeleton, residual: str) -> str:
    """What every v2 projection reads: the pre-activated input, or the raw block input; all alike."""
    reads = {b.shortcut.reads for b in skeleton.blocks if b.shortcut.conv is not None}
    if residual != "v2" or not reads:
        return "preactivated"
    if len(reads) > 1:
        odd = next(b for b in skeleton.blocks if b.shortcut.conv is not None and b.shortcut.reads == "block_input")
        raise check.fail(odd.label, "projects its raw input while other blocks project the pre-activated one")
    return reads.pop()


def _stem(check: _Checker, skeleton: Skeleton) -> tuple[str, int]:
    """(stem kind, stem output width); the deep stem's first two widths are `_stem_widths`."""
    convs = [unit.conv for unit in skeleton.stem]
    first = convs[0]
    if len(convs) == 1 and first.kernel == (7, 7):
        check.conv(first, 7, "7x7 stem", stride=2)
        kind = "7x7"
    elif len(convs) == 1 and first.kernel == (3, 3):
        check.conv(first, 3, "3x3 stem", stride=1)
        kind = "3x3"
    elif len(convs) == 3:
        for i, conv in enumerate(convs):
            check.conv(conv, 3, f"deep stem conv {i + 1}", stride=2 if i == 0 else 1)
        # Any widths: w/2, w/2, w (mmcls V1c/V1d, timm *c/*d/*s) or tiered (timm *t: 24, 32, 64);
        # the spec keeps the first two in stem_widths, the channels chain is checked below.
        kind = "deep"
    else:
        raise check.fail(
            first.label,
            f"the stem has {len(convs)} conv(s), the first with kernel {first.kernel}; expected one 7x7/2, one 3x3/1, "
            "or three 3x3 (the deep stem)",
        )
    channels = first.in_channels
    for unit in skeleton.stem:
        check.feeds(unit.conv, channels)
        if unit.bn is not None or unit is not skeleton.stem[-1]:  # a bare last conv: see _stem_norm
            check.bn(unit.bn, unit.conv.out_channels, "after the stem conv", unit.conv.label)
        channels = unit.conv.out_channels
    return kind, channels


def _stem_pool(check: _Checker, pool: Pool | None) -> str:
    if pool is None:
        return "none"
    if pool.kind == "max" and not pool.global_pool and pool.kernel == (3, 3) and pool.stride == (2, 2):
        # Caffe: no padding, sizes rounded up (112 -> 56).  Padding 1 with floor is torchvision's.
        if pool.pad == (0, 0, 0, 0) and pool.ceil:
            return "max_ceil"
        if pool.pad == (1, 1, 1, 1) and not pool.ceil:
            return "max"
    raise check.fail(
        pool.label,
        f"the stem pool ({pool.kind}{', global' if pool.global_pool else ''}, kernel {pool.kernel}, stride {pool.stride}, "
        f"pad {list(pool.pad)}, {'ceil' if pool.ceil else 'floor'}) is neither the 3x3/2 pad-1 floor max pool nor "
        "Caffe's 3x3/2 pad-0 ceil max pool",
    )


def _head_pool(check: _Checker, pool: Pool) -> tuple[str, int]:
    if pool.kind == "avg" and pool.global_pool:
        return "global", 7
    if pool.kind == "avg" and pool.stride == (1, 1) and pool.pad == (0, 0, 0, 0) and pool.kernel[0] == pool.kernel[1]:
        return "fixed", pool.kernel[0]
    raise check.fail(
        pool.label,
        f"the head pool ({pool.kind}, kernel {pool.kernel}, stride {pool.stride}, pad {list(pool.pad)}) is not an "
        "average pool that is global or square with stride 1 and no padding",
    )


def _stem_widths(skeleton: Skeleton, kind: str) -> tuple[int, ...]:
    """The deep stem's first two conv widths (ResNetSpec.stem_widths; the spec folds w/2, w/2 to ())."""
    return tuple(unit.conv.out_channels for unit in skeleton.stem[:2]) if kind == "deep" else ()


@dataclass
class _BlockFacts:
    block: str
    residual: str
    layers: tuple[int, ...]
    widths: tuple[int, ...]
    stride_in: tuple[str, ...]  # the readings, first preferred
    base_width: int
    projection: tuple[str, ...]
    shortcut: str


def _blocks(check: _Checker, skeleton: Skeleton, split: list[list[Block]], stem_width: int) -> _BlockFacts:
    if not skeleton.blocks:
        raise check.fail(skeleton.stem[0].conv.label, "no residual block follows the stem")
    first = split[0][0]
    kind, residual = first.kind, first.residual
    expansion = 4 if kind == "bottleneck" else 1
    kernels = (1, 3, 1) if kind == "bottleneck" else (3, 3)
    widths: list[int] = []
    stride_in: set[str] = set()
    base_widths: set[int] = set()
    needed_only = every_first = True
    avg_down = any(b.shortcut.kind == "avgpool_conv" for b in skeleton.blocks)
    cin = stem_width
    for s, stage in enumerate(split):
        out = stage[0].out_channels
        if out % expansion:
            raise check.fail(stage[0].label, f"makes {out} channels, not a multiple of the bottleneck expansion 4")
        planes = out // expansion
        widths.append(planes)
        for b, block in enumerate(stage):
            if len(block.body) not in (2, 3):
                raise check.fail(block.label, f"has {len(block.body)} body convolutions; a ResNet block has 2 or 3")
            if block.kind != kind or block.residual != residual:
                raise check.fail(block.label, f"is a {block.residual} {block.kind} block in a net of {residual} {kind} blocks")
            expected = 2 if s > 0 and b == 0 else 1
            if block.stride != expected:
                where = "the first block" if s == 0 and b == 0 else f"block {b} of stage {s + 1}"
                raise check.fail(
                    block.label, f"{where} has stride {block.stride}; the reference ResNet puts stride {expected} there"
                )
            for i, (unit, k) in enumerate(zip(block.body, kernels)):
                check.conv(unit.conv, k, f"{k}x{k} body convolution (conv{i + 1})")
            strided = [i for i, unit in enumerate(block.body) if unit.conv.stride[0] != 1]
            if len(strided) > 1:
                raise check.fail(block.label, f"strides more than one body convolution: {[u.conv.stride[0] for u in block.body]}")
            if strided and kind == "bottleneck":
                if strided[0] == 2:
                    raise check.fail(block.body[2].conv.label, "strides the last 1x1 of a bottleneck; the reference strides conv1 or conv2")
                stride_in.add("1x1" if strided[0] == 0 else "3x3")
                if len(stride_in) > 1:
                    raise check.fail(block.label, "some bottlenecks stride the first 1x1, others the 3x3")
            if strided and kind == "basic" and strided[0] != 0:
                raise check.fail(block.label, "a basic block strides its second 3x3; the reference strides the first")
            feeding = cin
            for i, unit in enumerate(block.body):
                check.feeds(unit.conv, feeding)
                if residual == "v1":
                    check.bn(unit.bn, unit.conv.out_channels, f"after conv{i + 1}", unit.conv.label)
                else:
                    check.bn(unit.bn, feeding, f"before conv{i + 1} (pre-activation)", unit.conv.label)
                feeding = unit.conv.out_channels
            if block.out_channels != out:
                raise check.fail(block.label, f"makes {block.out_channels} channels, its stage {out}")
            if kind == "bottleneck":
                inner = block.body[0].conv.out_channels
                if block.body[1].conv.out_channels != inner:
                    raise check.fail(block.body[1].conv.label, f"makes {block.body[1].conv.out_channels} channels, conv1 {inner}")
                width = inner * 64 / planes
                if width != int(width) or (base_widths and int(width) not in base_widths):
                    raise check.fail(block.label, f"bottleneck inner width {inner} is not one multiple of the stage widths")
                base_widths.add(int(width))
            needs = block.stride != 1 or cin != out
            has = block.shortcut.kind != "identity"
            if has:
                _shortcut(check, block, cin, out, avg_down)
            elif needs:
                raise check.fail(
                    block.label,
                    f"changes the shape ({cin}->{out} channels, stride {block.stride}) but has an identity shortcut "
                    "(no projection shortcut)",
                )
            needed_only &= has == needs
            every_first &= has == (b == 0)
            cin = out
    if needed_only and every_first:
        projection: tuple[str, ...] = ("when_needed", "first_of_stage")
    elif needed_only:
        projection = ("when_needed",)
    elif every_first:
        projection = ("first_of_stage",)
    else:
        def projects(blk: Block) -> bool:
            return blk.shortcut.kind != "identity"

        def needed(blk: Block) -> bool:
            return blk.stride != 1 or blk.in_channels != blk.out_channels

        misfits = [blk for st in split for i, blk in enumerate(st) if i != 0 and projects(blk) and not needed(blk)]
        misfits += [blk for st in split for blk in st if projects(blk) != needed(blk)]
        bad = misfits[0]
        raise check.fail(
            bad.label, "a projection shortcut where neither 'when needed' nor 'first of stage' puts one"
        )
    if kind == "bottleneck" and stride_in:
        readings = tuple(stride_in)
    else:
        readings = ("1x1", "3x3") if residual == "v1" else ("3x3", "1x1")
    return _BlockFacts(
        block=kind,
        residual=residual,
        layers=tuple(len(stage) for stage in split),
        widths=tuple(widths),
        stride_in=readings,
        base_width=base_widths.pop() if base_widths else 64,
        projection=projection,
        shortcut="avgpool_conv" if avg_down else "conv",
    )


def _shortcut(check: _Checker, block: Block, cin: int, out: int, avg_down: bool) -> None:
    short = block.shortcut
    conv = short.conv
    if conv is None:
        raise check.fail(block.label, f"a {short.kind} shortcut without its conv")
    check.conv(conv, 1, "1x1 projection")
    check.feeds(conv, cin)
    if conv.out_channels != out:
        raise check.fail(conv.label, f"the projection makes {conv.out_channels} channels, the body {out}")
    if short.kind == "avgpool_conv":
        if conv.stride[0] != 1 or short.stride != block.stride:
            raise check.fail(conv.label, f"the average-pool shortcut should pool by {block.stride} and project with stride 1")
    else:
        if avg_down and block.stride != 1:
            raise check.fail(conv.label, "a strided 1x1 projection in a net whose other projections average-pool first")
        if conv.stride[0] != block.stride:
            raise check.fail(conv.label, f"the projection has stride {conv.stride[0]}, the body {block.stride}")
    if block.residual == "v1":
        check.bn(short.bn, out, "after the projection", conv.label)
    elif short.bn is not None:
        raise check.fail(short.bn.label, "a BatchNorm after a pre-activation projection; the reference's v2 projection is a bare conv")


class _Filler:
    """The state_dict and the report, filled tensor by tensor."""

    def __init__(self, report: ConversionReport, where: str) -> None:
        self.where = where
        self.report = report
        self.state: dict[str, torch.Tensor] = {}
        self.eps: dict[str, float] = {}
        self._layers: dict[tuple[str, str], dict] = {}
        for entry in report.layers:
            self._layers[(entry["name"], entry["type"])] = entry

    def layer(self, layer: SourceLayer | None, target: str) -> None:
        """List ``target`` under the source layer it came from (one report entry per source layer)."""
        if layer is None:
            return
        entry = self._layers.get((layer.name, layer.type))
        if entry is None:
            entry = {"name": layer.name, "type": layer.type, "targets": []}
            self._layers[(layer.name, layer.type)] = entry
            self.report.layers.append(entry)
        entry["targets"].append(target)

    def put(self, target: str, array: np.ndarray, ref: str, layer: SourceLayer | None = None) -> None:
        if np.asarray(array).dtype.kind != "f":
            raise ConversionError(f"{self.where}: tensor {ref!r} has dtype {np.asarray(array).dtype}; expected a floating-point type")
        if target in self.state:
            raise ConversionError(f"{target} would be filled twice ({self.report.mapped.get(target)} and {ref})")
        self.state[target] = torch.from_numpy(np.array(array, dtype=np.float32, copy=True))
        self.report.map(target, ref)
        self.layer(layer, target)

    def tensor(self, target: str, tensor: SourceTensor, layer: SourceLayer | None) -> None:
        self.put(target, tensor.array, tensor.ref, layer)

    def conv(self, prefix: str, conv: Conv, biased: bool) -> None:
        self.tensor(f"{prefix}.weight", conv.weight, conv.layer)
        if conv.bias is not None:
            self.tensor(f"{prefix}.bias", conv.bias, conv.layer)
        elif biased:
            # Another conv of this role has a bias; a zero bias is this one's exact equivalent.
            self.put(f"{prefix}.bias", np.zeros(conv.out_channels, np.float32), f"zeros ({conv.layer.name} has no bias)", conv.layer)
            self.report.notes.append(f"{conv.layer.name}: no bias; {prefix}.bias set to zeros")

    def bn(self, prefix: str, bn: BatchNorm) -> None:
        main = bn.layers[0] if bn.layers else None
        affine = bn.layers[-1] if bn.layers else None
        self.tensor(f"{prefix}.running_mean", bn.running_mean, main)
        self.tensor(f"{prefix}.running_var", bn.running_var, main)
        if bn.gamma is None:
            self.put(f"{prefix}.weight", np.ones(bn.channels, np.float32), f"ones ({bn.absent or 'no gamma'})", affine)
        elif bn.fix_gamma:
            # The source runs with gamma = 1 whatever is stored: ones, so no stored value leaks in.
            self.put(f"{prefix}.weight", np.ones(bn.channels, np.float32), bn.gamma.ref, affine)
            self.report.skip(bn.gamma.ref, "fix_gamma=True: the source uses gamma = 1 whatever is stored")
        else:
            self.tensor(f"{prefix}.weight", bn.gamma, affine)
        if bn.beta is None:
            self.put(f"{prefix}.bias", np.zeros(bn.channels, np.float32), f"zeros ({bn.absent or 'no beta'})", affine)
        else:
            self.tensor(f"{prefix}.bias", bn.beta, affine)
        missing = [what for what, tensor in (("gamma 1", bn.gamma), ("beta 0", bn.beta)) if tensor is None]
        if missing:
            self.report.notes.append(f"{main.name if main else bn.label}: {bn.absent or 'not stored'}; {', '.join(missing)}")
        self.eps[prefix] = bn.eps
        if main is not None:
            self.layer_extra(main, eps=bn.eps)

    def layer_extra(self, layer: SourceLayer, **extra) -> None:
        """Add facts (a BN's eps) to a layer's report entry."""
        entry = self._layers.get((layer.name, layer.type))
        if entry is not None:
            entry.update(extra)


def _input_bn_readings(bn: BatchNorm) -> tuple[str, ...]:
    """The spec readings of an input BN ("fold" when only a folded affine-free form holds it)."""
    beta_zero = bn.beta is None or not np.any(bn.beta.array)
    if bn.gamma is None or bn.fix_gamma:
        # A non-zero beta (MXNet applies it, though Gluon never trains it) folds exactly into the mean.
        return ("affine_free", "fixed_gamma") if beta_zero else ("fixed_gamma", "affine_free")
    if np.all(bn.gamma.array == 1.0) and beta_zero:
        return ("affine_free", "fixed_gamma")
    return ("fold",)


def _fill_input_bn(fill: _Filler, bn: BatchNorm, kind: str) -> None:
    """Map an input BN read as ``kind`` ("fixed_gamma" or "affine_free"; folding is `_fold_input_bn`)."""
    if kind == "fixed_gamma":
        fill.bn("data_bn", bn)
        if bn.beta is not None and np.any(bn.beta.array):
            fill.report.notes.append("the input BN has a non-zero beta: converted as a fixed-gamma BN that keeps it")
        return
    layer = bn.layers[0] if bn.layers else None
    beta = None if bn.beta is None or not np.any(bn.beta.array) else bn.beta
    if beta is None:
        fill.tensor("data_bn.running_mean", bn.running_mean, layer)
    else:
        # (x - m) / s + b = (x - m') / s with m' = m - b * s, s = sqrt(v + eps): exact, var and eps unchanged.
        scale = np.sqrt(bn.running_var.array.astype(np.float64) + float(bn.eps))
        fill.put(
            "data_bn.running_mean", bn.running_mean.array.astype(np.float64) - beta.array.astype(np.float64) * scale,
            f"{bn.running_mean.ref} - {beta.ref} * sqrt({bn.running_var.ref} + eps)", layer,
        )
        fill.report.notes.append(
            f"input BatchNorm {bn.label}: its beta is not zero (MXNet applies it although Gluon never trains it); "
            "folded exactly into the affine-free data_bn's running mean"
        )
    fill.tensor("data_bn.running_var", bn.running_var, layer)
    if bn.gamma is not None:
        why = "the source ignores it (fix_gamma)" if bn.fix_gamma else "it is all ones"
        fill.report.skip(bn.gamma.ref, f"the affine-free input BN has no gamma; {why}")
    if bn.beta is not None and beta is None:
        fill.report.skip(bn.beta.ref, "the affine-free input BN has no beta; it is all zeros")
    fill.eps["data_bn"] = bn.eps
    if layer is not None:
        fill.layer_extra(layer, eps=bn.eps)


def _fold_input_bn(fill: _Filler, bn: BatchNorm, where: str) -> np.ndarray:
    """A learnt input BN onto the affine-free data_bn, folded exactly.

    The source computes  y = g * (x - m) / sqrt(v + e) + b.  An affine-free BN computes
    u = (x - m') / sqrt(v' + e').  With s = sqrt(v + e) / |g| and sign = sign(g):
    y = sign * u  when  sqrt(v' + e') = s  and  m' = m - sign * b * s.  eps stays e unless that
    would make a variance negative; then e' is lowered to the smallest s^2 and v' takes up the rest.
    The sign goes into the stem conv's input channels (its zero padding is unchanged by a sign).
    g = 0 (a constant channel) has no such form and is refused.
    """
    g = bn.gamma.array.astype(np.float64)
    b = bn.beta.array.astype(np.float64) if bn.beta is not None else np.zeros_like(g)
    m = bn.running_mean.array.astype(np.float64)
    v = bn.running_var.array.astype(np.float64)
    e = float(bn.eps)
    if not np.all(np.isfinite(g) & (g != 0)) or not np.all(v + e > 0):
        channel = int(np.argmax(~(np.isfinite(g) & (g != 0)) | ~(v + e > 0)))
        raise ConversionError(
            f"{where}: {bn.label}: the input BatchNorm has scale {g[channel]:g} and variance {v[channel]:g} on channel "
            f"{channel}; a zero or non-finite scale (or variance + eps <= 0) has no affine-free form"
        )
    signs = np.sign(g)
    scale = np.sqrt(v + e) / np.abs(g)
    new_e = min(e, float(np.min(scale**2)))
    gname, bname = bn.gamma.ref, bn.beta.ref if bn.beta is not None else "0"
    layer = bn.layers[0] if bn.layers else None
    fill.put(
        "data_bn.running_mean", m - signs * b * scale,
        f"{bn.running_mean.ref} - sign({gname}) * {bname} * sqrt({bn.running_var.ref} + eps) / |{gname}|", layer,
    )
    fill.put("data_bn.running_var", scale**2 - new_e, f"({bn.running_var.ref} + eps) / {gname}^2 - eps'", layer)
    fill.eps["data_bn"] = new_e
    if layer is not None:
        fill.layer_extra(layer, eps=new_e, folded=True)
    flipped = (
        f"; channels {np.flatnonzero(signs < 0).tolist()} have a negative gamma, folded into conv1's weights"
        if np.any(signs < 0) else ""
    )
    fill.report.notes.append(
        f"input BatchNorm {bn.label}: gamma/beta are not 1/0 (the source applies them; MXNet's ONNX exporter writes "
        "them although Gluon's fix_gamma ignores them); folded into the affine-free data_bn statistics so that the "
        f"port equals the source on this file{flipped}"
    )
    return signs


def _stem_names(count: int) -> list[tuple[str, str]]:
    if count == 1:
        return [("conv1", "bn1")]
    return [("conv1.0", "conv1.1"), ("conv1.3", "conv1.4"), ("conv1.6", "bn1")]


def build(skeleton: Skeleton, report: ConversionReport, arch: str | None = None) -> Built:
    """Decide the spec of ``skeleton`` and fill its state_dict; record every tensor in ``report``.

    ``arch`` picks among readings that build the same network (it is not checked against the
    network here: a converter that takes ``--arch`` refuses a mismatch itself).  Raises
    `ConversionError` naming the source and the first layer that does not fit.
    """
    check = _Checker(skeleton)
    stem_kind, stem_width = _stem(check, skeleton)
    stem_norm = _stem_norm(check, skeleton, stem_kind)
    stem_pool = _stem_pool(check, skeleton.stem_pool)
    split = stages(skeleton)
    facts = _blocks(check, skeleton, split, stem_width)
    v2_shortcut_input = _v2_shortcut_input(check, skeleton, facts.residual)
    last = split[-1][-1].out_channels
    if facts.residual == "v2":
        check.bn(skeleton.final_bn, last, "before the head (v2's final BN)", split[-1][-1].label)
    elif skeleton.final_bn is not None:
        raise check.fail(skeleton.final_bn.label, "a final BatchNorm in a post-activation (v1) net")
    head_pool, head_size = _head_pool(check, skeleton.head_pool)
    fc = skeleton.classifier
    if fc.weight.array.ndim != 2 or fc.weight.array.shape[1] != last:
        raise check.fail(
            fc.label, f"the classifier reads {list(fc.weight.array.shape[1:])} features, the last block makes {last} channels"
        )
    if skeleton.input_bn is not None:
        check.bn(skeleton.input_bn, skeleton.in_channels, "on the input", skeleton.stem[0].conv.label)
        input_readings = _input_bn_readings(skeleton.input_bn)
    else:
        input_readings = ("none",)

    # Conv bias roles: a role is biased when any of its convs has a bias.
    roles: dict[str, list[Conv]] = {"stem": [u.conv for u in skeleton.stem]}
    for block in skeleton.blocks:
        for i, unit in enumerate(block.body):
            roles.setdefault(f"conv{i + 1}", []).append(unit.conv)
        if block.shortcut.conv is not None:
            roles.setdefault("downsample", []).append(block.shortcut.conv)
    conv_bias = tuple(sorted(role for role, convs in roles.items() if any(c.bias is not None for c in convs)))

    # -- the state_dict ----------------------------------------------------------------------------
    fill = _Filler(report, skeleton.where)
    signs = None
    input_kind_fixed = None
    if skeleton.input_bn is not None and input_readings == ("fold",):
        signs = _fold_input_bn(fill, skeleton.input_bn, skeleton.where)
        input_readings = ("affine_free",)
        input_kind_fixed = "affine_free"
    for (conv_name, bn_name), unit in zip(_stem_names(len(skeleton.stem)), skeleton.stem):
        fill.conv(conv_name, unit.conv, "stem" in conv_bias)
        if unit.bn is not None:
            fill.bn(bn_name, unit.bn)
    if signs is not None and np.any(signs < 0):
        first = _stem_names(len(skeleton.stem))[0][0] + ".weight"
        sign = torch.from_numpy(signs.astype(np.float32)).view(1, -1, 1, 1)
        fill.state[first] = fill.state[first] * sign
        report.mapped[first] += " * sign(input BN gamma) per input channel"
    block_names: list[str] = []
    for s, stage in enumerate(split, 1):
        for b, block in enumerate(stage):
            prefix = f"layer{s}.{b}"
            block_names.append(prefix)
            for i, unit in enumerate(block.body):
                # convK and its bnK: after the conv in v1, before it (the pre-activation) in v2.
                fill.conv(f"{prefix}.conv{i + 1}", unit.conv, f"conv{i + 1}" in conv_bias)
                if unit.bn is not None:
                    fill.bn(f"{prefix}.bn{i + 1}", unit.bn)
            short = block.shortcut
            if short.conv is not None:
                # The reference's slots: conv (+ BN) as downsample.0/.1; after a pool slot .1/.2.
                offset = 1 if facts.shortcut == "avgpool_conv" else 0
                fill.conv(f"{prefix}.downsample.{offset}", short.conv, "downsample" in conv_bias)
                if short.bn is not None:
                    fill.bn(f"{prefix}.downsample.{offset + 1}", short.bn)
    if skeleton.final_bn is not None:
        fill.bn("final_bn", skeleton.final_bn)
    fill.tensor("fc.weight", fc.weight, fc.layer)
    if fc.bias is not None:
        fill.tensor("fc.bias", fc.bias, fc.layer)
    else:
        fill.put("fc.bias", np.zeros(fc.weight.array.shape[0], np.float32), f"zeros ({fc.layer.name} has no bias)", fc.layer)
        report.notes.append(f"{fc.layer.name}: no bias; fc.bias set to zeros")

    # -- the spec: every reading of the same network, then the registered one --------------------
    candidates = []
    for input_bn, projection, stride_in in product(input_readings, facts.projection, facts.stride_in):
        eps = dict(fill.eps)
        if input_bn == "none":
            eps.pop("data_bn", None)
        bn_eps, overrides = majority_eps(_with_input_eps(eps, skeleton, input_bn))
        try:
            candidates.append(
                ResNetSpec(
                    block=facts.block,
                    layers=facts.layers,
                    residual=facts.residual,
                    stride_in=stride_in,
                    stem=stem_kind,
                    stem_width=stem_width,
                    stem_widths=_stem_widths(skeleton, stem_kind),
                    stem_norm=stem_norm,
                    stem_pool=stem_pool,
                    shortcut=facts.shortcut,
                    v2_shortcut_input=v2_shortcut_input,
                    projection=projection,
                    widths=facts.widths,
                    base_width=facts.base_width,
                    input_bn=input_bn,
                    conv_bias=conv_bias,
                    bn_eps=bn_eps,
                    bn_eps_overrides=overrides,
                    head_pool=head_pool,
                    head_pool_size=head_size,
                    num_classes=int(fc.weight.array.shape[0]),
                    in_chans=skeleton.in_channels,
                )
            )
        except SpecError as exc:
            raise ConversionError(f"{skeleton.where}: the recognised network is no valid ResNet: {exc}") from exc
    spec, name = pick_registered(candidates, arch)
    if skeleton.input_bn is not None and input_kind_fixed is None:
        _fill_input_bn(fill, skeleton.input_bn, spec.input_bn)
    report.arch = name
    return Built(spec, fill.state, report, block_names, name)


def _with_input_eps(eps: dict[str, float], skeleton: Skeleton, input_bn: str) -> dict[str, float]:
    """The eps of every BN of a reading, the input BN's included (it is filled after the choice)."""
    if skeleton.input_bn is not None and input_bn != "none" and "data_bn" not in eps:
        eps = {"data_bn": skeleton.input_bn.eps, **eps}
    return eps


__all__ = ["Built", "build", "majority_eps", "pick_registered", "stages"]
