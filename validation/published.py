"""The published ImageNet (ILSVRC2012 val, 50,000 images) figures that ``--compare-published`` prints.

Transcribed, not parsed at run time (the source documents do not ship with the package); a test
re-reads the source documents and checks every figure here against them.  Sources:

- Kaiming He's Caffe release README (``/work/shared/seeds/001_633d30ef107ebedc.txt`` describes the
  protocol; the table is transcribed in ``/work/shared/reference/PUBLISHED.md``): errors, 1-crop
  and 10-crop.
- ONNX model zoo ResNet v1/v2 (``seeds/004_3d915647607e2200.txt``): accuracies, center crop.
- OpenMMLab mmclassification ResNet card (``seeds/003_fd33a50fde038426.txt``): accuracies, 224 crop.
- gluon-cv ``ResNet.csv`` v1b and timm's ports of them (``reference/PUBLISHED.md``): accuracies.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class PublishedResult:
    """One published row: top-1 / top-5 error in percent, for a protocol of ``crops`` crops."""

    arch: str
    source: str
    citation: str
    crops: int
    top1_error: float
    top5_error: float

    def to_dict(self) -> dict:
        return asdict(self)


CAFFE = ("Kaiming He's Caffe release", "KaimingHe/deep-residual-networks README; seeds/001, reference/PUBLISHED.md")
ONNX = ("ONNX model zoo", "onnx/models ResNet page; seeds/004_3d915647607e2200.txt")
MMCLS = ("mmclassification", "mmcls ResNet model card; seeds/003_fd33a50fde038426.txt")
GLUON = ("gluon-cv v1b", "gluon-cv ResNet.csv; reference/PUBLISHED.md")
TIMM_GLUON = ("timm port of gluon v1b", "timm results-imagenet.csv; reference/PUBLISHED.md")

# (arch, source, crops, top-1, top-5, "error" or "accuracy"), as the source prints them.
_TABLE: list[tuple[str, tuple[str, str], int, float, float, str]] = [
    ("caffe_resnet50", CAFFE, 1, 24.7, 7.8, "error"),
    ("caffe_resnet101", CAFFE, 1, 23.6, 7.1, "error"),
    ("caffe_resnet152", CAFFE, 1, 23.0, 6.7, "error"),
    ("caffe_resnet50", CAFFE, 10, 22.9, 6.7, "error"),
    ("caffe_resnet101", CAFFE, 10, 21.8, 6.1, "error"),
    ("caffe_resnet152", CAFFE, 10, 21.4, 5.7, "error"),
    ("resnet18_v1", ONNX, 1, 69.93, 89.29, "accuracy"),
    ("resnet34_v1", ONNX, 1, 73.73, 91.40, "accuracy"),
    ("resnet50_v1", ONNX, 1, 74.93, 92.38, "accuracy"),
    ("resnet101_v1", ONNX, 1, 76.48, 93.20, "accuracy"),
    ("resnet152_v1", ONNX, 1, 77.11, 93.61, "accuracy"),
    ("resnet18_v2", ONNX, 1, 69.70, 89.49, "accuracy"),
    ("resnet34_v2", ONNX, 1, 73.36, 91.43, "accuracy"),
    ("resnet50_v2", ONNX, 1, 75.81, 92.82, "accuracy"),
    ("resnet101_v2", ONNX, 1, 77.42, 93.61, "accuracy"),
    ("resnet152_v2", ONNX, 1, 78.20, 94.21, "accuracy"),
    ("resnet18", MMCLS, 1, 69.90, 89.43, "accuracy"),
    ("resnet34", MMCLS, 1, 73.62, 91.59, "accuracy"),
    ("resnet50", MMCLS, 1, 76.55, 93.06, "accuracy"),
    ("resnet101", MMCLS, 1, 77.97, 94.06, "accuracy"),
    ("resnet152", MMCLS, 1, 78.48, 94.13, "accuracy"),
    ("resnet50_v1c", MMCLS, 1, 77.01, 93.58, "accuracy"),
    ("resnet101_v1c", MMCLS, 1, 78.30, 94.27, "accuracy"),
    ("resnet152_v1c", MMCLS, 1, 78.76, 94.41, "accuracy"),
    ("resnet50_v1d", MMCLS, 1, 77.54, 93.57, "accuracy"),
    ("resnet101_v1d", MMCLS, 1, 78.93, 94.48, "accuracy"),
    ("resnet152_v1d", MMCLS, 1, 79.41, 94.70, "accuracy"),
    ("wide_resnet50_2", MMCLS, 1, 78.48, 94.08, "accuracy"),
    ("wide_resnet101_2", MMCLS, 1, 78.84, 94.28, "accuracy"),
    # gluon-cv's v1b is the torchvision layout (stride in the 3x3), so it lands on resnet50 etc.
    ("resnet50", GLUON, 1, 77.67, 93.82, "accuracy"),
    ("resnet101", GLUON, 1, 79.20, 94.61, "accuracy"),
    ("resnet152", GLUON, 1, 79.69, 94.74, "accuracy"),
    ("resnet50", TIMM_GLUON, 1, 77.580, 93.704, "accuracy"),
    ("resnet101", TIMM_GLUON, 1, 79.306, 94.538, "accuracy"),
    ("resnet152", TIMM_GLUON, 1, 79.712, 94.720, "accuracy"),
]


def _as_error(value: float, kind: str) -> float:
    return value if kind == "error" else round(100.0 - value, 6)


PUBLISHED: list[PublishedResult] = [
    PublishedResult(arch, source[0], source[1], crops, _as_error(t1, kind), _as_error(t5, kind))
    for arch, source, crops, t1, t5, kind in _TABLE
]


def published_for(arch: str | None, crops: int | None = None) -> list[PublishedResult]:
    """Every published row for ``arch`` (a registry name), optionally only for one protocol."""
    return [r for r in PUBLISHED if r.arch == arch and (crops is None or r.crops == crops)]


def comparison_rows(arch: str | None, crops: int, top1_error: float, top5_error: float) -> list[dict]:
    """Published rows for ``arch`` beside the measured errors (fractions in, percent out)."""
    rows = []
    for r in published_for(arch):
        rows.append(
            {
                **r.to_dict(),
                "measured_crops": crops,
                "measured_top1_error": round(100.0 * top1_error, 4),
                "measured_top5_error": round(100.0 * top5_error, 4),
                "same_protocol": r.crops == crops,
                "top1_error_delta": round(100.0 * top1_error - r.top1_error, 4) if r.crops == crops else None,
            }
        )
    return rows
