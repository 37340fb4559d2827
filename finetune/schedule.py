"""Caffe's learning-rate policies (``SGDSolver::GetLearningRate``) as one typed record.

Every policy is ``base_lr * factor(iter)``, where ``iter`` counts weight updates (not forward passes:
with ``iter_size`` > 1 one iteration is several batches).  The update made at iteration ``i``
(0-based) uses ``lr_at(i)``.  ``factor`` plugs straight into ``torch.optim.lr_scheduler.LambdaLR``
stepped once per iteration, so each param group keeps its own multiplier.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from resnet_port.errors import InputError

LR_POLICIES = ("fixed", "step", "multistep", "exp", "inv", "poly", "sigmoid")


@dataclass(frozen=True)
class CaffeLRPolicy:
    """``lr_policy`` with the solver fields it reads.

    fixed      base_lr
    step       base_lr * gamma ^ floor(iter / stepsize)
    multistep  base_lr * gamma ^ (steps taken by iter; see below)
    exp        base_lr * gamma ^ iter
    inv        base_lr * (1 + gamma * iter) ^ (-power)
    poly       base_lr * (1 - iter / max_iter) ^ power
    sigmoid    base_lr / (1 + exp(-gamma * (iter - stepsize)))

    Caffe's multistep keeps a counter that advances by at most one per iteration, when the
    iteration has reached the next ``stepvalue``: a repeated or out-of-order ``stepvalue`` therefore
    takes effect one iteration later than it reads.  This record reproduces that exactly.  Caffe
    computes the rate in the net's float type; here it is double precision (same to ~1e-7).
    """

    policy: str
    base_lr: float
    gamma: float = 0.0
    power: float = 0.0
    stepsize: int = 0
    stepvalues: tuple[int, ...] = field(default_factory=tuple)
    max_iter: int = 0

    def __post_init__(self) -> None:
        if self.policy not in LR_POLICIES:
            raise InputError(f"unknown lr_policy {self.policy!r}; Caffe knows {', '.join(LR_POLICIES)}")
        object.__setattr__(self, "stepvalues", tuple(int(v) for v in self.stepvalues))
        if self.policy == "step" and self.stepsize <= 0:
            raise InputError(f"lr_policy step needs stepsize > 0, got {self.stepsize}")
        if self.policy == "poly" and self.max_iter <= 0:
            raise InputError(f"lr_policy poly needs max_iter > 0, got {self.max_iter}")
        if self.policy in ("step", "multistep", "exp", "inv") and self.gamma < 0:
            raise InputError(f"lr_policy {self.policy} needs gamma >= 0, got {self.gamma}")

    def factor(self, it: int) -> float:
        """lr_at(it) / base_lr; usable as a LambdaLR ``lr_lambda``."""
        try:
            return self._factor(it)
        except OverflowError as exc:
            raise InputError(f"lr_policy {self.policy}: the rate overflows at iteration {it} (gamma {self.gamma})") from exc

    def _factor(self, it: int) -> float:
        p = self.policy
        if p == "fixed":
            return 1.0
        if p == "step":
            return self.gamma ** (it // self.stepsize)
        if p == "multistep":
            return self.gamma ** self.steps_taken(it)
        if p == "exp":
            return self.gamma ** it
        if p == "inv":
            return (1.0 + self.gamma * it) ** (-self.power)
        if p == "poly":
            if it > self.max_iter:
                raise InputError(f"lr_policy poly is undefined past max_iter {self.max_iter} (asked for iteration {it})")
            return (1.0 - it / self.max_iter) ** self.power
        try:  # sigmoid
            return 1.0 / (1.0 + math.exp(-self.gamma * (it - self.stepsize)))
        except OverflowError:  # exp(+large): Caffe's float gives inf, hence a rate of 0
            return 0.0

    def __call__(self, it: int) -> float:
        return self.factor(it)

    def lr_at(self, it: int) -> float:
        if it < 0:
            raise InputError(f"iteration must be >= 0, got {it}")
        return self.base_lr * self.factor(it)

    def step_iterations(self) -> list[int]:
        """The iteration at which each multistep step is taken: stepvalue[c], or one after the
        previous step if that is later (Caffe advances its counter at most once per iteration)."""
        taken: list[int] = []
        for value in self.stepvalues:
            taken.append(max(value, taken[-1] + 1) if taken else max(value, 0))
        return taken

    def steps_taken(self, it: int) -> int:
        return sum(1 for t in self.step_iterations() if t <= it)

    def boundaries(self) -> list[int]:
        """Iterations at which a step policy changes the rate (within max_iter when it is set)."""
        if self.policy == "step":
            end = self.max_iter if self.max_iter > 0 else self.stepsize * 10
            return list(range(self.stepsize, end + 1, self.stepsize))
        if self.policy == "multistep":
            return sorted({t for t in self.step_iterations() if t > 0 and (self.max_iter <= 0 or t <= self.max_iter)})
        return []

    def default_table_iterations(self) -> list[int]:
        """0, every step boundary and max_iter: the iterations `convert-solver` tabulates by default."""
        points = {0, *self.boundaries()}
        if self.max_iter > 0:
            points.add(self.max_iter)
        return sorted(points)

    def is_constant(self) -> bool:
        """Whether the rate is the same for every update from 0 to max_iter - 1."""
        if self.policy == "fixed":
            return True
        if self.max_iter > 0:
            first = self.factor(0)
            return all(self.factor(i) == first for i in self._change_candidates())
        return False

    def _change_candidates(self) -> list[int]:
        """Iterations where a change would first show (all of them for the smooth policies)."""
        if self.policy == "step":
            return [0, *[b for b in self.boundaries() if b < self.max_iter]]
        if self.policy == "multistep":
            return [0, *[t for t in self.step_iterations() if t < self.max_iter]]
        return range(self.max_iter)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"lr_policy": self.policy, "base_lr": self.base_lr}
        if self.policy in ("step", "multistep", "exp", "inv", "sigmoid"):
            out["gamma"] = self.gamma
        if self.policy in ("inv", "poly"):
            out["power"] = self.power
        if self.policy in ("step", "sigmoid"):
            out["stepsize"] = self.stepsize
        if self.policy == "multistep":
            out["stepvalue"] = list(self.stepvalues)
        out["max_iter"] = self.max_iter
        return out
