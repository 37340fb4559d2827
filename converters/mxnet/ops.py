"""One small function per MXNet operator, registered under ("mxnet", op).

Each function checks the attributes that change the numbers, takes its parameters from the params
file, and returns the shared skeleton's record of the layer (`converters.skeleton`), every tensor
named by its params key.  MXNet's conventions are written out
where they apply: BatchNorm's ``fix_gamma`` (gamma is 1 whatever is stored; the default is True),
its per-node ``eps`` (default 1e-3, the classic ResNet uses 2e-5, Gluon 1e-5), ``no_bias`` on
convolutions (default False), and ``gamma/beta/moving_mean/moving_var`` (symbol API) versus
``running_mean/running_var`` (Gluon) for the statistics.  An operator without a function here
stops the conversion with an error that names the operator and the node.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from resnet_port.converters.common import ConversionReport
from resnet_port.converters.mxnet.symbol import SymbolGraph, SymbolNode
from resnet_port.converters.skeleton import BatchNorm, Conv, Linear, SourceLayer, SourceTensor
from resnet_port.errors import ConversionError

FRAMEWORK = "mxnet"
MXNET_BN_EPS_DEFAULT = 1e-3  # mx.sym.BatchNorm's default, used when the JSON leaves eps out
MXNET_FIX_GAMMA_DEFAULT = True  # mx.sym.BatchNorm's default, used when the JSON leaves fix_gamma out


@dataclass
class OpContext:
    """What an operator function reads from (the graph, the parameters) and writes to (the report)."""

    graph: SymbolGraph
    params: dict[str, np.ndarray]  # the params file, names as stored ("arg:conv0_weight", ...)
    report: ConversionReport
    used: set[str] = field(default_factory=set)

    def param(self, variable: SymbolNode | str, user: SymbolNode) -> tuple[str, np.ndarray]:
        """The stored array of a variable (or variable name): ``arg:NAME`` / ``aux:NAME`` (export,
        save_checkpoint) or ``NAME``."""
        name = variable if isinstance(variable, str) else variable.name
        for key in (f"arg:{name}", f"aux:{name}", name):
            if key in self.params:
                self.used.add(key)
                return key, self.params[key]
        raise ConversionError(
            f"{self.graph.path}: the params file has no tensor for {name!r} (input of {user.describe()}); "
            f"expected 'arg:{name}' or 'aux:{name}'"
        )


OpFunction = Callable[[SymbolNode, OpContext], "Conv | BatchNorm | Linear | None"]
_REGISTRY: dict[tuple[str, str], OpFunction] = {}


def register(*ops: str) -> Callable[[OpFunction], OpFunction]:
    def decorate(function: OpFunction) -> OpFunction:
        for op in ops:
            key = (FRAMEWORK, op)
            if key in _REGISTRY:
                raise RuntimeError(f"MXNet op {op!r} is registered twice: {_REGISTRY[key].__name__} and {function.__name__}")
            _REGISTRY[key] = function
        return function

    return decorate


def supported_ops() -> list[str]:
    return sorted(op for framework, op in _REGISTRY if framework == FRAMEWORK)


def check_supported(graph: SymbolGraph) -> None:
    """Refuse the graph at its first operator that has no conversion function."""
    for node in graph.operators():
        if (FRAMEWORK, node.op) not in _REGISTRY:
            raise ConversionError(
                f"{graph.path}: {node.describe()} is an operator convert-mxnet does not know; "
                f"known: {', '.join(supported_ops())}"
            )


def convert_node(node: SymbolNode, ctx: OpContext) -> Conv | BatchNorm | Linear | None:
    """The skeleton record of one operator (a Conv, a BatchNorm, the Linear), or None for operators
    without parameters; each function checks the attributes that change the numbers."""
    function = _REGISTRY.get((FRAMEWORK, node.op))
    if function is None:
        raise ConversionError(f"{ctx.graph.path}: {node.describe()} has no conversion function")
    return function(node, ctx)


def _take(node: SymbolNode, ctx: OpContext, roles: tuple[str, ...], implicit: tuple[str, ...] = ()) -> dict[str, SourceTensor]:
    """Pair an operator's parameter inputs with its argument roles (MXNet's fixed argument order).

    ``implicit`` names the roles a graph may leave out of the node's inputs (a pre-0.9 symbol lists
    no auxiliary states); they are then found under the names MXNet gives them, ``NODE_<suffix>``.
    """
    variables: list[SymbolNode | str] = list(ctx.graph.variable_inputs(node))
    if implicit and len(variables) == len(roles) - len(implicit):
        variables += [f"{node.name}_{suffix}" for suffix in implicit]
    if len(variables) != len(roles):
        raise ConversionError(
            f"{ctx.graph.path}: {node.describe()} has {len(variables)} parameter inputs; expected {len(roles)} ({', '.join(roles)})"
        )
    out = {}
    for role, variable in zip(roles, variables):
        key, array = ctx.param(variable, node)
        out[role] = SourceTensor(array, key)
    return out


def _expect(node: SymbolNode, ctx: OpContext, what: str, found: object, expected: object) -> None:
    if found != expected:
        raise ConversionError(f"{ctx.graph.path}: {node.describe()} has {what} {found}; expected {expected}")


@register("Convolution")
def convert_convolution(node: SymbolNode, ctx: OpContext) -> Conv:
    """OIHW weights, as PyTorch.  ``no_bias`` defaults to False: a conv without it has a bias.
    Kernel, stride, pad, dilation and groups go on the record; `converters.build` checks them."""
    kernel = node.attr_tuple("kernel", ())
    _expect(node, ctx, "layout", node.attr_str("layout", "NCHW"), "NCHW")
    if len(kernel) != 2:
        raise ConversionError(f"{ctx.graph.path}: {node.describe()} has kernel {kernel}; expected a 2-D convolution")
    has_bias = not node.attr_bool("no_bias", False)
    tensors = _take(node, ctx, ("weight", "bias") if has_bias else ("weight",))
    weight = tensors["weight"].array
    if weight.ndim != 4 or tuple(weight.shape[2:]) != kernel:
        raise ConversionError(
            f"{ctx.graph.path}: {node.describe()} has a weight of shape {weight.shape}; expected (out, in, {kernel[0]}, {kernel[1]})"
        )
    ph, pw = node.attr_tuple("pad", (0, 0))
    return Conv(
        label=node.describe(),
        layer=SourceLayer(node.name, node.op),
        weight=tensors["weight"],
        bias=tensors.get("bias"),
        stride=node.attr_tuple("stride", (1, 1)),
        pad=(ph, pw, ph, pw),
        dilation=node.attr_tuple("dilate", (1, 1)),
        groups=node.attr_int("num_group", 1),
    )


@register("BatchNorm")
def convert_batchnorm(node: SymbolNode, ctx: OpContext) -> BatchNorm:
    """gamma, beta, moving_mean, moving_var, with the node's eps (default 1e-3) and ``fix_gamma``
    (default True: the forward pass uses gamma = 1 whatever the file stores)."""
    _expect(node, ctx, "axis", node.attr_int("axis", 1), 1)
    tensors = _take(node, ctx, ("gamma", "beta", "running_mean", "running_var"), implicit=("moving_mean", "moving_var"))
    return BatchNorm(
        label=node.describe(),
        layers=[SourceLayer(node.name, node.op)],
        eps=node.attr_float("eps", MXNET_BN_EPS_DEFAULT),
        running_mean=tensors["running_mean"],
        running_var=tensors["running_var"],
        gamma=tensors["gamma"],
        beta=tensors["beta"],
        fix_gamma=node.attr_bool("fix_gamma", MXNET_FIX_GAMMA_DEFAULT),
    )


@register("FullyConnected")
def convert_fully_connected(node: SymbolNode, ctx: OpContext) -> Linear:
    _expect(node, ctx, "flatten", node.attr_bool("flatten", True), True)
    if node.attr_bool("no_bias", False):
        raise ConversionError(f"{ctx.graph.path}: {node.describe()} has no_bias=True; the reference classifier has a bias")
    tensors = _take(node, ctx, ("weight", "bias"))
    return Linear(node.describe(), SourceLayer(node.name, node.op), tensors["weight"], tensors["bias"])


@register("Activation")
def convert_activation(node: SymbolNode, ctx: OpContext) -> None:
    _expect(node, ctx, "act_type", node.attr_str("act_type", ""), "relu")


@register("relu")
def convert_relu(node: SymbolNode, ctx: OpContext) -> None:
    return None


@register("Pooling")
def convert_pooling(node: SymbolNode, ctx: OpContext) -> None:
    """Kernel, stride, pad and rounding go on the skeleton's `Pool` (recognise.pool_record)."""
    if node.attr_str("pool_type", "max") not in ("max", "avg"):
        raise ConversionError(f"{ctx.graph.path}: {node.describe()} has pool_type {node.attrs.get('pool_type')}; expected max or avg")


@register("elemwise_add", "_Plus", "_plus", "broadcast_add", "_add", "broadcast_plus")
def convert_add(node: SymbolNode, ctx: OpContext) -> None:
    """The residual sum; the recogniser checks what it adds."""


@register("Flatten", "flatten")
def convert_flatten(node: SymbolNode, ctx: OpContext) -> None:
    return None


@register("SoftmaxOutput", "softmax", "SoftmaxActivation")
def convert_softmax(node: SymbolNode, ctx: OpContext) -> None:
    """The converted model returns logits, as fc1 computes them; the softmax (a training head) is dropped."""
    ctx.report.skip(node.name, f"{node.op}: the converted model returns the logits before it")


__all__ = ["OpContext", "check_supported", "convert_node", "register", "supported_ops"]
