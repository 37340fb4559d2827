"""torchvision and timm as referees, installed apart from the toolkit's torch (PEERS.md).

torchvision's wheel is built for another torch, so it is installed with ``--no-deps`` into a folder of
its own (``$RESNET_PORT_TORCHVISION_PATH``), and timm beside it (``$RESNET_PORT_TIMM_PATH``); .ci/run
sets both.  Their pure-Python parts (transforms, timm's models) run on this torch once the two
operators torchvision's import registers are defined.  Without the paths a test is skipped on a
developer's machine, and fails under CI (``CI=true``), where a referee that did not run is no pass.
"""

from __future__ import annotations

import os
import sys
from types import ModuleType

import pytest
import torch


def _path(variable: str, why: str) -> str:
    value = os.environ.get(variable)
    if not value:
        message = f"{variable} is not set ({why})"
        if os.environ.get("CI") == "true":
            pytest.fail(message + ": .ci/run installs the peer and sets it")
        pytest.skip(message)
    return value


def _on_path(path: str) -> None:
    if path not in sys.path:
        sys.path.insert(0, path)


_LIBRARIES: list[torch.library.Library] = []  # a Library's definitions live only as long as the object


def _define_torchvision_ops() -> None:
    """torchvision's import registers nms/qnms from its compiled library, which does not load on this
    torch; defining the schemas first lets the pure-Python modules import."""
    try:
        library = torch.library.Library("torchvision", "DEF")
        library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        library.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _LIBRARIES.append(library)
    except RuntimeError:
        pass  # already defined in this process


def import_torchvision() -> ModuleType:
    _on_path(_path("RESNET_PORT_TORCHVISION_PATH", "torchvision cannot share this torch"))
    _define_torchvision_ops()
    import torchvision

    return torchvision


def import_timm() -> ModuleType:
    import_torchvision_path = _path("RESNET_PORT_TORCHVISION_PATH", "timm needs torchvision")
    timm_path = _path("RESNET_PORT_TIMM_PATH", "timm is installed apart, beside torchvision")
    _on_path(timm_path)
    _on_path(import_torchvision_path)
    _define_torchvision_ops()
    import timm

    return timm
