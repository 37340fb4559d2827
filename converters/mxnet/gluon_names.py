"""The structural names of Gluon's ``save_parameters`` files, mapped onto the reference names.

Gluon's model zoo ResNets hold everything in one ``features`` HybridSequential, so a parameter's
name is its path: ``features.4.0.body.0.weight`` is stage 1, block 0, the first conv of the body.
The stages start at ``features.4`` in V1 (conv, BN, ReLU, max pool before them) and at
``features.5`` in V2 (the input BN first); V2 ends with ``features.9``, the final BN.  The CIFAR
and thumbnail nets build shorter stems, so their stages start earlier: the index of the first stage
says which class built the file (`GLUON_STEMS`).  BatchNorm's
``gamma/beta/running_mean/running_var`` become ``weight/bias/running_mean/running_var``.

Each table is read top to bottom; every pattern is anchored, and every name in the file must match
exactly one of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

BN = r"(?P<bn>gamma|beta|running_mean|running_var)"
BN_RENAME = {"gamma": "weight", "beta": "bias", "running_mean": "running_mean", "running_var": "running_var"}
WB = r"(?P<p>weight|bias)"
STAGE_BLOCK = r"features\.(?P<stage>\d+)\.(?P<block>\d+)"

# (anchored pattern, reference name template).  {stage} is the 1-based stage number, {p} the
# conv/dense parameter, {bn} the renamed BatchNorm parameter.
GLUON_V1_BLOCK_NAMES: list[tuple[str, str]] = [
    (rf"^{STAGE_BLOCK}\.body\.0\.{WB}$", "layer{stage}.{block}.conv1.{p}"),  # strided 1x1 (bottleneck) / 3x3 (basic)
    (rf"^{STAGE_BLOCK}\.body\.1\.{BN}$", "layer{stage}.{block}.bn1.{bn}"),
    (rf"^{STAGE_BLOCK}\.body\.3\.{WB}$", "layer{stage}.{block}.conv2.{p}"),
    (rf"^{STAGE_BLOCK}\.body\.4\.{BN}$", "layer{stage}.{block}.bn2.{bn}"),
    (rf"^{STAGE_BLOCK}\.body\.6\.{WB}$", "layer{stage}.{block}.conv3.{p}"),  # bottleneck only
    (rf"^{STAGE_BLOCK}\.body\.7\.{BN}$", "layer{stage}.{block}.bn3.{bn}"),
    (rf"^{STAGE_BLOCK}\.downsample\.0\.{WB}$", "layer{stage}.{block}.downsample.0.{p}"),
    (rf"^{STAGE_BLOCK}\.downsample\.1\.{BN}$", "layer{stage}.{block}.downsample.1.{bn}"),
    (rf"^output\.{WB}$", "fc.{p}"),
]
GLUON_V2_BLOCK_NAMES: list[tuple[str, str]] = [
    (rf"^{STAGE_BLOCK}\.bn1\.{BN}$", "layer{stage}.{block}.bn1.{bn}"),  # pre-activation: BN before conv1
    (rf"^{STAGE_BLOCK}\.conv1\.{WB}$", "layer{stage}.{block}.conv1.{p}"),
    (rf"^{STAGE_BLOCK}\.bn2\.{BN}$", "layer{stage}.{block}.bn2.{bn}"),
    (rf"^{STAGE_BLOCK}\.conv2\.{WB}$", "layer{stage}.{block}.conv2.{p}"),
    (rf"^{STAGE_BLOCK}\.bn3\.{BN}$", "layer{stage}.{block}.bn3.{bn}"),
    (rf"^{STAGE_BLOCK}\.conv3\.{WB}$", "layer{stage}.{block}.conv3.{p}"),
    (rf"^{STAGE_BLOCK}\.downsample\.{WB}$", "layer{stage}.{block}.downsample.0.{p}"),  # a bare conv in V2
    (rf"^features\.{{final}}\.{BN}$", "final_bn.{bn}"),  # right after the last stage (features.9 for 4 stages)
    (rf"^output\.{WB}$", "fc.{p}"),
]


@dataclass(frozen=True)
class GluonStem:
    """What a Gluon ResNet class puts in ``features`` before its first stage; the index of that stage
    tells which class built the file."""

    what: str  # for reports
    names: tuple[tuple[str, str], ...]  # the stem's rows, as the tables above
    stem_norm: str  # ResNetSpec.stem_norm
    pooled: bool  # a 3x3/2 max pool follows


_V1_CONV = (rf"^features\.0\.{WB}$", "conv1.{p}")
_V2_INPUT_BN = (rf"^features\.0\.{BN}$", "data_bn.{bn}")  # BatchNorm(scale=False, center=False) on the input
_V2_CONV = (rf"^features\.1\.{WB}$", "conv1.{p}")
GLUON_STEMS: dict[tuple[str, int], GluonStem] = {
    # model_zoo ResNetV1: conv 7x7/2, BN, ReLU, max pool 3/2/1 (features.0-3)
    ("v1", 4): GluonStem("Gluon model-zoo ResNet V1", (_V1_CONV, (rf"^features\.1\.{BN}$", "bn1.{bn}")), "bn_relu", True),
    # GluonCV CIFARResNetV1: conv 3x3/1, BN and no ReLU (features.0-1)
    ("v1", 2): GluonStem("GluonCV CIFARResNetV1", (_V1_CONV, (rf"^features\.1\.{BN}$", "bn1.{bn}")), "bn", False),
    # model_zoo ResNetV1(thumbnail=True): the bare conv 3x3/1 (features.0)
    ("v1", 1): GluonStem("Gluon model-zoo ResNet V1 (thumbnail)", (_V1_CONV,), "none", False),
    # model_zoo ResNetV2: input BN, conv 7x7/2, BN, ReLU, max pool (features.0-4)
    ("v2", 5): GluonStem("Gluon model-zoo ResNet V2", (_V2_INPUT_BN, _V2_CONV, (rf"^features\.2\.{BN}$", "bn1.{bn}")), "bn_relu", True),
    # GluonCV CIFARResNetV2 and model_zoo ResNetV2(thumbnail=True): input BN, the bare conv 3x3/1 (features.0-1)
    ("v2", 2): GluonStem("GluonCV CIFARResNetV2 / Gluon ResNet V2 (thumbnail)", (_V2_INPUT_BN, _V2_CONV), "none", False),
}
BLOCK_TABLES = {"v1": GLUON_V1_BLOCK_NAMES, "v2": GLUON_V2_BLOCK_NAMES}
GLUON_V1_FIRST_STAGE = 4  # the ImageNet nets'; `first_stage` reads a file's own
GLUON_V2_FIRST_STAGE = 5


def first_stage(names: list[str]) -> int | None:
    """The ``features`` index of the first stage (the lowest one with numbered blocks), or None."""
    stages = stage_indices(names)
    return stages[0] if stages else None


def gluon_stem(version: str, first: int | None) -> GluonStem | None:
    """The stem a Gluon class builds before a first stage at ``features.{first}``, or None."""
    return GLUON_STEMS.get((version, first)) if first is not None else None


def gluon_version(names: list[str]) -> str | None:
    """'v1' or 'v2' from the block layout the names show (V1 blocks have a ``body``), else None."""
    if any(re.match(rf"^{STAGE_BLOCK}\.body\.", n) for n in names):
        return "v1"
    if any(re.match(rf"^{STAGE_BLOCK}\.bn1\.", n) for n in names):
        return "v2"
    return None


def rename(name: str, version: str, final_index: int | None, first: int = 0) -> str | None:
    """The reference name of one Gluon name, or None if it fits no row of the table.

    ``first`` is the ``features`` index of the first stage (4 / 5 for the ImageNet V1 / V2 nets; 0
    takes those), ``final_index`` the one right after the last stage (V2's final BN).
    """
    first = first or (GLUON_V1_FIRST_STAGE if version == "v1" else GLUON_V2_FIRST_STAGE)
    stem = gluon_stem(version, first)
    table = list(stem.names if stem else ()) + BLOCK_TABLES[version]
    for pattern, template in table:
        match = re.match(pattern.replace("{final}", str(final_index)), name)
        if not match:
            continue
        groups = match.groupdict()
        fields: dict[str, object] = {"p": groups.get("p"), "bn": BN_RENAME.get(groups.get("bn") or "")}
        if "stage" in groups:
            stage = int(groups["stage"]) - first + 1
            if stage < 1:
                return None
            fields.update(stage=stage, block=int(groups["block"]))
        return template.format(**fields)
    return None


def stage_indices(names: list[str]) -> list[int]:
    """The ``features`` indices that hold stages (those with numbered blocks under them)."""
    return sorted({int(m.group("stage")) for n in names if (m := re.match(rf"^{STAGE_BLOCK}\.", n))})


def rename_all(names: list[str], version: str) -> tuple[dict[str, str], list[str]]:
    """Map every name; returns (reference name -> Gluon name, names that fit no row)."""
    stages = stage_indices(names)
    final_index = stages[-1] + 1 if stages else None
    first = stages[0] if stages else 0
    mapped: dict[str, str] = {}
    unmatched: list[str] = []
    for name in names:
        target = rename(name, version, final_index, first)
        if target is None:
            unmatched.append(name)
        else:
            mapped[target] = name
    return mapped, unmatched


__all__ = [
    "GLUON_STEMS", "GLUON_V1_BLOCK_NAMES", "GLUON_V2_BLOCK_NAMES", "GluonStem", "first_stage", "gluon_stem", "gluon_version",
    "rename", "rename_all", "stage_indices",
]


# -- the legacy format: Block.save_params (MXNet < 1.3) --------------------------------------------------
# ``save_params`` wrote the parameters' scoped names with the net's prefix stripped: ``conv0_weight``,
# ``stage1_batchnorm4_gamma``, ``dense0_bias``.  Gluon numbers each layer type in the order a name
# scope creates them, so a block's layers follow from the block code; they are translated here into the
# structural names above (and the shapes are checked afterwards like any other file).
LEGACY_NAME = re.compile(
    r"^(?:(?:cifar)?resnetv[12]\d*_)?(?:stage(?P<stage>\d+)_)?(?P<layer>conv|batchnorm|dense)(?P<n>\d+)_"
    r"(?P<param>weight|bias|gamma|beta|running_mean|running_var)$"
)
# Per block, in creation order: (layer type, index within the block's own counter, structural name).
LEGACY_BLOCKS: dict[tuple[str, str], list[tuple[str, int, str]]] = {
    ("v1", "bottleneck"): [("conv", 0, "body.0"), ("batchnorm", 0, "body.1"), ("conv", 1, "body.3"), ("batchnorm", 1, "body.4"),
                           ("conv", 2, "body.6"), ("batchnorm", 2, "body.7")],
    ("v1", "basic"): [("conv", 0, "body.0"), ("batchnorm", 0, "body.1"), ("conv", 1, "body.3"), ("batchnorm", 1, "body.4")],
    ("v2", "bottleneck"): [("batchnorm", 0, "bn1"), ("conv", 0, "conv1"), ("batchnorm", 1, "bn2"), ("conv", 1, "conv2"),
                           ("batchnorm", 2, "bn3"), ("conv", 2, "conv3")],
    ("v2", "basic"): [("batchnorm", 0, "bn1"), ("conv", 0, "conv1"), ("batchnorm", 1, "bn2"), ("conv", 1, "conv2")],
}
# The block's downsample, created after its body: V1 conv + BN, V2 a bare conv.
LEGACY_DOWNSAMPLE: dict[str, list[tuple[str, str]]] = {
    "v1": [("conv", "downsample.0"), ("batchnorm", "downsample.1")],
    "v2": [("conv", "downsample")],
}


def is_legacy(names: list[str]) -> bool:
    return bool(names) and all(LEGACY_NAME.match(n) for n in names)


def legacy_to_structural(arrays: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Translate a ``save_params`` file into ``save_parameters`` names.

    Returns (arrays under structural names, structural name -> legacy name).  Raises ValueError with
    the reason when the layers do not add up to Gluon ResNet blocks.
    """
    layers: dict[tuple[int, str, int], dict[str, str]] = {}  # (stage or 0, type, n) -> param -> legacy name
    for name in arrays:
        m = LEGACY_NAME.match(name)
        layers.setdefault((int(m.group("stage") or 0), m.group("layer"), int(m.group("n"))), {})[m.group("param")] = name
    top_bn = sorted(n for s, t, n in layers if s == 0 and t == "batchnorm")
    if top_bn != list(range(len(top_bn))) or len(top_bn) > 3:
        raise ValueError(
            f"top-level batchnorm layers {top_bn}; expected none (V1 thumbnail), [0] (V1), [0, 1] (V2 CIFAR / thumbnail) "
            "or [0, 1, 2] (V2)"
        )
    stages = sorted({s for s, _, _ in layers if s})
    if stages != list(range(1, len(stages) + 1)):
        raise ValueError(f"stages {stages}; expected stage1..stageN")
    stem_conv = arrays.get(layers.get((0, "conv", 0), {}).get("weight", ""))
    kernel = int(stem_conv.shape[-1]) if stem_conv is not None and stem_conv.ndim == 4 else 0
    # The top-level layers say which class wrote the file (GLUON_STEMS): its stages' first features index.
    version, first = {0: ("v1", 1), 1: ("v1", 4 if kernel == 7 else 2), 2: ("v2", 2), 3: ("v2", 5)}[len(top_bn)]
    top = {("conv", 0): "features.0", ("batchnorm", 0): "features.1", ("dense", 0): "output"}
    if version == "v2":
        top = {("batchnorm", 0): "features.0", ("conv", 0): "features.1", ("dense", 0): "output",
               ("batchnorm", len(top_bn) - 1): f"features.{first + len(stages)}"}
        if first == 5:
            top[("batchnorm", 1)] = "features.2"
    target: dict[tuple[int, str, int], str] = {(0, t, n): path for (t, n), path in top.items()}
    for stage in stages:
        convs = sorted(n for s, t, n in layers if s == stage and t == "conv")
        first_conv = arrays[layers[(stage, "conv", 0)]["weight"]] if (stage, "conv", 0) in layers else None
        if first_conv is None or convs != list(range(len(convs))):
            raise ValueError(f"stage{stage} has conv layers {convs}; expected conv0..convN")
        block = "bottleneck" if first_conv.shape[-1] == 1 else "basic"
        per_block = 3 if block == "bottleneck" else 2
        has_downsample = len(convs) % per_block == 1
        count = (len(convs) - has_downsample) // per_block
        counters = {"conv": 0, "batchnorm": 0}
        for b in range(count):
            base = dict(counters)
            for layer, offset, path in LEGACY_BLOCKS[(version, block)]:
                target[(stage, layer, base[layer] + offset)] = f"features.{first + stage - 1}.{b}.{path}"
                counters[layer] = max(counters[layer], base[layer] + offset + 1)
            if b == 0 and has_downsample:
                for layer, path in LEGACY_DOWNSAMPLE[version]:
                    target[(stage, layer, counters[layer])] = f"features.{first + stage - 1}.0.{path}"
                    counters[layer] += 1
    out: dict[str, np.ndarray] = {}
    sources: dict[str, str] = {}
    for key, params in layers.items():
        if key not in target:
            stage, layer, n = key
            raise ValueError(f"{'stage%d_' % stage if stage else ''}{layer}{n} has no place in a Gluon ResNet {version.upper()}")
        for param, legacy in params.items():
            structural = f"{target[key]}.{param}"  # the parameter names are the same in both formats
            out[structural] = arrays[legacy]
            sources[structural] = legacy
    return out, sources


__all__ += ["is_legacy", "legacy_to_structural"]


# -- the other way: reference names to Gluon's save_parameters names (for the writer) --------------------
# (anchored pattern on the reference name, Gluon template); {stage} here is the Gluon features index.
REFERENCE_TO_GLUON_V1: list[tuple[str, str]] = [
    (r"^conv1\.(?P<p>weight|bias)$", "features.0.{p}"),
    (r"^bn1\.(?P<bn>.+)$", "features.1.{bn}"),
    (r"^layer(?P<stage>\d+)\.(?P<block>\d+)\.conv1\.(?P<p>.+)$", "features.{stage}.{block}.body.0.{p}"),
    (r"^layer(?P<stage>\d+)\.(?P<block>\d+)\.bn1\.(?P<bn>.+)$", "features.{stage}.{block}.body.1.{bn}"),
    (r"^layer(?P<stage>\d+)\.(?P<block>\d+)\.conv2\.(?P<p>.+)$", "features.{stage}.{block}.body.3.{p}"),
    (r"^layer(?P<stage>\d+)\.(?P<block>\d+)\.bn2\.(?P<bn>.+)$", "features.{stage}.{block}.body.4.{bn}"),
    (r"^layer(?P<stage>\d+)\.(?P<block>\d+)\.conv3\.(?P<p>.+)$", "features.{stage}.{block}.body.6.{p}"),
    (r"^layer(?P<stage>\d+)\.(?P<block>\d+)\.bn3\.(?P<bn>.+)$", "features.{stage}.{block}.body.7.{bn}"),
    (r"^layer(?P<stage>\d+)\.(?P<block>\d+)\.downsample\.0\.(?P<p>.+)$", "features.{stage}.{block}.downsample.0.{p}"),
    (r"^layer(?P<stage>\d+)\.(?P<block>\d+)\.downsample\.1\.(?P<bn>.+)$", "features.{stage}.{block}.downsample.1.{bn}"),
    (r"^fc\.(?P<p>weight|bias)$", "output.{p}"),
]
REFERENCE_TO_GLUON_V2: list[tuple[str, str]] = [
    (r"^data_bn\.(?P<bn>.+)$", "features.0.{bn}"),
    (r"^conv1\.(?P<p>weight|bias)$", "features.1.{p}"),
    (r"^bn1\.(?P<bn>.+)$", "features.2.{bn}"),
    (r"^layer(?P<stage>\d+)\.(?P<block>\d+)\.(?P<layer>bn[123])\.(?P<bn>.+)$", "features.{stage}.{block}.{layer}.{bn}"),
    (r"^layer(?P<stage>\d+)\.(?P<block>\d+)\.(?P<layer>conv[123])\.(?P<p>.+)$", "features.{stage}.{block}.{layer}.{p}"),
    (r"^layer(?P<stage>\d+)\.(?P<block>\d+)\.downsample\.0\.(?P<p>.+)$", "features.{stage}.{block}.downsample.{p}"),
    (r"^final_bn\.(?P<bn>.+)$", "features.{final}.{bn}"),
    (r"^fc\.(?P<p>weight|bias)$", "output.{p}"),
]
GLUON_BN_NAME = {v: k for k, v in BN_RENAME.items()}


def to_gluon_name(name: str, version: str, num_stages: int) -> str | None:
    """The save_parameters name of a reference tensor (None for names Gluon has no place for)."""
    table, first_stage = (REFERENCE_TO_GLUON_V1, GLUON_V1_FIRST_STAGE) if version == "v1" else (REFERENCE_TO_GLUON_V2, GLUON_V2_FIRST_STAGE)
    for pattern, template in table:
        match = re.match(pattern, name)
        if match:
            groups = match.groupdict()
            if "bn" in groups and groups["bn"] not in GLUON_BN_NAME:
                return None  # num_batches_tracked: Gluon keeps no such counter
            return template.format(
                p=groups.get("p"),
                bn=GLUON_BN_NAME.get(groups.get("bn") or ""),
                layer=groups.get("layer"),
                stage=int(groups["stage"]) + first_stage - 1 if groups.get("stage") else None,
                block=groups.get("block"),
                final=first_stage + num_stages,
            )
    return None


__all__ += ["to_gluon_name"]


# -- GluonCV's ResNetV1b family (resnetN_v1b/c/d/e/s) -------------------------------------------------
# ``gluoncv.model_zoo.ResNetV1b`` names its children as torchvision does (conv1, bn1, layer1..4, fc), so
# its save_parameters names are torchvision's with Gluon's BatchNorm parameter names.  The deep stem
# (v1c/d/e/s) is a HybridSequential conv1 = [conv, BN, ReLU, conv, BN, ReLU, conv] followed by bn1; the
# avg-down shortcut (v1d/e) is downsample = [AvgPool2D, conv, BN] (the pool has no parameters).
LAYER = r"layer(?P<stage>\d+)\.(?P<block>\d+)"
GLUONCV_V1B_NAMES: list[tuple[str, str]] = [
    (rf"^conv1\.{WB}$", "conv1.{p}"),  # 7x7/2 stem conv (v1b)
    (rf"^conv1\.(?P<i>[036])\.{WB}$", "conv1.{i}.{p}"),  # deep stem convs 3x3/2, 3x3, 3x3
    (rf"^conv1\.(?P<i>[14])\.{BN}$", "conv1.{i}.{bn}"),  # deep stem BNs after the first two convs
    (rf"^bn1\.{BN}$", "bn1.{bn}"),  # the BN after the (last) stem conv
    (rf"^{LAYER}\.conv(?P<k>[123])\.{WB}$", "layer{stage}.{block}.conv{k}.{p}"),  # conv2 strides (v1b)
    (rf"^{LAYER}\.bn(?P<k>[123])\.{BN}$", "layer{stage}.{block}.bn{k}.{bn}"),
    (rf"^{LAYER}\.downsample\.(?P<i>[01])\.{WB}$", "layer{stage}.{block}.downsample.{i}.{p}"),  # .0 conv; .1 after a pool
    (rf"^{LAYER}\.downsample\.(?P<i>[12])\.{BN}$", "layer{stage}.{block}.downsample.{i}.{bn}"),
    (rf"^fc\.{WB}$", "fc.{p}"),
]


def is_gluoncv_v1b(names: list[str]) -> bool:
    """GluonCV ResNetV1b names: torchvision-like blocks (layer1.0.conv1) with Gluon BN names."""
    return any(re.match(rf"^{LAYER}\.conv1\.weight$", n) for n in names) and any(
        re.match(rf"^(bn1|{LAYER}\.bn1)\.(gamma|beta|running_mean|running_var)$", n) for n in names
    )


def rename_gluoncv_v1b(names: list[str]) -> tuple[dict[str, str], list[str]]:
    """Map every GluonCV ResNetV1b name; returns (reference name -> GluonCV name, names that fit no row)."""
    mapped: dict[str, str] = {}
    unmatched: list[str] = []
    for name in names:
        for pattern, template in GLUONCV_V1B_NAMES:
            match = re.match(pattern, name)
            if match:
                groups = match.groupdict()
                groups["bn"] = BN_RENAME.get(groups.get("bn") or "")
                mapped[template.format(**groups)] = name
                break
        else:
            unmatched.append(name)
    return mapped, unmatched


def unsupported_variant(names: list[str]) -> str | None:
    """Why a GluonCV variant with no reference counterpart is refused, or None.

    GroupNorm nets (``resnet50_v1b_gn``) store gamma/beta but no running statistics; SE nets
    (``se_resnet*``) have a squeeze-and-excitation branch ``...se.0.weight`` in every block.
    """
    if any(re.search(r"(^|\.)se\.\d+\.", n) for n in names):
        return "a squeeze-and-excitation (SE) ResNet (GluonCV se_resnet*): its blocks' se.* layers have no place in the reference ResNet"
    gammas = {n[: -len(".gamma")] for n in names if n.endswith(".gamma")}
    means = {n[: -len(".running_mean")] for n in names if n.endswith(".running_mean")}
    if gammas and not gammas & means:
        return ("a GroupNorm ResNet (GluonCV *_gn: normalisation layers with gamma/beta and no running statistics); "
                "the reference ResNet has BatchNorm only")
    return None


__all__ += ["GLUONCV_V1B_NAMES", "is_gluoncv_v1b", "rename_gluoncv_v1b", "unsupported_variant"]
