"""Write reference weights as a Gluon ``save_parameters`` file: the project's own MXNet-format writer,
for demos and tests on machines without MXNet (``gluon.model_zoo.vision.get_resnet(v, depth)`` then
``load_parameters`` reads the file).  Only layouts Gluon's ResNetV1/V2 can express are accepted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from resnet_port.converters.mxnet.gluon_names import to_gluon_name
from resnet_port.converters.mxnet.ndarray import write_ndarray_file
from resnet_port.errors import ConversionError
from resnet_port.resnet_ref import ResNetSpec


def gluon_layout_problems(spec: ResNetSpec) -> list[str]:
    """Why Gluon's model zoo classes cannot build ``spec`` ([] when they can)."""
    wanted = {
        "stem": "7x7", "stem_width": 64, "stem_norm": "bn_relu", "stem_pool": "max", "shortcut": "conv",
        "v2_shortcut_input": "preactivated", "projection": "when_needed",
        "base_width": 64, "bn_eps": 1e-5, "bn_eps_overrides": (), "head_pool": "global",
        "input_bn": "none" if spec.residual == "v1" else "affine_free",
        "stride_in": "1x1" if spec.residual == "v1" else "3x3",
        "conv_bias": ("conv1", "conv3") if spec.residual == "v1" and spec.block == "bottleneck" else (),
    }
    return [f"{key}={getattr(spec, key)!r} (Gluon: {value!r})" for key, value in wanted.items() if getattr(spec, key) != value]


def gluon_parameters(spec: ResNetSpec, state_dict: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """The arrays of a save_parameters file, in Gluon's names, for a Gluon-expressible spec."""
    problems = gluon_layout_problems(spec)
    if problems:
        raise ConversionError(f"Gluon's ResNet{spec.residual.upper()} cannot express this spec: {'; '.join(problems)}")
    out: dict[str, np.ndarray] = {}
    for name, tensor in state_dict.items():
        gluon = to_gluon_name(name, spec.residual, len(spec.layers))
        if gluon is None:
            if name.endswith("num_batches_tracked"):
                continue
            raise ConversionError(f"tensor {name!r} has no place in a Gluon ResNet {spec.residual.upper()}")
        out[gluon] = tensor.detach().cpu().numpy().astype(np.float32)
    if spec.residual == "v2":
        # BatchNorm(scale=False, center=False) still stores gamma and beta: the values Gluon never changes.
        out["features.0.gamma"] = np.ones(spec.in_chans, np.float32)
        out["features.0.beta"] = np.zeros(spec.in_chans, np.float32)
    return out


def write_gluon_parameters(path: str | Path, spec: ResNetSpec, state_dict: Mapping[str, torch.Tensor]) -> Path:
    """Write ``state_dict`` as Gluon's ``save_parameters`` would (atomically)."""
    return write_ndarray_file(path, gluon_parameters(spec, state_dict))


__all__ = ["gluon_layout_problems", "gluon_parameters", "write_gluon_parameters"]
