"""The reference ResNet family that every port lands on.

Public API: `create_model(name, num_classes=1000)`, `list_archs()`, `get_spec(name)`,
`build_model(spec)`, `ResNetSpec`, and the counters `count_params` / `count_flops`.
This package knows nothing of converters or file formats.
"""

from resnet_port.resnet_ref.model import ResNet
from resnet_port.resnet_ref.profile import count_flops, count_params
from resnet_port.resnet_ref.registry import ArchInfo, arch_info, build_model, create_model, find_arch, get_spec, list_archs, state_dict_problems
from resnet_port.resnet_ref.spec import ResNetSpec

__all__ = [
    "ArchInfo",
    "ResNet",
    "ResNetSpec",
    "arch_info",
    "build_model",
    "count_flops",
    "count_params",
    "create_model",
    "find_arch",
    "get_spec",
    "list_archs",
    "state_dict_problems",
]
