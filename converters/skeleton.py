"""The one typed skeleton every source is recognised into before it becomes a checkpoint.

A source module (Caffe, ONNX, MXNet symbol, Gluon names, a plain state-dict layout, ...) does only
what is its own: it reads its file and recognises the network as a `Skeleton` -- the input BN, the
stem convs with their BNs, the stem pool, the residual blocks with their body roles and shortcut,
v2's final BN, the head pool and the classifier -- with every tensor it holds carrying the source
reference it came from (`SourceTensor.ref`).  `converters.build.build` then turns any skeleton into
``(spec, state_dict, report)`` with one set of rules, so the rules exist once.

The skeleton states facts, not decisions: kernel, stride and padding of every conv (so where a
bottleneck strides is visible), each BN's eps and how the source stores it (a gamma the source
ignores, no gamma/beta at all), the shortcut's kind and stride.  What those facts mean for the spec
(stage split, widths, eps majority, bias roles, projection policy, the registered name) is decided
in `build` only.

Names are paired as fields, never packed into strings.  ``label`` is how an error names the source
layer (``"layer 'res2a_branch2a' (Convolution)"``, ``"node #3 Conv 'conv0'"``); ``layer`` is the
source layer's name as the report lists it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

RESIDUALS = ("v1", "v2")
SHORTCUT_KINDS = ("identity", "conv", "avgpool_conv")
STEM_POOL_KINDS = ("max", "none")
HEAD_POOL_KINDS = ("global", "fixed")


@dataclass(frozen=True)
class SourceTensor:
    """One array as the source holds it (already in PyTorch layout), and where it came from.

    ``ref`` is what the report records for it: a tensor name (``"arg:conv0_weight"``), a blob
    (``"res2a_branch2a.blobs[0]"``) or a formula of those (``"bn.blobs[0] / bn.blobs[2]"``).
    """

    array: np.ndarray
    ref: str


@dataclass(frozen=True)
class SourceLayer:
    """A source layer as the report lists it: its name and its type in the source's terms."""

    name: str
    type: str


@dataclass
class Conv:
    """A 2-D convolution.  ``weight`` is (out, in / groups, kh, kw)."""

    label: str
    layer: SourceLayer
    weight: SourceTensor
    bias: SourceTensor | None
    stride: tuple[int, int]
    pad: tuple[int, int, int, int]  # top, left, bottom, right
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1

    @property
    def kernel(self) -> tuple[int, int]:
        return int(self.weight.array.shape[2]), int(self.weight.array.shape[3])

    @property
    def out_channels(self) -> int:
        return int(self.weight.array.shape[0])

    @property
    def in_channels(self) -> int:
        return int(self.weight.array.shape[1]) * self.groups


@dataclass
class BatchNorm:
    """A per-channel BatchNorm in inference form: y = gamma * (x - mean) / sqrt(var + eps) + beta.

    How the source stores it, in one place:

    - ``eps`` as the source runs it (Caffe: the float32 value, MXNet: the node's attribute or its
      default 1e-3, ONNX: the attribute).
    - ``gamma`` / ``beta`` None: the source has none (an affine-free BN, or a Caffe BatchNorm with
      no Scale layer after it); ``absent`` then says why, for the report.
    - ``fix_gamma``: a gamma is stored but the source runs with gamma = 1 (MXNet ``fix_gamma=True``,
      Gluon ``scale=False``).
    - ``statistics``: how the running statistics are stored before the reader turned them into
      mean / var (``"running"``; ``"caffe_scaled_sums"``: blobs divided by the scale-factor blob).
    - ``layers``: the source layers it was read from (Caffe: the BatchNorm and its Scale).
    """

    label: str
    layers: list[SourceLayer]
    eps: float
    running_mean: SourceTensor
    running_var: SourceTensor
    gamma: SourceTensor | None = None
    beta: SourceTensor | None = None
    fix_gamma: bool = False
    statistics: str = "running"
    absent: str = ""

    @property
    def channels(self) -> int:
        return int(self.running_mean.array.shape[0])

    @classmethod
    def identity(cls, label: str, channels: int, eps: float, why: str) -> "BatchNorm":
        """A BN the source does not have (an exporter folded it into the conv before it), as the
        identity: gamma 1, beta 0, mean 0, var 1 - eps, so sqrt(var + eps) = 1 and the network is
        unchanged.  ``why`` goes into the report; a later BN recalibration starts from no statistics."""
        return cls(
            label=label,
            layers=[],
            eps=eps,
            running_mean=SourceTensor(np.zeros(channels, np.float32), f"zeros ({why})"),
            running_var=SourceTensor(np.full(channels, 1.0 - eps, np.float32), f"1 - eps ({why})"),
            absent=why,
        )


