"""The referee of Gluon ``save_parameters`` files, which carry weights but no graph.

A Gluon model-zoo ResNet's graph is its Python code (``gluon.model_zoo.vision.resnet``), so the
referee writes that code out once more, functionally, in torch float64, driven by the parameter
names exactly as Gluon's ``HybridSequential`` numbers them: ``features.0`` ... ``features.N``,
blocks ``features.S.B.body.K`` (V1) or ``features.S.B.bn1`` / ``conv1`` ... (V2), ``output``.  It
follows Gluon's definitions, not the converter's spec or the reference model:

- ResNetV1: [conv 7x7/2 (3x3/1 for ``thumbnail``), BN, ReLU, max pool 3/2/1], stages, global avg
  pool, Dense.  BasicBlockV1 body: conv3x3(stride), BN, ReLU, conv3x3, BN; BottleneckV1 body:
  conv1x1(stride, with bias), BN, ReLU, conv3x3, BN, ReLU, conv1x1(with bias), BN; downsample
  conv1x1(stride) + BN; out = ReLU(body + shortcut).
- GluonCV's CIFARResNetV1 (``gluoncv/model_zoo/cifarresnet.py``): conv 3x3/1, BN and no ReLU, stages
  from ``features.2``, the V1 basic block.  CIFARResNetV2: the V2 layout with the thumbnail conv, but
  CIFARBasicBlockV2 projects the raw block input (``residual = x`` before ``bn1``).
- ResNetV2: BatchNorm(scale=False, center=False) on the input (fix_gamma: gamma = 1; the stored
  beta is used), then the V1 stem (or the thumbnail conv), stages, BN, ReLU, global avg pool,
  Dense.  BasicBlockV2: BN, ReLU, [downsample conv1x1(stride) of that], conv3x3(stride), BN, ReLU,
  conv3x3; BottleneckV2: BN, ReLU, conv1x1, BN, ReLU, conv3x3(stride), BN, ReLU, conv1x1; out =
  body + shortcut.
- The first stage has stride 1, the others 2; every BatchNorm has Gluon's eps 1e-5; a conv's
  padding is kernel // 2.

A file whose names do not follow this layout has no referee here: the caller says so, and the user
gives logits computed with MXNet (``--logits``) or skips the check.
"""

from __future__ import annotations

import re

import numpy as np
import torch
import torch.nn.functional as F

from resnet_port.errors import ConversionError

GLUON_BN_EPS = 1e-5


class GluonLayoutError(ConversionError):
    """The names are not a Gluon model-zoo ResNet V1/V2 layout."""


