"""Hyper-parameters of momentum SGD between its three conventions, and when no exact match exists.

    caffe      v = m*v + lr*(g + wd*w);          w = w - v
    pytorch    v = m*v + (g + wd*w);             w = w - lr*v
    unit_gain  v = m*v + (1-m)*lr*(g + wd*w);    w = w - v     (quoted by Kaiming He's release notes)

In every form ``g + wd*w`` is the L2-regularised gradient, so momentum and weight decay carry over
unchanged; only the rate moves.  Caffe and unit-gain both keep the rate inside the velocity, so
``lr_caffe = (1-m) * lr_unit_gain`` holds at every iteration and the conversion is exact for any
schedule.  PyTorch multiplies the whole velocity by the *current* rate: with a constant rate
``lr_pytorch = lr_caffe`` is exact, but at each change of rate PyTorch rescales the momentum already
accumulated and Caffe does not, so no choice of hyper-parameters for ``torch.optim.SGD`` reproduces a
changing Caffe schedule (use `finetune.CaffeSGD`).  With zero momentum all three coincide.
"""

from __future__ import annotations

from dataclasses import dataclass

from resnet_port.errors import InputError

CONVENTIONS = ("caffe", "pytorch", "unit_gain")


@dataclass(frozen=True)
class SGDHyperParams:
    """One set of momentum-SGD hyper-parameters and the convention they are written in."""

    lr: float
    momentum: float = 0.0
    weight_decay: float = 0.0
    convention: str = "caffe"

    def __post_init__(self) -> None:
        if self.convention not in CONVENTIONS:
            raise InputError(f"unknown SGD convention {self.convention!r}; expected one of {', '.join(CONVENTIONS)}")
        if not 0 <= self.momentum < 1:
            raise InputError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.lr < 0 or self.weight_decay < 0:
            raise InputError(f"lr and weight_decay must be >= 0, got lr={self.lr}, weight_decay={self.weight_decay}")


@dataclass(frozen=True)
class HyperParamConversion:
    """The converted hyper-parameters; ``exact`` False means the target cannot reproduce the source."""

    source: SGDHyperParams
    target: SGDHyperParams
    exact: bool
    reason: str

    @property
    def lr_scale(self) -> float:
        """target lr / source lr: apply it to every rate of a schedule."""
        return self.target.lr / self.source.lr if self.source.lr else _rate_factor(self.source, self.target.convention)

    def to_dict(self) -> dict[str, object]:
        return {
            "source": vars(self.source).copy(),
            "target": vars(self.target).copy(),
            "lr_scale": self.lr_scale,
            "exact": self.exact,
            "reason": self.reason,
        }


def _rate_factor(hp: SGDHyperParams, target: str) -> float:
    """The factor from ``hp``'s rate to the Caffe-equivalent rate, then to ``target``'s."""
    m = hp.momentum
    to_caffe = (1 - m) if hp.convention == "unit_gain" else 1.0
    from_caffe = 1 / (1 - m) if target == "unit_gain" else 1.0
    return to_caffe * from_caffe


def convert_hyperparams(hp: SGDHyperParams, target: str, lr_changes: bool = False) -> HyperParamConversion:
    """Rewrite ``hp`` in the ``target`` convention.

    ``lr_changes`` says whether the rate changes during training (any schedule other than a constant
    rate).  The result is always the best conversion there is; ``exact`` says whether it reproduces
    the source update for update, and ``reason`` says why not.
    """
    if target not in CONVENTIONS:
        raise InputError(f"unknown SGD convention {target!r}; expected one of {', '.join(CONVENTIONS)}")
    converted = SGDHyperParams(hp.lr * _rate_factor(hp, target), hp.momentum, hp.weight_decay, target)
    pytorch_involved = "pytorch" in (hp.convention, target) and hp.convention != target
    if hp.momentum == 0:
        return HyperParamConversion(hp, converted, True, "momentum is 0: the three conventions coincide")
    if not pytorch_involved:
        reason = "same convention" if hp.convention == target else (
            "both keep the rate inside the velocity: lr_caffe = (1 - momentum) * lr_unit_gain at every iteration"
        )
        return HyperParamConversion(hp, converted, True, reason)
    if not lr_changes:
        return HyperParamConversion(
            hp, converted, True, "constant rate: the velocities differ by the constant factor lr and the steps are equal"
        )
    return HyperParamConversion(
        hp,
        converted,
        False,
        "the rate changes: PyTorch rescales the accumulated momentum by the new rate at every change and "
        "Caffe-style rules do not, so no torch.optim.SGD hyper-parameters are exact; use finetune.CaffeSGD "
        "(or scale torch SGD's momentum buffers by lr_old / lr_new at each change)",
    )
