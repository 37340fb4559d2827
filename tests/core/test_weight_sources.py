"""The weight-source table: (arch, source) rows with the preprocessing and the published results of
each source, checked figure by figure against the documents they cite; presets, published rows,
validate's comparison and the converters' metadata all read it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from resnet_port.checkpoints import load_model
from resnet_port.checkpoints.metadata import IMAGENET_MEAN, IMAGENET_STD
from resnet_port.checkpoints.presets import PRESET_FAMILIES, preset_preprocessing
from resnet_port.checkpoints.weight_sources import (
    SOURCES,
    WEIGHTS,
    shared_folder,
    source_document,
    weight_records,
)
from resnet_port.errors import CheckpointError
from resnet_port.resnet_ref import list_archs
from resnet_port.validation.published import PUBLISHED, comparison_rows
from tests.core.independent_builders import mmcls_v1d_state_dict, torchvision_state_dict

ROOT = Path(__file__).resolve().parents[2]


def document(name: str) -> str:
    path = source_document(name)
    if path is None:
        pytest.fail(f"{name} is not in the shared folder ({shared_folder()}): set RESNET_PORT_SHARED")
    return path.read_text(errors="replace")


def rows(tag: str) -> set[tuple]:
    return {(r.arch, p.crops, p.top1_error, p.top5_error) for r in weight_records(source=tag) for p in r.published}


def acc(top1: str, top5: str) -> tuple[float, float]:
    return round(100 - float(top1), 6), round(100 - float(top5), 6)


def test_onnx_zoo_figures_match_the_zoo_page():
    text = document("seeds/004_3d915647607e2200.txt")
    expected = set()
    for version, block in zip(("v1", "v2"), re.split(r"- Version 2:", text.split("- Version 1:")[1])):
        for depth, top1, top5 in re.findall(r"^ResNet-(\d+) \|.*\| ([\d.]+) \| ([\d.]+) \|$", block, re.M):
            expected.add((f"resnet{depth}_{version}", 1, *acc(top1, top5)))
    assert len(expected) == 10 and rows("onnx-zoo") == expected
    # the page's preprocessing is the source's
    assert "0.485" in text and "0.229" in text
    prep = SOURCES["onnx-zoo"].preprocessing()
    assert (prep.channel_order, prep.pixel_max, prep.mean, prep.std) == ("RGB", 1.0, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def test_mmcls_figures_match_the_model_card():
    text = document("seeds/003_fd33a50fde038426.txt")
    section = text.split("ImageNet-1k")[1].split('The "rsb"')[0]
    names = {"ResNet-": "resnet{}", "ResNetV1C-": "resnet{}_v1c", "ResNetV1D-": "resnet{}_v1d", "Wide-ResNet-": "wide_resnet{}_2"}
    expected = {
        (names[prefix].format(depth), 1, *acc(top1, top5))
        for prefix, depth, _star, top1, top5 in re.findall(
            r"^((?:Wide-)?ResNet(?:V1[CD])?-)(\d+)(\*?) [\d.]+ [\d.]+ ([\d.]+) ([\d.]+) config", section, re.M
        )
    }
    assert len(expected) == 13 and rows("mmcls") == expected


def test_caffe_gluoncv_and_timm_figures_match_published_md():
    text = document("reference/PUBLISHED.md")
    caffe = text.split("## Kaiming He's Caffe release")[1].split("\n## ")[0]
    expected = set()
    for depth, a1, a5, b1, b5 in re.findall(r"^\| ResNet-(\d+) \| ([\d.]+) / ([\d.]+) \| ([\d.]+) / ([\d.]+) \|$", caffe, re.M):
        expected |= {(f"caffe_resnet{depth}", 1, float(a1), float(a5)), (f"caffe_resnet{depth}", 10, float(b1), float(b5))}
    assert len(expected) == 6 and rows("caffe-release") == expected
    gluon, timm = set(), set()
    for depth, g1, g5, t1, t5 in re.findall(r"ResNet-(\d+) v1b ([\d.]+) / ([\d.]+) \((?:timm port )?([\d.]+) / ([\d.]+)\)", " ".join(text.split())):
        gluon.add((f"resnet{depth}", 1, *acc(g1, g5)))
        timm.add((f"resnet{depth}", 1, *acc(t1, t5)))
    # (GluonCV's own names, resnet50_v1b etc., come from its ResNet.csv: tests/mxnet/test_gluoncv.py)
    assert len(gluon) == 3 and {r for r in rows("gluoncv") if "_v1" not in r[0]} == gluon and rows("timm-gluon") == timm
    # the release protocol the seed describes
    seed = document("seeds/001_633d30ef107ebedc.txt")
    assert "shorter side=256" in seed and "10 224x224 crops" in seed


def test_table_is_well_formed():
    archs = set(list_archs())
    assert all(r.arch in archs and r.source in SOURCES for r in WEIGHTS)
    keys = [(r.arch, r.source) for r in WEIGHTS]
    assert len(keys) == len(set(keys)), "one row per (arch, source)"
    # the same network from several sources keeps each source's figures apart
    assert {r.source for r in weight_records("resnet50")} == {"mmcls", "gluoncv", "timm-gluon"}
    # every published row is one of the table's figures, and every figure is published
    assert len(PUBLISHED) == sum(len(r.published) for r in WEIGHTS) == 46


def test_presets_keep_their_preprocessing():
    """The old presets, as their sources document them (PUBLISHED.md, the zoo page, CIFAR conventions)."""
    rgb01 = ("RGB", 1.0, IMAGENET_MEAN, IMAGENET_STD, 256, 224)
    expected = {
        "torchvision": rgb01, "timm": rgb01, "mmcls": rgb01, "gluon": rgb01, "onnx": rgb01,
        "mxnet": ("RGB", 255.0, None, None, 256, 224),
        "caffe": ("BGR", 255.0, (104.0, 117.0, 123.0), None, 256, 224),
        "cifar": ("RGB", 255.0, (125.307, 122.961, 113.8575), (51.5865, 50.847, 51.255), 32, 32),
    }
    assert set(PRESET_FAMILIES) == set(expected)
    for family, want in expected.items():
        p = preset_preprocessing(family)
        assert (p.channel_order, p.pixel_max, p.mean, p.std, p.resize, p.crop) == want, family
    assert preset_preprocessing("caffe-release") == preset_preprocessing("caffe")  # a source tag works too
    with pytest.raises(CheckpointError, match="no weight source 'nope'"):
        preset_preprocessing("nope")


def test_comparison_marks_the_checkpoints_own_source():
    plain = comparison_rows("resnet50", 1, 0.23, 0.07)
    assert [r["source_tag"] for r in plain] == ["mmcls", "gluoncv", "timm-gluon"]
    assert all(r["same_source"] is None for r in plain)
    own = comparison_rows("resnet50", 1, 0.23, 0.07, source="gluoncv")
    assert [r["source_tag"] for r in own] == ["gluoncv", "mmcls", "timm-gluon"]
    assert [r["same_source"] for r in own] == [True, False, False]
    assert own[0]["top1_error_delta"] == pytest.approx(23.0 - 22.33)


def test_plain_state_dicts_record_their_source(tmp_path):
    mm = tmp_path / "mmcls.pth"
    torch.save({"state_dict": mmcls_v1d_state_dict(50, 1000, seed=1)}, mm)
    _, meta = load_model(mm)
    assert meta.published["weight_source"] == "mmcls"
    assert meta.published["results"] == [{"crops": 1, "top1_error": round(100 - 77.54, 6), "top5_error": round(100 - 93.57, 6)}]
    tv = tmp_path / "tv.pth"
    torch.save(torchvision_state_dict(18, 10), tv)
    assert load_model(tv)[1].published == {}  # layout alone does not say whose weights these are
    assert load_model(tv, preset="gluon")[1].published["weight_source"] == "gluon-zoo"


def test_onnx_converter_claims_the_zoo_only_for_zoo_networks(tmp_path):
    from resnet_port.converters.onnx import convert_onnx
    from tests.onnx.conftest import build_resnet_onnx

    zoo = build_resnet_onnx(tmp_path / "r18.onnx", depth=18, widths=(64, 128, 256, 512), stem_width=64, num_classes=1000, size=32, batch=1)
    meta = convert_onnx(zoo.path).metadata
    assert meta.arch == "resnet18_v1"
    assert meta.published["weight_source"] == "onnx-zoo"
    assert meta.published["results"] == [{"crops": 1, "top1_error": round(100 - 69.93, 6), "top5_error": round(100 - 89.29, 6)}]
    small = build_resnet_onnx(tmp_path / "small.onnx", depth=18)
    assert convert_onnx(small.path).metadata.published == {}


def test_no_machine_paths_in_the_product():
    """Paths of one machine do not belong in the product: seed documents are cited by file name."""
    offenders = []
    for folder in ("checkpoints", "validation", "converters", "audit", "finetune", "resnet_ref", "resnet_port"):
        for path in (ROOT / folder).rglob("*.py"):
            if re.search(r"['\"`(]/work/|/work/shared", path.read_text(errors="replace")):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_a_preset_can_name_the_weight_source(tmp_path):
    """--preset gluoncv: gluon-cv's v1b weights in a torchvision layout; validate then marks gluon-cv's row."""
    from resnet_port.validation.cli import build_parser

    path = tmp_path / "resnet50_v1b.pth"
    torch.save(torchvision_state_dict(50, 1000, seed=2), path)
    _, meta = load_model(path, preset="gluoncv")
    assert meta.arch == "resnet50" and meta.published["weight_source"] == "gluoncv"
    assert meta.published["results"] == [{"crops": 1, "top1_error": round(100 - 77.67, 6), "top5_error": round(100 - 93.82, 6)}]
    rows = comparison_rows(meta.arch, 1, 0.2233, 0.0618, source=meta.published["weight_source"])
    assert rows[0]["source"] == "gluon-cv v1b" and rows[0]["same_source"] is True
    args = build_parser().parse_args([str(path), "--data", str(tmp_path), "--preset", "timm-gluon"])
    assert args.preset == "timm-gluon"


def test_mxnet_and_caffe_metadata_name_their_source(tmp_path):
    from resnet_port.checkpoints.weight_sources import listed_source, published_record
    from resnet_port.converters.mxnet.shared import metadata
    from resnet_port.resnet_ref import get_spec

    params = tmp_path / "resnet18_v1.params"
    params.write_bytes(b"x")
    meta = metadata(get_spec("resnet18_v1", 1000), "resnet18_v1", [params], {}, "gluon")
    assert meta.published["weight_source"] == "gluon-zoo" and meta.published["results"] == []
    assert meta.preprocessing.mean == IMAGENET_MEAN and meta.preprocessing.pixel_max == 1.0
    sym = metadata(get_spec("resnet18_v1", 1000), None, [params], {}, "mxnet")
    assert sym.published["weight_source"] == "mxnet-symbol" and sym.preprocessing.pixel_max == 255.0
    # convert-caffe claims Kaiming He's release only for the release's networks
    assert published_record("caffe_resnet152", listed_source("caffe_resnet152", "caffe-release"))["results"] == [
        {"crops": 1, "top1_error": 23.0, "top5_error": 6.7}, {"crops": 10, "top1_error": 21.4, "top5_error": 5.7}]
    assert published_record("resnet50", listed_source("resnet50", "caffe-release")) == {}