class _Weights:
    def __init__(self, params: dict[str, np.ndarray], where: str) -> None:
        self.params = {k: torch.from_numpy(np.asarray(v, dtype=np.float64)) for k, v in params.items()}
        self.used: set[str] = set()
        self.where = where

    def has(self, name: str) -> bool:
        return name in self.params

    def get(self, name: str) -> torch.Tensor:
        if name not in self.params:
            raise GluonLayoutError(f"{self.where}: has no {name!r}, which the Gluon ResNet graph needs here")
        self.used.add(name)
        return self.params[name]

    def conv(self, x: torch.Tensor, prefix: str, stride: int) -> torch.Tensor:
        weight = self.get(f"{prefix}.weight")
        bias = self.get(f"{prefix}.bias") if self.has(f"{prefix}.bias") else None
        return F.conv2d(x, weight, bias, stride=stride, padding=weight.shape[-1] // 2)

    def bn(self, x: torch.Tensor, prefix: str, fix_gamma: bool = False) -> torch.Tensor:
        gamma, beta = self.get(f"{prefix}.gamma"), self.get(f"{prefix}.beta")
        mean, var = self.get(f"{prefix}.running_mean"), self.get(f"{prefix}.running_var")
        if fix_gamma:
            gamma = torch.ones_like(gamma)
        shape = (1, -1, 1, 1)
        return (x - mean.reshape(shape)) * (gamma / torch.sqrt(var + GLUON_BN_EPS)).reshape(shape) + beta.reshape(shape)


def _relu(x: torch.Tensor) -> torch.Tensor:
    return torch.clamp(x, min=0.0)


def _max_pool(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(F.pad(x, (1, 1, 1, 1), value=-float("inf")), 3, 2)


def _stages(names: list[str], first: int) -> list[tuple[int, list[int]]]:
    """(features index, block numbers) of each stage, from ``first`` on, consecutive."""
    found: dict[int, set[int]] = {}
    for name in names:
        match = re.match(r"^features\.(\d+)\.(\d+)\.", name)
        if match:
            found.setdefault(int(match.group(1)), set()).add(int(match.group(2)))
    stages, index = [], first
    while index in found:
        blocks = sorted(found.pop(index))
        if blocks != list(range(len(blocks))):
            raise GluonLayoutError(f"stage features.{index} has blocks {blocks}; expected 0..{len(blocks) - 1}")
        stages.append((index, blocks))
        index += 1
    if not stages or found:
        raise GluonLayoutError(f"the stages are not consecutive features.{first}, features.{first + 1}, ...")
    return stages


def gluon_layout(names: list[str]) -> str:
    """'v1' or 'v2', from the block naming; raise if neither."""
    if any(re.match(r"^features\.\d+\.\d+\.body\.", n) for n in names):
        return "v1"
    if any(re.match(r"^features\.\d+\.\d+\.bn1\.", n) for n in names):
        return "v2"
    raise GluonLayoutError("the names have neither features.S.B.body.* (V1) nor features.S.B.bn1.* (V2) blocks")


def run_gluon(
    params: dict[str, np.ndarray], x: np.ndarray, where: str = "the parameters", v2_raw_projection: bool = False
) -> np.ndarray:
    """Logits of a Gluon model-zoo ResNet V1/V2 or GluonCV CIFAR ResNet (structural ``save_parameters``
    names) on ``x``, float64.  ``v2_raw_projection``: V2 projections read the raw block input
    (GluonCV's CIFARBasicBlockV2) instead of the pre-activated one (the model zoo's BasicBlockV2)."""
    names = list(params)
    try:
        version = gluon_layout(names)
    except GluonLayoutError as exc:
        raise GluonLayoutError(f"{where}: {exc}") from None
    w = _Weights(params, where)
    h = torch.from_numpy(np.asarray(x, dtype=np.float64))
    with torch.no_grad():
        if version == "v2":
            h = w.bn(h, "features.0", fix_gamma=True)
        h, first = _stem(w, h, 0 if version == "v1" else 1)
        try:
            stages = _stages(names, first)
        except GluonLayoutError as exc:
            raise GluonLayoutError(f"{where}: {exc}") from None
        for number, (index, blocks) in enumerate(stages):
            for block in blocks:
                stride = 2 if number > 0 and block == 0 else 1
                prefix = f"features.{index}.{block}"
                h = _block_v1(w, h, prefix, stride) if version == "v1" else _block_v2(w, h, prefix, stride, v2_raw_projection)
        if version == "v2":
            h = _relu(w.bn(h, f"features.{stages[-1][0] + 1}"))
        h = h.mean(dim=(2, 3))
        logits = F.linear(h, w.get("output.weight"), w.get("output.bias") if w.has("output.bias") else None)
    unused = sorted(set(names) - w.used - {"features.0.gamma"} if version == "v2" else set(names) - w.used)
    if unused:
        raise GluonLayoutError(f"{where}: {', '.join(unused[:4])} have no place in the Gluon ResNet {version.upper()} graph")
    return logits.numpy()


def _stem(w: _Weights, x: torch.Tensor, k: int) -> tuple[torch.Tensor, int]:
    """The stem from its conv at ``features.k``, and the index of the first stage after it: conv 7x7/2,
    BN, ReLU, max pool (the ImageNet nets); the thumbnail nets' bare conv 3x3/1; GluonCV's
    CIFARResNetV1 conv 3x3/1 with a BN and no ReLU (a BN at ``features.k+1``, where the others have a stage)."""
    thumbnail = w.get(f"features.{k}.weight").shape[-1] == 3
    h = w.conv(x, f"features.{k}", 1 if thumbnail else 2)
    if not thumbnail:
        return _max_pool(_relu(w.bn(h, f"features.{k + 1}"))), k + 4
    if w.has(f"features.{k + 1}.gamma"):
        return w.bn(h, f"features.{k + 1}"), k + 2
    return h, k + 1


def _block_v1(w: _Weights, x: torch.Tensor, prefix: str, stride: int) -> torch.Tensor:
    bottleneck = w.has(f"{prefix}.body.6.weight")
    h = _relu(w.bn(w.conv(x, f"{prefix}.body.0", stride), f"{prefix}.body.1"))
    h = w.bn(w.conv(h, f"{prefix}.body.3", 1), f"{prefix}.body.4")
    if bottleneck:
        h = w.bn(w.conv(_relu(h), f"{prefix}.body.6", 1), f"{prefix}.body.7")
    shortcut = x
    if w.has(f"{prefix}.downsample.0.weight"):
        shortcut = w.bn(w.conv(x, f"{prefix}.downsample.0", stride), f"{prefix}.downsample.1")
    return _relu(h + shortcut)


def _block_v2(w: _Weights, x: torch.Tensor, prefix: str, stride: int, raw_projection: bool = False) -> torch.Tensor:
    bottleneck = w.has(f"{prefix}.conv3.weight")
    pre = _relu(w.bn(x, f"{prefix}.bn1"))
    projected = x if raw_projection else pre
    shortcut = w.conv(projected, f"{prefix}.downsample", stride) if w.has(f"{prefix}.downsample.weight") else x
    if bottleneck:
        h = w.conv(pre, f"{prefix}.conv1", 1)
        h = w.conv(_relu(w.bn(h, f"{prefix}.bn2")), f"{prefix}.conv2", stride)
        h = w.conv(_relu(w.bn(h, f"{prefix}.bn3")), f"{prefix}.conv3", 1)
    else:
        h = w.conv(pre, f"{prefix}.conv1", stride)
        h = w.conv(_relu(w.bn(h, f"{prefix}.bn2")), f"{prefix}.conv2", 1)
    return h + shortcut


# -- GluonCV's ResNetV1b family (gluoncv/model_zoo/resnetv1b.py) -----------------------------------------
# conv1 (7x7/2, or the deep stem [3x3/2, BN, ReLU, 3x3, BN, ReLU, 3x3]), bn1, ReLU, max pool 3/2/1,
# layer1..layerN, global average pool, fc.  BasicBlockV1b: conv1 3x3(stride), bn1, ReLU, conv2 3x3, bn2;
# BottleneckV1b: conv1 1x1, bn1, ReLU, conv2 3x3(stride), bn2, ReLU, conv3 1x1, bn3; out = ReLU(body +
# shortcut).  downsample: [conv 1x1(stride), BN], or with avg_down [AvgPool2D(stride, ceil_mode=True,
# count_include_pad=False), conv 1x1, BN].


def _avg_pool_ceil_exclusive(x: torch.Tensor, k: int) -> torch.Tensor:
    """k x k / k average pool, sizes rounded up, each window divided by the cells it covers in the map
    (MXNet's pooling_convention='full' with count_include_pad=False), computed as window sums over a
    zero-extended map divided by window sums of a ones mask."""
    if k == 1:
        return x
    h, w = x.shape[-2:]
    out_h, out_w = -(-h // k), -(-w // k)
    pad = (0, out_w * k - w, 0, out_h * k - h)
    sums = F.pad(x, pad).unfold(2, k, k).unfold(3, k, k).sum(dim=(-1, -2))
    ones = F.pad(torch.ones(1, 1, h, w, dtype=x.dtype), pad).unfold(2, k, k).unfold(3, k, k).sum(dim=(-1, -2))
    return sums / ones


def _layer_blocks(names: list[str]) -> list[list[int]]:
    found: dict[int, set[int]] = {}
    for name in names:
        match = re.match(r"^layer(\d+)\.(\d+)\.", name)
        if match:
            found.setdefault(int(match.group(1)), set()).add(int(match.group(2)))
    stages = sorted(found)
    if not stages or stages != list(range(1, len(stages) + 1)):
        raise GluonLayoutError(f"the stages are {stages}; expected layer1, layer2, ...")
    out = []
    for stage in stages:
        blocks = sorted(found[stage])
        if blocks != list(range(len(blocks))):
            raise GluonLayoutError(f"layer{stage} has blocks {blocks}; expected 0..{len(blocks) - 1}")
        out.append(blocks)
    return out


def run_gluoncv_v1b(params: dict[str, np.ndarray], x: np.ndarray, where: str = "the parameters") -> np.ndarray:
    """Logits of a GluonCV ResNetV1b-family net (save_parameters names conv1.0.weight, layer1.0.bn1.gamma, ...)."""
    names = list(params)
    w = _Weights(params, where)
    h = torch.from_numpy(np.asarray(x, dtype=np.float64))
    try:
        blocks = _layer_blocks(names)
    except GluonLayoutError as exc:
        raise GluonLayoutError(f"{where}: {exc}") from None
    with torch.no_grad():
        if w.has("conv1.0.weight"):
            h = _relu(w.bn(w.conv(h, "conv1.0", 2), "conv1.1"))
            h = _relu(w.bn(w.conv(h, "conv1.3", 1), "conv1.4"))
            h = w.conv(h, "conv1.6", 1)
        else:
            h = w.conv(h, "conv1", 2)
        h = _max_pool(_relu(w.bn(h, "bn1")))
        for s, indices in enumerate(blocks, 1):
            for b in indices:
                stride = 2 if s > 1 and b == 0 else 1
                prefix = f"layer{s}.{b}"
                bottleneck = w.has(f"{prefix}.conv3.weight")
                first = w.conv(x=h, prefix=f"{prefix}.conv1", stride=1 if bottleneck else stride)
                out = _relu(w.bn(first, f"{prefix}.bn1"))
                out = w.bn(w.conv(out, f"{prefix}.conv2", stride if bottleneck else 1), f"{prefix}.bn2")
                if bottleneck:
                    out = w.bn(w.conv(_relu(out), f"{prefix}.conv3", 1), f"{prefix}.bn3")
                shortcut = h
                if w.has(f"{prefix}.downsample.2.gamma"):  # avg down: pool, conv 1x1, BN
                    pooled = _avg_pool_ceil_exclusive(h, stride)
                    shortcut = w.bn(w.conv(pooled, f"{prefix}.downsample.1", 1), f"{prefix}.downsample.2")
                elif w.has(f"{prefix}.downsample.0.weight"):
                    shortcut = w.bn(w.conv(h, f"{prefix}.downsample.0", stride), f"{prefix}.downsample.1")
                h = _relu(out + shortcut)
        h = h.mean(dim=(2, 3))
        logits = F.linear(h, w.get("fc.weight"), w.get("fc.bias") if w.has("fc.bias") else None)
    unused = sorted(set(names) - w.used)
    if unused:
        raise GluonLayoutError(f"{where}: {', '.join(unused[:4])} have no place in the GluonCV ResNetV1b graph")
    return logits.numpy()


__all__ = ["GLUON_BN_EPS", "GluonLayoutError", "gluon_layout", "run_gluon", "run_gluoncv_v1b"]
