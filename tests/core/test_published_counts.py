"""Parameter counts and FLOPs of the reference ResNets against the mmcls model card.

The rows are parsed from the seed document itself (`../shared/seeds/003_*.txt`), so the test checks
the architecture against what was published, not against a transcription.  Parameter counts must
equal the printed figure to its printed precision; FLOPs (mmcv counting, see resnet_ref.profile) must
be within 1% at the printed resolution.  FLOPs depend on where the stride sits, so a wrong stride
placement fails here even though the parameter count is unchanged.
"""

from __future__ import annotations

import re

import pytest
import torch

from resnet_port.resnet_ref import count_flops, count_params
from tests.shared_dir import SHARED
from resnet_port.resnet_ref import create_model as _create


def create_model(arch: str, num_classes: int = 1000):
    # Counting needs shapes only: the meta device makes the 60 GFLOP models instant.
    with torch.device("meta"):
        return _create(arch, num_classes)

SEED = SHARED / "seeds" / "003_fd33a50fde038426.txt"

# Model-card name -> arch name.  "(fp16)" and "(rsb-*)" are training recipes of the same network.
ARCH_OF = {
    "ResNet-18": "resnet18",
    "ResNet-34": "resnet34",
    "ResNet-50": "resnet50",
    "ResNet-101": "resnet101",
    "ResNet-152": "resnet152",
    "ResNetV1C-50": "resnet50_v1c",
    "ResNetV1C-101": "resnet101_v1c",
    "ResNetV1C-152": "resnet152_v1c",
    "ResNetV1D-50": "resnet50_v1d",
    "ResNetV1D-101": "resnet101_v1d",
    "ResNetV1D-152": "resnet152_v1d",
    "Wide-ResNet-50*": "wide_resnet50_2",
    "Wide-ResNet-101*": "wide_resnet101_2",
}
# Table -> (arch prefix, classes, input size) for the rows without a resolution column.
SECTIONS = {"Cifar10": ("cifar_", 10, 32), "Cifar100": ("cifar_", 100, 32), "ImageNet-1k": ("", 1000, 224)}
ROW = re.compile(r"^(?P<name>(?:Wide-)?ResNet(?:V1[CD])?-\d+\*?(?: \([^)]*\))?) (?P<rest>.*)$")


def _published_rows() -> list[tuple[str, str, int, int, str, str]]:
    """(row label, model-card name, classes, size, params printed, flops printed) of every table row."""
    rows = []
    section = None
    for line in SEED.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip()
        if line in SECTIONS or line in ("CUB-200-2011",) or line.startswith("Model resolution"):
            section = line
            continue
        match = ROW.match(line)
        if not match or section is None:
            continue
        name, fields = match.group("name"), match.group("rest").split()
        base = re.sub(r" \(.*\)$", "", name)
        if section in SECTIONS:
            prefix, classes, size = SECTIONS[section]
            params, flops = fields[0], fields[1]
        elif section == "CUB-200-2011":
            # "ResNet-50 ImageNet-21k-mill 448x448 23.92 16.48 ..." : 200 bird classes
            classes, size, params, flops = 200, int(fields[1].split("x")[0]), fields[2], fields[3]
            prefix = ""
        else:  # the ImageNet-21k table: "ResNet-50-mill 224x224 86.74 15.14"
            continue
        rows.append((f"{section}:{name}", base, classes, size, params, flops, prefix))
    return rows


ROWS = _published_rows()


def test_seed_tables_were_parsed():
    # Every table of the card: 5 CIFAR-10, 1 CIFAR-100, 17 ImageNet-1k, 1 CUB rows.
    sections = [r[0].split(":")[0] for r in ROWS]
    assert sections.count("Cifar10") == 5
    assert sections.count("Cifar100") == 1
    assert sections.count("ImageNet-1k") == 17
    assert sections.count("CUB-200-2011") == 1


@pytest.mark.parametrize("label,base,classes,size,params,flops,prefix", ROWS, ids=[r[0] for r in ROWS])
def test_params_and_flops_match_published(label, base, classes, size, params, flops, prefix):
    arch = prefix + ARCH_OF[base]
    model = create_model(arch, num_classes=classes)
    decimals = len(params.split(".")[1]) if "." in params else 0
    assert round(count_params(model) / 1e6, decimals) == pytest.approx(float(params)), (arch, count_params(model))
    measured = count_flops(model, size) / 1e9
    assert measured == pytest.approx(float(flops), rel=0.01), (arch, measured)


def test_the_21k_mill_row_cannot_match():
    """The card's "ResNet-50-mill 224x224 86.74 15.14" row cannot be a ResNet-50.

    A ResNet-50 trunk has 23.5 M parameters and about 4.1 GFLOPs at 224, whatever its classifier:
    even with the 11,221 classes of ImageNet-21k-P it has 46.5 M parameters and the FLOPs do not
    change.  86.74 M / 15.14 G are (to rounding) Swin-B's figures, a copy error in the card.  We check
    the first claim here so the row's exclusion is itself tested.
    """
    text = SEED.read_text(encoding="utf-8", errors="replace")
    assert "ResNet-50-mill 224x224 86.74 15.14" in text
    model = create_model("resnet50", num_classes=11221)
    assert count_params(model) / 1e6 == pytest.approx(46.49, abs=0.01)
    assert count_flops(model, 224) / 1e9 == pytest.approx(4.14, abs=0.02)


def test_stride_placement_is_visible_in_flops():
    """Stride in the 1x1 (Caffe, Gluon V1) vs the 3x3 (torchvision): same parameters, fewer FLOPs."""
    caffe_style = create_model("resnet50_v1")  # Gluon V1 = stride in the 1x1 (+ two 1x1 biases)
    torch_style = create_model("resnet50")
    assert count_flops(torch_style, 224) / 1e9 == pytest.approx(4.12, rel=0.01)
    # The 3x3 of the first block of stages 2-4 runs at the lower resolution: about 0.23 G fewer.
    assert count_flops(caffe_style, 224) < count_flops(torch_style, 224) * 0.96
