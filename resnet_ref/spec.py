"""The architecture spec: one frozen dataclass that describes every ResNet this toolkit ports.

Sources disagree on small things that change the numbers (where the stride sits, ceil-mode pooling,
conv biases, BatchNorm eps, pre- vs post-activation); each of those is a field here, so that a
converter states what its source does instead of approximating it.  Specs round-trip through plain
dicts (and so JSON), which is how they travel inside checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Mapping

from resnet_port.errors import SpecError

BLOCKS = ("basic", "bottleneck")
RESIDUALS = ("v1", "v2")
STRIDE_IN = ("1x1", "3x3")
STEMS = ("7x7", "deep", "3x3")
STEM_NORMS = ("bn_relu", "bn", "none")
STEM_POOLS = ("max", "max_ceil", "none")
SHORTCUTS = ("conv", "avgpool_conv")
V2_SHORTCUT_INPUTS = ("preactivated", "block_input")
PROJECTIONS = ("when_needed", "first_of_stage")
INPUT_BNS = ("none", "affine_free", "fixed_gamma")
HEAD_POOLS = ("global", "fixed")
CONV_BIAS_ROLES = ("stem", "conv1", "conv2", "conv3", "downsample")


@dataclass(frozen=True)
class ResNetSpec:
    """Everything that decides a ResNet's parameters and its forward pass.

    Fields with a fixed set of values:

    - ``block``: ``"basic"`` (two 3x3 convs) or ``"bottleneck"`` (1x1, 3x3, 1x1; expansion 4).
    - ``residual``: ``"v1"`` post-activation (He et al. 2015) or ``"v2"`` pre-activation (He et al.
      2016: BN-ReLU before each conv, the projection shortcut taken from the pre-activated input,
      a final BN-ReLU before pooling).
    - ``stride_in``: where a bottleneck's stride sits.  ``"1x1"``: the first 1x1 conv, as the
      paper, Kaiming He's Caffe release and Gluon V1 do.  ``"3x3"``: the 3x3 conv, as torchvision
      and mmcls ("v1.5", "pytorch" style) do; it costs more FLOPs and is about 0.5% more accurate.
      Basic blocks always stride in their first 3x3.
    - ``stem``: ``"7x7"`` (7x7/2 conv), ``"deep"`` (three 3x3 convs, the first strided: mmcls
      V1c/V1d, timm ``*d``), ``"3x3"`` (one 3x3/1 conv: the CIFAR ResNets).
    - ``stem_norm``: what follows a one-conv stem: ``"bn_relu"`` (every ImageNet ResNet), ``"bn"``
      (BN and no ReLU: GluonCV's CIFARResNetV1, whose first block then adds the un-rectified map
      to its body) or ``"none"`` (the bare conv: GluonCV's CIFARResNetV2 and Gluon's
      ``thumbnail=True`` nets, timm's ResNetV2; in v2 the first block's BN-ReLU follows).  The deep
      stem ends with BN-ReLU, except in v2 nets, whose deep stem may end at its bare third conv
      (timm ``resnetv2_*d``: ``"none"``).
    - ``stem_pool``: ``"max"`` 3x3/2 padding 1 floor rounding (torchvision, Gluon, MXNet);
      ``"max_ceil"`` 3x3/2 padding 0 ceil rounding (Caffe: 112 -> 56, where floor gives 55);
      ``"none"`` (CIFAR).
    - ``shortcut``: ``"conv"`` 1x1 strided conv (+ BN in v1); ``"avgpool_conv"`` average pool then
      1x1 conv (+ BN in v1) (V1d "avg down"; timm ``resnetv2_*d`` in v2).
    - ``v2_shortcut_input``: what a v2 projection reads: ``"preactivated"``, the block's input after
      its BN-ReLU (He et al. 2016, Gluon's model zoo, MXNet's symbolic nets), or ``"block_input"``,
      the raw block input (GluonCV's CIFARBasicBlockV2: ``residual = x`` before ``bn1``).  v1 nets
      keep the default.
    - ``projection``: ``"when_needed"`` a projection only where the shape changes (torchvision,
      Gluon); ``"first_of_stage"`` a projection on the first block of every stage, even where an
      identity would fit (MXNet's symbolic ResNet, visible on basic-block stage 1).
    - ``input_bn``: a BatchNorm on the raw input, before the stem: ``"none"``, ``"affine_free"``
      (Gluon ResNetV2: no gamma, no beta) or ``"fixed_gamma"`` (MXNet symbolic ``bn_data`` with
      ``fix_gamma=True``: beta is learnt, gamma is 1 whatever is stored; the gamma parameter exists
      for name compatibility, is frozen, and converters write ones into it).
    - ``conv_bias``: the conv roles that carry a bias, any of ``"stem"``, ``"conv1"``, ``"conv2"``,
      ``"conv3"``, ``"downsample"`` (Caffe ResNet-50's conv1 has one; Gluon V1 bottlenecks have
      them on both 1x1 body convs).
    - ``head_pool``: ``"global"`` average pool, or ``"fixed"`` (Caffe's pool5: an average pool of
      ``head_pool_size`` with stride 1; on inputs other than 224 it leaves a map larger than 1x1,
      and the classifier is applied at each position and averaged, which is the fully
      convolutional reading of a Caffe net; where the map is smaller than the kernel the kernel is
      clipped to the map, a size Caffe itself would refuse).

    ``stem_widths``: the output widths of the deep stem's first two convs when they are not
    ``stem_width // 2`` each: timm's tiered stem (``resnet10t/14t/26t/50t``) is 24-32-64, i.e.
    ``stem_width=64, stem_widths=(24, 32)``.  Empty (the default) means ``(w/2, w/2)`` (mmcls V1c/V1d
    and timm ``*c``/``*d``: 32-32-64; ``*s``: 64-64-128); a value equal to that default is stored as
    empty so that specs compare equal however they were written.  Only the deep stem has it.

    ``bn_eps`` is the eps of every BatchNorm; ``bn_eps_overrides`` names single BatchNorm modules
    (state-dict prefixes such as ``"layer1.0.bn2"`` or ``"data_bn"``) whose eps differs.
    """

    block: str = "bottleneck"
    layers: tuple[int, ...] = (3, 4, 6, 3)
    residual: str = "v1"
    stride_in: str = "3x3"
    stem: str = "7x7"
    stem_width: int = 64
    stem_widths: tuple[int, ...] = ()
    stem_norm: str = "bn_relu"
    stem_pool: str = "max"
    shortcut: str = "conv"
    v2_shortcut_input: str = "preactivated"
    projection: str = "when_needed"
    widths: tuple[int, ...] = (64, 128, 256, 512)
    base_width: int = 64
    input_bn: str = "none"
    conv_bias: tuple[str, ...] = ()
    bn_eps: float = 1e-5
    bn_eps_overrides: tuple[tuple[str, float], ...] = ()
    head_pool: str = "global"
    head_pool_size: int = 7
    num_classes: int = 1000
    in_chans: int = 3

    def __post_init__(self) -> None:
        # Normalise sequences so that specs from JSON (lists) compare equal to specs from code.
        object.__setattr__(self, "layers", tuple(int(n) for n in self.layers))
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        stem_widths = tuple(int(w) for w in self.stem_widths)
        if self.stem == "deep" and stem_widths == (int(self.stem_width) // 2,) * 2:
            stem_widths = ()  # the default deep stem, however it was written
        object.__setattr__(self, "stem_widths", stem_widths)
        object.__setattr__(self, "conv_bias", tuple(sorted(set(self.conv_bias))))
        object.__setattr__(
            self,
            "bn_eps_overrides",
            tuple(sorted((str(name), float(eps)) for name, eps in self.bn_eps_overrides)),
        )
        self.validate()

    # -- checks -------------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise `SpecError` naming the first field whose value is outside its allowed set."""
        choices = {
            "block": BLOCKS,
            "residual": RESIDUALS,
            "stride_in": STRIDE_IN,
            "stem": STEMS,
            "stem_norm": STEM_NORMS,
            "stem_pool": STEM_POOLS,
            "shortcut": SHORTCUTS,
            "v2_shortcut_input": V2_SHORTCUT_INPUTS,
            "projection": PROJECTIONS,
            "input_bn": INPUT_BNS,
            "head_pool": HEAD_POOLS,
        }
        for name, allowed in choices.items():
            value = getattr(self, name)
            if value not in allowed:
                raise SpecError(f"ResNetSpec.{name}={value!r} is not one of {', '.join(allowed)}")
        for role in self.conv_bias:
            if role not in CONV_BIAS_ROLES:
                raise SpecError(
                    f"ResNetSpec.conv_bias has unknown role {role!r}; roles are {', '.join(CONV_BIAS_ROLES)}"
                )
        if len(self.layers) != len(self.widths) or not self.layers:
            raise SpecError(
                f"ResNetSpec.layers {self.layers} and widths {self.widths} must be non-empty and of equal length"
            )
        if any(n < 1 for n in self.layers) or any(w < 1 for w in self.widths):
            raise SpecError(f"ResNetSpec.layers and widths must be positive, got {self.layers}, {self.widths}")
        for name in ("stem_width", "base_width", "head_pool_size", "num_classes", "in_chans"):
            if int(getattr(self, name)) < 1:
                raise SpecError(f"ResNetSpec.{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.stem_widths and (self.stem != "deep" or len(self.stem_widths) != 2 or min(self.stem_widths) < 1):
            raise SpecError(
                f"ResNetSpec.stem_widths={self.stem_widths} needs stem='deep' and two positive widths "
                "(the outputs of the deep stem's first two convs)"
            )
        if self.stem == "deep" and self.stem_width % 2 and not self.stem_widths:
            raise SpecError(f"ResNetSpec.stem_width must be even for the deep stem, got {self.stem_width}")
        if not self.bn_eps > 0 or any(not eps > 0 for _, eps in self.bn_eps_overrides):
            raise SpecError(f"ResNetSpec.bn_eps and bn_eps_overrides must be positive, got {self.bn_eps} and {self.bn_eps_overrides}")
        if self.stem == "deep" and self.stem_norm != "bn_relu" and not (self.stem_norm == "none" and self.residual == "v2"):
            raise SpecError(
                f"ResNetSpec.stem_norm={self.stem_norm!r} needs a one-conv stem; the deep stem ends with BN-ReLU "
                "(or, in a pre-activation net, with its bare third conv: stem_norm='none')"
            )
        if self.v2_shortcut_input != "preactivated" and self.residual != "v2":
            raise SpecError(
                f"ResNetSpec.v2_shortcut_input={self.v2_shortcut_input!r} is only defined for residual='v2'"
            )

    # -- derived facts ------------------------------------------------------------------------
    @property
    def expansion(self) -> int:
        return 4 if self.block == "bottleneck" else 1

    @property
    def num_features(self) -> int:
        """Channels that reach the classifier."""
        return self.widths[-1] * self.expansion

    @property
    def depth(self) -> int:
        """The conventional depth: weighted layers on the main path (18, 50, 101, ...)."""
        per_block = 3 if self.block == "bottleneck" else 2
        return per_block * sum(self.layers) + 2

    @property
    def deep_stem_widths(self) -> tuple[int, int, int]:
        """The three deep-stem conv widths (stem_widths or w/2, w/2, then stem_width)."""
        first, second = self.stem_widths or (self.stem_width // 2, self.stem_width // 2)
        return first, second, self.stem_width

    def eps_for(self, module_name: str) -> float:
        return dict(self.bn_eps_overrides).get(module_name, self.bn_eps)

    def replace(self, **changes: Any) -> "ResNetSpec":
        return dataclasses.replace(self, **changes)

    # -- plain-data round trip ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; `from_dict` inverts it exactly."""
        out = dataclasses.asdict(self)
        out["layers"] = list(self.layers)
        out["widths"] = list(self.widths)
        out["stem_widths"] = list(self.stem_widths)
        out["conv_bias"] = list(self.conv_bias)
        out["bn_eps_overrides"] = {name: eps for name, eps in self.bn_eps_overrides}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ResNetSpec":
        if not isinstance(data, Mapping):
            raise SpecError(f"a ResNetSpec must be a mapping, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError(f"unknown ResNetSpec field(s): {', '.join(unknown)}")
        kwargs = dict(data)
        overrides = kwargs.get("bn_eps_overrides", ())
        if isinstance(overrides, Mapping):
            kwargs["bn_eps_overrides"] = tuple(overrides.items())
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise SpecError(f"invalid ResNetSpec: {exc}") from exc

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ResNetSpec":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(f"ResNetSpec JSON is not valid JSON: {exc}") from exc
        return cls.from_dict(data)


BOTTLENECK_LAYERS: dict[int, tuple[int, ...]] = {
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
    200: (3, 24, 36, 3),
}
BASIC_LAYERS: dict[int, tuple[int, ...]] = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


def layers_for_depth(depth: int) -> tuple[str, tuple[int, ...]]:
    """(block, layers) of a standard depth."""
    if depth in BASIC_LAYERS:
        return "basic", BASIC_LAYERS[depth]
    if depth in BOTTLENECK_LAYERS:
        return "bottleneck", BOTTLENECK_LAYERS[depth]
    raise SpecError(f"no standard ResNet of depth {depth}; known depths are 18, 34, 50, 101, 152, 200")


__all__ = ["ResNetSpec", "layers_for_depth"]
