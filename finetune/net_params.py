"""The ``param { lr_mult decay_mult }`` of every learnable blob in a Caffe train net.

Caffe gives each layer's blobs, in order, the layer's ``param`` entries; a blob past the last entry
gets ``lr_mult: 1 decay_mult: 1``.  Which blobs a layer has depends on its type (a Convolution has
a bias only with ``bias_term``, a Scale a beta only with ``bias_term``), so each type has a small
function, registered under ("caffe", type), that names its blobs.  A type with no function and not
known to be weightless is an error naming the layer: an unknown layer could hold weights whose
multipliers would otherwise be dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from resnet_port.errors import InputError

FRAMEWORK = "caffe"
TRAIN_PHASE = 0

BlobRoles = Callable[[Any], tuple[str, ...]]
_ROLES: dict[tuple[str, str], BlobRoles] = {}

# Layer types that own no blobs: data, activations, pooling, joins, losses and metrics.
WEIGHTLESS_TYPES = frozenset({
    "Data", "ImageData", "Input", "DummyData", "HDF5Data", "MemoryData", "WindowData", "Python",
    "ReLU", "Sigmoid", "TanH", "ELU", "AbsVal", "Power", "Exp", "Log", "BNLL", "Threshold",
    "Pooling", "Eltwise", "Concat", "Split", "Slice", "Flatten", "Reshape", "Crop", "Silence",
    "Dropout", "LRN", "Softmax", "SoftmaxWithLoss", "Accuracy", "EuclideanLoss", "SigmoidCrossEntropyLoss",
    "HingeLoss", "InfogainLoss", "MultinomialLogisticLoss", "ArgMax", "MVN", "Tile", "Reduction",
})


class NetParamsError(InputError):
    """A train net whose learnable blobs cannot be listed."""


def blob_roles(layer_type: str) -> Callable[[BlobRoles], BlobRoles]:
    """Register the function naming the blobs of a Caffe layer type; a second registration raises."""

    def register(fn: BlobRoles) -> BlobRoles:
        key = (FRAMEWORK, layer_type)
        if key in _ROLES:
            raise ValueError(f"blob roles for {key} are registered twice: {_ROLES[key].__name__} and {fn.__name__}")
        _ROLES[key] = fn
        return fn

    return register


@blob_roles("Convolution")
def convolution_blobs(layer: Any) -> tuple[str, ...]:
    return ("weight", "bias") if layer.convolution_param.bias_term else ("weight",)


@blob_roles("Deconvolution")
def deconvolution_blobs(layer: Any) -> tuple[str, ...]:
    return convolution_blobs(layer)


@blob_roles("InnerProduct")
def inner_product_blobs(layer: Any) -> tuple[str, ...]:
    return ("weight", "bias") if layer.inner_product_param.bias_term else ("weight",)


@blob_roles("Scale")
def scale_blobs(layer: Any) -> tuple[str, ...]:
    # With two bottoms the scale is an input, not a blob; only the optional bias remains.
    own_scale = ("scale",) if len(layer.bottom) < 2 else ()
    return own_scale + (("bias",) if layer.scale_param.bias_term else ())


@blob_roles("Bias")
def bias_blobs(layer: Any) -> tuple[str, ...]:
    return ("bias",) if len(layer.bottom) < 2 else ()


@blob_roles("BatchNorm")
def batch_norm_blobs(layer: Any) -> tuple[str, ...]:
    return ("mean", "variance", "moving_average_fraction")


@blob_roles("PReLU")
def prelu_blobs(layer: Any) -> tuple[str, ...]:
    return ("slope",)


# Caffe's BatchNorm masks its statistics from the solver (it forces lr_mult 0 on them): in PyTorch
# they are buffers, which no optimizer sees.
STATISTICS = {("BatchNorm", "mean"), ("BatchNorm", "variance"), ("BatchNorm", "moving_average_fraction")}


@dataclass(frozen=True)
class BlobMultipliers:
    """One learnable blob of the train net and the multipliers Caffe's solver applies to it."""

    layer: str
    layer_type: str
    index: int
    role: str
    lr_mult: float
    decay_mult: float
    trained: bool  # False for BatchNorm statistics, which Caffe masks from the solver

    @property
    def blob_id(self) -> str:
        """``layer.blobs[i]``: how the converters name a Caffe blob in their reports."""
        return f"{self.layer}.blobs[{self.index}]"

    def to_dict(self) -> dict[str, Any]:
        return {"blob": self.blob_id, "layer_type": self.layer_type, "role": self.role,
                "lr_mult": self.lr_mult, "decay_mult": self.decay_mult, "trained": self.trained}


def in_train_phase(layer: Any) -> bool:
    """Caffe's NetStateRule filter for the TRAIN net (phase only; levels and stages are not used)."""
    if layer.include:
        return any(not rule.HasField("phase") or rule.phase == TRAIN_PHASE for rule in layer.include)
    return not any(rule.HasField("phase") and rule.phase == TRAIN_PHASE for rule in layer.exclude)


def _declared(value: float) -> float:
    import numpy as np

    return float(str(np.float32(value)))  # the decimal written, not its float32 neighbour


def net_multipliers(net: Any, where: str) -> list[BlobMultipliers]:
    """Every blob of the TRAIN-phase layers of ``net`` (a caffe NetParameter), in file order."""
    out = []
    for layer in net.layer:
        if not in_train_phase(layer):
            continue
        fn = _ROLES.get((FRAMEWORK, layer.type))
        if fn is None:
            if layer.type in WEIGHTLESS_TYPES and not layer.param:
                continue
            raise NetParamsError(
                f"{where}: layer {layer.name!r} has type {layer.type!r}, whose blobs convert-solver does not know"
                + (f" (it has {len(layer.param)} param entries)" if layer.param else "")
            )
        roles = fn(layer)
        if len(layer.param) > len(roles):
            raise NetParamsError(
                f"{where}: layer {layer.name!r} ({layer.type}) has {len(layer.param)} param entries for "
                f"{len(roles)} blobs ({', '.join(roles) or 'none'})"
            )
        for index, role in enumerate(roles):
            spec = layer.param[index] if index < len(layer.param) else None
            lr_mult = _declared(spec.lr_mult) if spec is not None else 1.0
            decay_mult = _declared(spec.decay_mult) if spec is not None else 1.0
            out.append(BlobMultipliers(layer.name, layer.type, index, role, lr_mult, decay_mult,
                                       (layer.type, role) not in STATISTICS))
    return out


def read_net_multipliers(path: str | Path) -> list[BlobMultipliers]:
    """The blobs of a train_val prototxt with their multipliers (read by converters.caffe)."""
    from resnet_port.converters.caffe import read_prototxt

    net = read_prototxt(path)
    return net_multipliers(net, str(path))
