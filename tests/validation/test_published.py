"""The transcribed published tables, re-read here from the source documents they cite."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from resnet_port.resnet_ref import list_archs
from resnet_port.validation.published import PUBLISHED, comparison_rows, published_for

from tests.shared_dir import SHARED

SEEDS = SHARED / "seeds"


def need(path: Path) -> str:
    if not path.is_file():
        pytest.fail(f"{path} is missing: set RESNET_PORT_SHARED to the project's shared folder")
    return path.read_text(errors="replace")


def as_rows(source: str) -> set[tuple]:
    return {(r.arch, r.crops, r.top1_error, r.top5_error) for r in PUBLISHED if r.source == source}


def test_onnx_zoo_rows_match_seed_004():
    text = need(SEEDS / "004_3d915647607e2200.txt")
    expected = set()
    for version, block in zip(("v1", "v2"), re.split(r"- Version 2:", text.split("- Version 1:")[1])):
        for depth, top1, top5 in re.findall(r"^ResNet-(\d+) \|.*\| ([\d.]+) \| ([\d.]+) \|$", block, re.M):
            expected.add((f"resnet{depth}_{version}", 1, round(100 - float(top1), 6), round(100 - float(top5), 6)))
    assert len(expected) == 10
    assert as_rows("ONNX model zoo") == expected


def test_mmcls_rows_match_seed_003():
    text = need(SEEDS / "003_fd33a50fde038426.txt")
    section = text.split("ImageNet-1k")[1].split("The \"rsb\"")[0]
    names = {
        "ResNet-": "resnet{}",
        "ResNetV1C-": "resnet{}_v1c",
        "ResNetV1D-": "resnet{}_v1d",
        "Wide-ResNet-": "wide_resnet{}_2",
    }
    expected = set()
    for prefix, depth, star, top1, top5 in re.findall(
        r"^((?:Wide-)?ResNet(?:V1[CD])?-)(\d+)(\*?) [\d.]+ [\d.]+ ([\d.]+) ([\d.]+) config", section, re.M
    ):
        expected.add((names[prefix].format(depth), 1, round(100 - float(top1), 6), round(100 - float(top5), 6)))
    assert len(expected) == 13
    assert as_rows("mmclassification") == expected


def test_caffe_and_gluon_rows_match_published_md():
    text = need(SHARED / "reference" / "PUBLISHED.md")
    caffe_section = text.split("## Kaiming He's Caffe release")[1].split("\n## ")[0]
    expected = set()
    for depth, a1, a5, b1, b5 in re.findall(r"^\| ResNet-(\d+) \| ([\d.]+) / ([\d.]+) \| ([\d.]+) / ([\d.]+) \|$", caffe_section, re.M):
        expected.add((f"caffe_resnet{depth}", 1, float(a1), float(a5)))
        expected.add((f"caffe_resnet{depth}", 10, float(b1), float(b5)))
    assert as_rows("Kaiming He's Caffe release") == expected and len(expected) == 6
    gluon, timm = set(), set()
    for depth, g1, g5, t1, t5 in re.findall(r"ResNet-(\d+) v1b ([\d.]+) / ([\d.]+) \((?:timm port )?([\d.]+) / ([\d.]+)\)", " ".join(text.split())):
        gluon.add((f"resnet{depth}", 1, round(100 - float(g1), 6), round(100 - float(g5), 6)))
        timm.add((f"resnet{depth}", 1, round(100 - float(t1), 6), round(100 - float(t5), 6)))
    # GluonCV's own names (resnet50_v1b, _v1c, _v1d) come from its ResNet.csv: tests/mxnet/test_gluoncv.py
    gluoncv = {row for row in as_rows("gluon-cv v1b") if "_v1" not in row[0]}
    assert gluoncv == gluon and as_rows("timm port of gluon v1b") == timm and len(gluon) == 3


def test_every_row_names_a_registered_arch():
    archs = set(list_archs())
    assert all(r.arch in archs for r in PUBLISHED)


def test_comparison_rows():
    rows = comparison_rows("caffe_resnet50", 10, 0.2301, 0.0672)
    assert len(rows) == 2 and published_for("caffe_resnet50", 10)[0].top1_error == 22.9
    ten = next(r for r in rows if r["crops"] == 10)
    assert ten["same_protocol"] and ten["measured_top1_error"] == pytest.approx(23.01)
    assert ten["top1_error_delta"] == pytest.approx(0.11)
    assert next(r for r in rows if r["crops"] == 1)["top1_error_delta"] is None
    assert comparison_rows("cifar_resnet18", 1, 0.5, 0.2) == []
