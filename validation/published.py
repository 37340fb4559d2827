"""The published ImageNet (ILSVRC2012 val, 50,000 images) figures that ``--compare-published`` prints.

A view of the weight-source table (``checkpoints/weight_sources.py``), which holds the figures per
(arch, weight source) with the document each is cited from (seed documents by file name in the
project's shared folder: ``seeds/001_633d30ef107ebedc.txt`` for Kaiming He's release protocol,
``seeds/003_fd33a50fde038426.txt`` for mmclassification, ``seeds/004_3d915647607e2200.txt`` for the
ONNX model zoo, ``reference/PUBLISHED.md`` for the transcribed Caffe, gluon-cv and timm tables).
Tests re-read those documents and check every figure.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from resnet_port.checkpoints.weight_sources import WEIGHTS, weight_source


@dataclass(frozen=True)
class PublishedResult:
    """One published row: top-1 / top-5 error in percent, for a protocol of ``crops`` crops."""

    arch: str
    source: str
    citation: str
    crops: int
    top1_error: float
    top5_error: float
    source_tag: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


PUBLISHED: list[PublishedResult] = [
    PublishedResult(r.arch, r.weight_source.name, r.weight_source.citation, p.crops, p.top1_error, p.top5_error, r.source)
    for r in WEIGHTS
    for p in r.published
]


def published_for(arch: str | None, crops: int | None = None, source: str | None = None) -> list[PublishedResult]:
    """Every published row for ``arch`` (a registry name), optionally one protocol or one weight source."""
    tag = None if source is None else weight_source(source).tag
    return [
        r for r in PUBLISHED
        if r.arch == arch and (crops is None or r.crops == crops) and (tag is None or r.source_tag == tag)
    ]


def comparison_rows(
    arch: str | None, crops: int, top1_error: float, top5_error: float, source: str | None = None
) -> list[dict]:
    """Published rows for ``arch`` beside the measured errors (fractions in, percent out).

    Every source's rows are listed (the same network may carry weights from several); with the
    checkpoint's weight ``source`` known, its rows come first and are marked ``same_source``.
    """
    tag = None if source is None else weight_source(source).tag
    rows = []
    for r in published_for(arch):
        rows.append(
            {
                **r.to_dict(),
                "measured_crops": crops,
                "measured_top1_error": round(100.0 * top1_error, 4),
                "measured_top5_error": round(100.0 * top5_error, 4),
                "same_protocol": r.crops == crops,
                "same_source": None if tag is None else r.source_tag == tag,
                "top1_error_delta": round(100.0 * top1_error - r.top1_error, 4) if r.crops == crops else None,
            }
        )
    if tag is not None:
        rows.sort(key=lambda row: not row["same_source"])  # stable: table order within each group
    return rows
