"""One small function per MXNet operator, registered under ("mxnet", op).

Each function checks the attributes that change the numbers, takes its parameters from the params
file, and returns them under the reference module's names.  MXNet's conventions are written out
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
    bn_eps: dict[str, float] = field(default_factory=dict)  # target BN module -> eps
    fixed_gamma: set[str] = field(default_factory=set)  # target BN modules with fix_gamma=True
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


OpFunction = Callable[[SymbolNode, "str | None", OpContext], dict[str, np.ndarray]]
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


def convert_node(node: SymbolNode, target: str | None, ctx: OpContext) -> dict[str, np.ndarray]:
    function = _REGISTRY.get((FRAMEWORK, node.op))
    if function is None:
        raise ConversionError(f"{ctx.graph.path}: {node.describe()} has no conversion function")
    tensors = function(node, target, ctx)
    ctx.report.layers.append({"name": node.name, "type": node.op, "targets": sorted(tensors)})
    return tensors


def _take(
    node: SymbolNode, ctx: OpContext, roles: tuple[str, ...], target: str, implicit: tuple[str, ...] = ()
) -> dict[str, np.ndarray]:
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
        out[role] = array
        ctx.report.map(f"{target}.{role}", key)
    return out


def _expect(node: SymbolNode, ctx: OpContext, what: str, found: object, expected: object) -> None:
    if found != expected:
        raise ConversionError(f"{ctx.graph.path}: {node.describe()} has {what} {found}; expected {expected}")


@register("Convolution")
def convert_convolution(node: SymbolNode, target: str | None, ctx: OpContext) -> dict[str, np.ndarray]:
    """OIHW weights, as PyTorch.  ``no_bias`` defaults to False: a conv without it has a bias."""
    if target is None:
        raise ConversionError(f"{ctx.graph.path}: {node.describe()} sits where no ResNet conv belongs")
    _expect(node, ctx, "num_group", node.attr_int("num_group", 1), 1)
    kernel = node.attr_tuple("kernel", ())
    dilate = node.attr_tuple("dilate", (1,) * len(kernel))
    _expect(node, ctx, "dilate", dilate, (1,) * len(kernel))
    _expect(node, ctx, "layout", node.attr_str("layout", "NCHW"), "NCHW")
    pad = node.attr_tuple("pad", (0,) * len(kernel))
    _expect(node, ctx, "pad", pad, tuple(k // 2 for k in kernel))  # 'same' padding, as the reference
    has_bias = not node.attr_bool("no_bias", False)
    roles = ("weight", "bias") if has_bias else ("weight",)
    tensors = _take(node, ctx, roles, target)
    weight = tensors["weight"]
    if weight.ndim != 4 or tuple(weight.shape[2:]) != kernel:
        raise ConversionError(
            f"{ctx.graph.path}: {node.describe()} has a weight of shape {weight.shape}; expected (out, in, {kernel[0]}, {kernel[1]})"
        )
    return {f"{target}.{role}": array for role, array in tensors.items()}


@register("BatchNorm")
def convert_batchnorm(node: SymbolNode, target: str | None, ctx: OpContext) -> dict[str, np.ndarray]:
    """gamma, beta, moving_mean, moving_var -> weight, bias, running_mean, running_var.

    ``fix_gamma=True`` (MXNet's default) means the forward pass uses gamma = 1 whatever the file
    stores; the stored gamma is dropped and ones are written, so no value of it can leak in.
    """
    if target is None:
        raise ConversionError(f"{ctx.graph.path}: {node.describe()} sits where no ResNet BatchNorm belongs")
    _expect(node, ctx, "axis", node.attr_int("axis", 1), 1)
    ctx.bn_eps[target] = node.attr_float("eps", MXNET_BN_EPS_DEFAULT)
    tensors = _take(
        node, ctx, ("weight", "bias", "running_mean", "running_var"), target, implicit=("moving_mean", "moving_var")
    )
    if node.attr_bool("fix_gamma", MXNET_FIX_GAMMA_DEFAULT):
        ctx.fixed_gamma.add(target)
        ctx.report.skip(ctx.report.mapped[f"{target}.weight"], "fix_gamma=True: MXNet uses gamma = 1 whatever is stored")
        tensors["weight"] = np.ones_like(tensors["weight"])
    return {f"{target}.{role}": array for role, array in tensors.items()}


@register("FullyConnected")
def convert_fully_connected(node: SymbolNode, target: str | None, ctx: OpContext) -> dict[str, np.ndarray]:
    if target is None:
        raise ConversionError(f"{ctx.graph.path}: {node.describe()} sits where no classifier belongs")
    _expect(node, ctx, "flatten", node.attr_bool("flatten", True), True)
    if node.attr_bool("no_bias", False):
        raise ConversionError(f"{ctx.graph.path}: {node.describe()} has no_bias=True; the reference classifier has a bias")
    tensors = _take(node, ctx, ("weight", "bias"), target)
    return {f"{target}.{role}": array for role, array in tensors.items()}


@register("Activation")
def convert_activation(node: SymbolNode, target: str | None, ctx: OpContext) -> dict[str, np.ndarray]:
    _expect(node, ctx, "act_type", node.attr_str("act_type", ""), "relu")
    return {}


@register("relu")
def convert_relu(node: SymbolNode, target: str | None, ctx: OpContext) -> dict[str, np.ndarray]:
    return {}


@register("Pooling")
def convert_pooling(node: SymbolNode, target: str | None, ctx: OpContext) -> dict[str, np.ndarray]:
    """Checked by the recogniser, which reads kernel, stride, pad and the rounding convention."""
    if node.attr_str("pool_type", "max") not in ("max", "avg"):
        raise ConversionError(f"{ctx.graph.path}: {node.describe()} has pool_type {node.attrs.get('pool_type')}; expected max or avg")
    return {}


@register("elemwise_add", "_Plus", "_plus", "broadcast_add", "_add", "broadcast_plus")
def convert_add(node: SymbolNode, target: str | None, ctx: OpContext) -> dict[str, np.ndarray]:
    """The residual sum; the recogniser checks what it adds."""
    return {}


@register("Flatten", "flatten")
def convert_flatten(node: SymbolNode, target: str | None, ctx: OpContext) -> dict[str, np.ndarray]:
    return {}


@register("SoftmaxOutput", "softmax", "SoftmaxActivation")
def convert_softmax(node: SymbolNode, target: str | None, ctx: OpContext) -> dict[str, np.ndarray]:
    """The converted model returns logits, as fc1 computes them; the softmax (a training head) is dropped."""
    ctx.report.skip(node.name, f"{node.op}: the converted model returns the logits before it")
    return {}


__all__ = ["OpContext", "check_supported", "convert_node", "register", "supported_ops"]
