"""Reading a Caffe ``solver.prototxt`` into a typed `SolverConfig`.

The SolverParameter schema is part of the toolkit's one run-time Caffe schema
(`converters.caffe.schema`, built from BVLC ``caffe.proto``'s names and numbers), and the text is parsed strictly with protobuf's
``text_format``, so a misspelt field is an error naming the line rather than a silently ignored
setting.  Inline nets (``net_param``, ``train_net_param``, ``test_net_param``) are not read here:
the net's ``param { lr_mult decay_mult }`` entries come from ``--net`` (see `finetune.net_params`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import text_format

from resnet_port.converters.caffe.schema import message_class
from resnet_port.finetune.schedule import CaffeLRPolicy
from resnet_port.errors import InputError

_INLINE_NETS = ("net_param", "train_net_param", "test_net_param")
# Caffe's UpgradeSolverType: the deprecated enum's names as the string ``type`` spells them.
_SOLVER_TYPE_NAMES = {"SGD": "SGD", "NESTEROV": "Nesterov", "ADAGRAD": "AdaGrad",
                      "RMSPROP": "RMSProp", "ADADELTA": "AdaDelta", "ADAM": "Adam"}
# The solver types reproduced (Caffe's SGDSolver and NesterovSolver); the others are refused by name.
SUPPORTED_TYPES = ("SGD", "Nesterov")
# Fields that decide the SGD / Nesterov update or name the net; every other field set is reported as ignored.
USED_FIELDS = frozenset({
    "base_lr", "lr_policy", "gamma", "power", "stepsize", "stepvalue", "max_iter", "momentum", "weight_decay",
    "regularization_type", "clip_gradients", "iter_size", "type", "solver_type", "net", "train_net",
})
# Fields of the other solver types (AdaGrad/RMSProp/AdaDelta/Adam): SGD and Nesterov never read them.
_OTHER_SOLVER_FIELDS = frozenset({"delta", "momentum2", "rms_decay"})


class SolverError(InputError):
    """A solver file cannot be read, or asks for something this toolkit cannot reproduce."""


def solver_message_class() -> type:
    """The ``caffe.SolverParameter`` message class, from the toolkit's one Caffe schema."""
    return message_class("SolverParameter")


def _declared(value: float) -> float:
    """The decimal the file spelled: protobuf stores floats as float32, 0.1 reads back as 0.10000000149."""
    return float(str(np.float32(value)))


@dataclass(frozen=True)
class SolverConfig:
    """What a Caffe SGD solver says about optimisation (the rest of the file is recorded, not used)."""

    path: str
    base_lr: float
    momentum: float
    weight_decay: float
    regularization: str
    schedule: CaffeLRPolicy
    max_iter: int
    iter_size: int = 1
    clip_gradients: float | None = None
    solver_type: str = "SGD"
    net: str | None = None
    fields_set: tuple[str, ...] = field(default_factory=tuple)

    @property
    def nesterov(self) -> bool:
        return self.solver_type == "Nesterov"

    @property
    def ignored_fields(self) -> tuple[str, ...]:
        """Fields set in the file that do not change the update (testing, snapshots, devices, display,
        other solver types' fields): read, then ignored, and listed in the plan's notes."""
        return tuple(f for f in self.fields_set if f not in USED_FIELDS)

    @property
    def lr_policy(self) -> str:
        return self.schedule.policy

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "type": self.solver_type,
            "base_lr": self.base_lr,
            "momentum": self.momentum,
            "weight_decay": self.weight_decay,
            "regularization_type": self.regularization,
            **{k: v for k, v in self.schedule.to_dict().items() if k not in ("base_lr",)},
            "iter_size": self.iter_size,
            "clip_gradients": self.clip_gradients,
            "net": self.net,
            "ignored_fields": list(self.ignored_fields),
        }


def parse_solver_text(text: str, where: str = "<solver>") -> Any:
    """The SolverParameter message of a solver written in protobuf text format."""
    message = solver_message_class()()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as exc:
        detail = str(exc)
        inline = next((name for name in _INLINE_NETS if f'"{name}"' in detail), None)
        if inline:
            raise SolverError(
                f"{where}: an inline {inline} is not read; save the net to a file and pass it with --net"
            ) from exc
        raise SolverError(f"{where}: not a valid Caffe solver: {detail}") from exc
    return message


def read_solver(path: str | Path) -> SolverConfig:
    """Read ``path`` (protobuf text) into a `SolverConfig`, refusing what Caffe's SGD would not run."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        raise SolverError(f"{path}: no such file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise SolverError(f"{path}: cannot read the solver as text ({exc})") from exc
    return solver_config(parse_solver_text(text, str(path)), str(path))


def solver_config(message: Any, where: str) -> SolverConfig:
    """Check a parsed SolverParameter and extract the SGD settings."""
    solver_type = message.type
    if message.HasField("solver_type"):
        enum_name = message.DESCRIPTOR.fields_by_name["solver_type"].enum_type.values_by_number[message.solver_type].name
        legacy = _SOLVER_TYPE_NAMES[enum_name]
        if message.HasField("type") and message.type != legacy:
            raise SolverError(f"{where}: solver_type {enum_name} contradicts type {message.type!r}")
        solver_type = legacy
    if solver_type not in SUPPORTED_TYPES:
        raise SolverError(
            f"{where}: solver type {solver_type!r} is not supported; convert-solver reproduces Caffe's momentum "
            "SGD (type: \"SGD\") and Nesterov (type: \"Nesterov\", or solver_type: NESTEROV) solvers only"
        )
    if not message.HasField("lr_policy"):
        raise SolverError(f"{where}: lr_policy is not set (Caffe refuses an empty policy); expected one of "
                          "fixed, step, multistep, exp, inv, poly, sigmoid")
    if not message.HasField("base_lr"):
        raise SolverError(f"{where}: base_lr is not set")
    if message.regularization_type not in ("L2", "L1"):
        raise SolverError(f"{where}: regularization_type must be L2 or L1, got {message.regularization_type!r}")
    if message.iter_size < 1:
        raise SolverError(f"{where}: iter_size must be >= 1, got {message.iter_size}")
    momentum = _declared(message.momentum)
    if not 0 <= momentum < 1:
        raise SolverError(f"{where}: momentum must be in [0, 1), got {momentum}")
    try:
        schedule = CaffeLRPolicy(
            policy=message.lr_policy,
            base_lr=_declared(message.base_lr),
            gamma=_declared(message.gamma),
            power=_declared(message.power),
            stepsize=int(message.stepsize),
            stepvalues=tuple(message.stepvalue),
            max_iter=int(message.max_iter),
        )
    except InputError as exc:
        raise SolverError(f"{where}: {exc}") from exc
    clip = _declared(message.clip_gradients)
    return SolverConfig(
        path=where,
        base_lr=schedule.base_lr,
        momentum=momentum,
        weight_decay=_declared(message.weight_decay),
        regularization=message.regularization_type,
        schedule=schedule,
        max_iter=int(message.max_iter),
        iter_size=int(message.iter_size),
        clip_gradients=None if clip < 0 else clip,
        solver_type=solver_type,
        net=(message.net or message.train_net) or None,
        fields_set=tuple(f.name for f, _ in message.ListFields()),
    )
