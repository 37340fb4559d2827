"""The structural names of Gluon's ``save_parameters`` files, mapped onto the reference names.

Gluon's model zoo ResNets hold everything in one ``features`` HybridSequential, so a parameter's
name is its path: ``features.4.0.body.0.weight`` is stage 1, block 0, the first conv of the body.
The stages start at ``features.4`` in V1 (conv, BN, ReLU, max pool before them) and at
``features.5`` in V2 (the input BN first); V2 ends with ``features.9``, the final BN.  BatchNorm's
``gamma/beta/running_mean/running_var`` become ``weight/bias/running_mean/running_var``.

Each table is read top to bottom; every pattern is anchored, and every name in the file must match
exactly one of them.
"""

from __future__ import annotations

import re

BN = r"(?P<bn>gamma|beta|running_mean|running_var)"
BN_RENAME = {"gamma": "weight", "beta": "bias", "running_mean": "running_mean", "running_var": "running_var"}
WB = r"(?P<p>weight|bias)"
STAGE_BLOCK = r"features\.(?P<stage>\d+)\.(?P<block>\d+)"

# (anchored pattern, reference name template).  {stage} is the 1-based stage number, {p} the
# conv/dense parameter, {bn} the renamed BatchNorm parameter.
GLUON_V1_NAMES: list[tuple[str, str]] = [
    (rf"^features\.0\.{WB}$", "conv1.{p}"),  # 7x7/2 stem conv
    (rf"^features\.1\.{BN}$", "bn1.{bn}"),
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
GLUON_V1_FIRST_STAGE = 4

GLUON_V2_NAMES: list[tuple[str, str]] = [
    (rf"^features\.0\.{BN}$", "data_bn.{bn}"),  # BatchNorm(scale=False, center=False) on the input
    (rf"^features\.1\.{WB}$", "conv1.{p}"),
    (rf"^features\.2\.{BN}$", "bn1.{bn}"),
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
GLUON_V2_FIRST_STAGE = 5

TABLES = {"v1": (GLUON_V1_NAMES, GLUON_V1_FIRST_STAGE), "v2": (GLUON_V2_NAMES, GLUON_V2_FIRST_STAGE)}


def gluon_version(names: list[str]) -> str | None:
    """'v1' or 'v2' from the block layout the names show (V1 blocks have a ``body``), else None."""
    if any(re.match(rf"^{STAGE_BLOCK}\.body\.", n) for n in names):
        return "v1"
    if any(re.match(rf"^{STAGE_BLOCK}\.bn1\.", n) for n in names):
        return "v2"
    return None


def rename(name: str, version: str, final_index: int | None) -> str | None:
    """The reference name of one Gluon name, or None if it fits no row of the table.

    ``final_index`` is the ``features`` index right after the last stage (V2's final BN).
    """
    table, first_stage = TABLES[version]
    for pattern, template in table:
        match = re.match(pattern.replace("{final}", str(final_index)), name)
        if not match:
            continue
        groups = match.groupdict()
        fields: dict[str, object] = {"p": groups.get("p"), "bn": BN_RENAME.get(groups.get("bn") or "")}
        if "stage" in groups:
            stage = int(groups["stage"]) - first_stage + 1
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
    mapped: dict[str, str] = {}
    unmatched: list[str] = []
    for name in names:
        target = rename(name, version, final_index)
        if target is None:
            unmatched.append(name)
        else:
            mapped[target] = name
    return mapped, unmatched


__all__ = ["GLUON_V1_NAMES", "GLUON_V2_NAMES", "gluon_version", "rename", "rename_all", "stage_indices"]