@dataclass
class ConvBN:
    """A conv and its BN.  In v1 blocks and the stem the BN follows the conv; in v2 blocks it is the
    BN-ReLU *before* the conv (the reference names both ``bnK`` beside ``convK``).  ``bn`` is None
    only for the last conv of a v2 body, which has no BN of its own."""

    conv: Conv
    bn: BatchNorm | None


@dataclass
class Shortcut:
    """``"identity"`` (conv None), ``"conv"`` (a strided 1x1 conv, + BN in v1) or ``"avgpool_conv"``
    (an average pool of ``stride``, then a 1x1 conv + BN).  In v2 the conv reads the block's
    pre-activated input and has no BN."""

    kind: str = "identity"
    conv: Conv | None = None
    bn: BatchNorm | None = None
    stride: int = 1
    # v2 only: the conv reads the pre-activated input ("preactivated") or, in GluonCV's CIFAR V2
    # blocks, the raw block input ("block_input").
    reads: str = "preactivated"


@dataclass
class Block:
    """One residual block: ``body`` holds the roles conv1..conv2 (basic) or conv1..conv3
    (bottleneck) in order, each with its BN; ``label`` names the block in errors."""

    label: str
    residual: str  # "v1" | "v2"
    body: list[ConvBN]
    shortcut: Shortcut = field(default_factory=Shortcut)

    @property
    def kind(self) -> str:
        return "bottleneck" if len(self.body) == 3 else "basic"

    @property
    def stride(self) -> int:
        return max(unit.conv.stride[0] for unit in self.body)

    @property
    def in_channels(self) -> int:
        return self.body[0].conv.in_channels

    @property
    def out_channels(self) -> int:
        return self.body[-1].conv.out_channels


@dataclass(frozen=True)
class Pool:
    """A pooling layer: ``kind`` "max" or "avg"; ``global_pool`` ignores the kernel."""

    label: str
    kind: str
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)
    ceil: bool = False
    global_pool: bool = False


@dataclass
class Linear:
    """The classifier: ``weight`` (classes, features)."""

    label: str
    layer: SourceLayer
    weight: SourceTensor
    bias: SourceTensor | None


@dataclass
class Skeleton:
    """A ResNet as recognised in one source, before any spec decision.

    ``where`` names the source in errors (a path, or ``"x.params with x-symbol.json"``).
    ``stem`` holds one conv (7x7/2 or 3x3/1) or three (the deep stem: 3x3/2, 3x3, 3x3), each with
    the BN after it; a one-conv stem may have no BN (``bn`` None: Gluon's thumbnail and GluonCV's
    CIFAR V2 nets).  ``stem_relu`` False: no ReLU after the stem's BN (GluonCV's CIFAR V1).
    ``stem_pool`` None: no pool after the stem.  ``final_bn``: v2's BN-ReLU before the head pool.
    """

    where: str
    stem: list[ConvBN]
    blocks: list[Block]
    head_pool: Pool
    classifier: Linear
    input_bn: BatchNorm | None = None
    stem_pool: Pool | None = None
    final_bn: BatchNorm | None = None
    stem_relu: bool = True

    @property
    def in_channels(self) -> int:
        return self.stem[0].conv.in_channels


__all__ = [
    "BatchNorm",
    "Block",
    "Conv",
    "ConvBN",
    "Linear",
    "Pool",
    "Shortcut",
    "Skeleton",
    "SourceLayer",
    "SourceTensor",
]
