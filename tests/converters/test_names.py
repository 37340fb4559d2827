"""converters.names: a reference-named state dict read back into the skeleton from names and shapes.
State dicts come from the independent builders (tests/core/independent_builders.py), never from
resnet_ref; the spec found is compared with the registered layouts they implement."""

from __future__ import annotations

from pathlib import Path

import pytest

from resnet_port.checkpoints.plain import normalise_names, recognised_spec
from resnet_port.errors import ConversionError
from resnet_port.resnet_ref import get_spec
from tests.core.independent_builders import mmcls_v1d_state_dict, torchvision_state_dict


@pytest.mark.parametrize("depth, arch", [(18, "resnet18"), (50, "resnet50")])
def test_torchvision_layouts_read_as_their_registered_spec(depth, arch):
    renamed, layout = normalise_names(torchvision_state_dict(depth, num_classes=10, seed=1))
    spec = recognised_spec(Path("tv.pth"), renamed, layout)
    # Basic blocks: both stride readings are the same network; the Gluon name (stride "1x1") is
    # registered first, so only the other fields are compared there.
    assert spec.replace(stride_in="3x3") == get_spec(arch, 10)


def test_mmcls_deep_stem_and_avg_down_are_read_from_names():
    renamed, layout = normalise_names(mmcls_v1d_state_dict(50, num_classes=7, seed=2))
    assert layout == "mmcls"
    assert recognised_spec(Path("v1d.pth"), renamed, layout) == get_spec("resnet50_v1d", 7)


def test_a_tensor_without_a_place_is_named():
    renamed, layout = normalise_names(torchvision_state_dict(18, seed=1))
    renamed["layer1.0.conv9.weight"] = renamed["layer1.0.conv1.weight"]
    with pytest.raises(ConversionError, match=r"tv.pth: tensor\(s\) layer1.0.conv9.weight have no place"):
        recognised_spec(Path("tv.pth"), renamed, layout)
