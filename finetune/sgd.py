"""`CaffeSGD`: Caffe's momentum SGD, step for step, as a PyTorch optimizer.

Caffe and PyTorch write momentum SGD differently, and the difference shows whenever the learning
rate changes::

    Caffe    v = m*v + lr*(g + wd*w);  w = w - v       (the rate is inside the velocity)
    PyTorch  v = m*v + (g + wd*w);     w = w - lr*v    (the rate multiplies the whole velocity)

With a constant rate the two give the same weights; at a step of the schedule PyTorch rescales the
momentum it has accumulated by the new rate, Caffe does not.  Weights trained in Caffe with a step
schedule (Kaiming He's ResNets among them) are only reproduced by Caffe's rule, which this class
implements, including the rest of ``SGDSolver::ApplyUpdate``: gradient clipping on the global L2
norm, normalisation by ``iter_size``, L2 or L1 weight decay, and per-parameter ``lr_mult`` /
``decay_mult``, in Caffe's order.

``nesterov=True`` is Caffe's ``NesterovSolver`` (``type: "Nesterov"``): the same ``ApplyUpdate``
with another last step.  It keeps the same history ``h`` (rate inside), and instead of stepping by
the new history it steps back over the old one and beyond the new one::

    h_prev = h;  h = m*h + lr*d;  w = w - ((1 + m)*h - m*h_prev)

With a constant rate this equals ``torch.optim.SGD(nesterov=True)``; at a change of rate it does
not, for the same reason as plain momentum.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable

import torch

from resnet_port.errors import InputError

REGULARIZATIONS = ("L2", "L1")


class CaffeSGD(torch.optim.Optimizer):
    """Momentum SGD with Caffe's update rule (``SGDSolver`` in Caffe's ``sgd_solver.cpp``).

    ``step()`` applies, in Caffe's order:

    1. ``clip_gradients`` (None or negative: off): if the L2 norm of all gradients together exceeds
       it, every gradient is scaled so the norm equals it.  Caffe clips *before* dividing by
       ``iter_size``, so the threshold applies to the summed gradient.
    2. divide by ``iter_size``: PyTorch, like Caffe, sums gradients over the backward passes run
       before a step; run ``iter_size`` backward passes per ``step()``.
    3. weight decay ``weight_decay * decay_mult``: L2 adds ``decay * w``, L1 adds ``decay * sign(w)``.
    4. ``v = momentum * v + lr * lr_mult * d`` and ``w = w - v``; with ``nesterov``,
       ``w = w - ((1 + momentum) * v - momentum * v_before)``.

    Param groups may set ``lr``, ``momentum``, ``weight_decay``, ``lr_mult``, ``decay_mult`` and
    ``regularization`` (and ``nesterov``); a torch LR scheduler that writes ``group["lr"]`` between steps (LambdaLR,
    MultiStepLR, ...) therefore gets Caffe's behaviour at every change of rate.  Like torch's SGD,
    parameters whose ``.grad`` is None are left alone.  ``.grad`` is never modified.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        regularization: str = "L2",
        *,
        lr_mult: float = 1.0,
        decay_mult: float = 1.0,
        iter_size: int = 1,
        clip_gradients: float | None = None,
        nesterov: bool = False,
    ) -> None:
        _check_hyperparameters(lr, momentum, weight_decay, regularization, lr_mult, decay_mult)
        if not isinstance(iter_size, int) or iter_size < 1:
            raise InputError(f"CaffeSGD: iter_size must be a positive integer, got {iter_size!r}")
        if clip_gradients is not None and not math.isfinite(clip_gradients):
            raise InputError(f"CaffeSGD: clip_gradients must be a finite number or None, got {clip_gradients!r}")
        defaults = dict(
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            regularization=regularization,
            lr_mult=lr_mult,
            decay_mult=decay_mult,
            nesterov=bool(nesterov),
        )
        super().__init__(params, defaults)
        self.iter_size = iter_size
        # Caffe clips on the norm of every learnable blob at once, so this is per optimizer, not per group.
        self.clip_gradients = None if clip_gradients is None or clip_gradients < 0 else float(clip_gradients)
        for group in self.param_groups:
            _check_hyperparameters(
                group["lr"], group["momentum"], group["weight_decay"], group["regularization"],
                group["lr_mult"], group["decay_mult"],
            )

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["caffe"] = {"iter_size": self.iter_size, "clip_gradients": self.clip_gradients}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        extra = state_dict.pop("caffe", None)
        super().load_state_dict(state_dict)
        if extra is not None:
            self.iter_size = int(extra["iter_size"])
            self.clip_gradients = extra["clip_gradients"]

    def _clip_scale(self) -> float:
        """Caffe's ``ClipGradients``: one factor for every gradient, from their joint L2 norm."""
        if self.clip_gradients is None:
            return 1.0
        sumsq = torch.zeros((), dtype=torch.float64)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    sumsq += p.grad.detach().to(torch.float64).pow(2).sum().cpu()
        norm = math.sqrt(float(sumsq))
        return self.clip_gradients / norm if norm > self.clip_gradients else 1.0

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        scale = self._clip_scale() / self.iter_size
        for group in self.param_groups:
            rate = group["lr"] * group["lr_mult"]
            decay = group["weight_decay"] * group["decay_mult"]
            momentum = group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad.detach()
                d = d * scale if scale != 1.0 else d.clone()
                if decay != 0:
                    if group["regularization"] == "L2":
                        d.add_(p, alpha=decay)
                    else:
                        d.add_(torch.sign(p), alpha=decay)
                state = self.state[p]
                history = state.get("momentum_buffer")
                if history is None:
                    history = state["momentum_buffer"] = torch.zeros_like(p)
                if group.get("nesterov", False):
                    # Caffe's NesterovSolver: keep the old history, update it as SGD does, then
                    # step by (1 + momentum) * new - momentum * old
                    previous = history.clone()
                    history.mul_(momentum).add_(d, alpha=rate)
                    p.sub_(previous.mul_(-momentum).add_(history, alpha=1.0 + momentum))
                else:
                    # Caffe: history = local_rate * diff + momentum * history; data -= history
                    history.mul_(momentum).add_(d, alpha=rate)
                    p.sub_(history)
        return loss


def _check_hyperparameters(
    lr: float, momentum: float, weight_decay: float, regularization: str, lr_mult: float, decay_mult: float
) -> None:
    for name, value in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay),
                        ("lr_mult", lr_mult), ("decay_mult", decay_mult)):
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InputError(f"CaffeSGD: {name} must be a finite number, got {value!r}")
    if lr < 0:
        raise InputError(f"CaffeSGD: lr must be >= 0, got {lr}")
    if not 0 <= momentum < 1:
        raise InputError(f"CaffeSGD: momentum must be in [0, 1), got {momentum}")
    if weight_decay < 0:
        raise InputError(f"CaffeSGD: weight_decay must be >= 0, got {weight_decay}")
    if regularization not in REGULARIZATIONS:
        raise InputError(f"CaffeSGD: regularization must be L2 or L1 (Caffe's regularization_type), got {regularization!r}")
