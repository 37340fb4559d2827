"""From a Caffe solver (and its train net) to the PyTorch optimizer and scheduler that reproduce it.

The plan chooses ``torch.optim.SGD`` only when it is exact, and says why: the rate never changes
during the run (or momentum is 0), L2 decay, no gradient clipping.  Otherwise it chooses
`finetune.CaffeSGD`.  Parameter groups are the distinct ``(lr_mult, decay_mult)`` pairs of the
net; they are tied to the reference model's parameters through a Caffe conversion report
(``reference key -> "layer.blobs[i]"``), matched whole, never by substring.  The scheduler is a
``LambdaLR`` over `CaffeLRPolicy`, i.e. Caffe's own formula, stepped once per iteration.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import torch

from resnet_port.finetune.conventions import SGDHyperParams, convert_hyperparams
from resnet_port.finetune.net_params import BlobMultipliers
from resnet_port.finetune.schedule import CaffeLRPolicy
from resnet_port.finetune.sgd import CaffeSGD
from resnet_port.finetune.solver import SolverConfig
from resnet_port.errors import InputError

_BLOB_ID = re.compile(r"^(?P<layer>.+)\.blobs\[(?P<index>\d+)\]$")
# Torch-native schedulers that equal Caffe's policy (shown for readers; LambdaLR is what is built).
_NATIVE = {
    "step": lambda s: f"StepLR(optimizer, step_size={s.stepsize}, gamma={s.gamma})",
    "multistep": lambda s: f"MultiStepLR(optimizer, milestones={s.boundaries()}, gamma={s.gamma})",
    "exp": lambda s: f"ExponentialLR(optimizer, gamma={s.gamma})",
}


@dataclass
class GroupPlan:
    """One parameter group: every blob with this (lr_mult, decay_mult)."""

    lr_mult: float
    decay_mult: float
    blobs: list[str] = field(default_factory=list)  # Caffe "layer.blobs[i]"
    params: list[str] = field(default_factory=list)  # reference state-dict keys, when a mapping is known

    @property
    def name(self) -> str:
        return f"lr_mult={self.lr_mult:g},decay_mult={self.decay_mult:g}"

    def torch_values(self, solver: SolverConfig) -> dict[str, float]:
        """lr and weight_decay of this group for torch.optim.SGD (multipliers folded in)."""
        return {"lr": solver.base_lr * self.lr_mult, "weight_decay": solver.weight_decay * self.decay_mult}


@dataclass
class OptimizerPlan:
    solver: SolverConfig
    optimizer: str  # "torch.optim.SGD" or "finetune.CaffeSGD"
    reasons: list[str]  # why that optimizer (what makes torch SGD inexact, or why it is exact)
    groups: list[GroupPlan]
    lr_at: dict[int, float]
    notes: list[str] = field(default_factory=list)
    frozen: list[str] = field(default_factory=list)  # reference keys with no Caffe blob: lr 0

    @property
    def exact_with_torch_sgd(self) -> bool:
        return self.optimizer == "torch.optim.SGD"

    def to_dict(self) -> dict[str, Any]:
        s = self.solver
        groups = []
        for g in self.groups:
            entry: dict[str, Any] = {"name": g.name, "lr_mult": g.lr_mult, "decay_mult": g.decay_mult}
            if self.exact_with_torch_sgd:
                entry.update(g.torch_values(s))
            entry["blobs"] = list(g.blobs)
            if g.params:
                entry["params"] = list(g.params)
            groups.append(entry)
        return {
            "solver": s.path,
            "base_lr": s.base_lr,
            "type": s.solver_type,
            "momentum": s.momentum,
            "weight_decay": s.weight_decay,
            "regularization_type": s.regularization,
            "lr_policy": s.lr_policy,
            "schedule": s.schedule.to_dict(),
            "iter_size": s.iter_size,
            "clip_gradients": s.clip_gradients,
            "optimizer": self.optimizer,
            "exact_with_torch_sgd": self.exact_with_torch_sgd,
            "reasons": list(self.reasons),
            "scheduler": self.scheduler_text(),
            "scheduler_step": "once per iteration (weight update), after optimizer.step()",
            "groups": groups,
            "param_groups": groups,  # the same list under torch's name for it
            "frozen": list(self.frozen),
            "lr_at": {str(k): v for k, v in self.lr_at.items()},
            "notes": list(self.notes),
        }

    def scheduler_text(self) -> str | None:
        s = self.solver.schedule
        if s.policy == "fixed":
            return None
        return f"torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda={_policy_repr(s)})"

    def render(self) -> str:
        """Python a user can paste, with the reasons and the rate table as comments."""
        s = self.solver
        lines = [f"# {s.path}: Caffe {s.solver_type}, base_lr {s.base_lr:g}, momentum {s.momentum:g}, "
                 f"weight_decay {s.weight_decay:g} ({s.regularization}), lr_policy {s.lr_policy}, max_iter {s.max_iter}"]
        lines += [f"# {r}" for r in self.reasons]
        lines.append("import torch")
        if not self.exact_with_torch_sgd:
            lines.append("from resnet_port.finetune import CaffeSGD, CaffeLRPolicy")
        elif s.lr_policy != "fixed":
            lines.append("from resnet_port.finetune import CaffeLRPolicy")
        lines.append("param_groups = [")
        for g in self.groups:
            what = _summarise(g.params or g.blobs) or "every parameter"
            if self.exact_with_torch_sgd:
                v = g.torch_values(s)
                lines.append(f"    {{\"params\": ...,  # {what}\n     \"lr\": {v['lr']:g}, \"weight_decay\": {v['weight_decay']:g}}},")
            else:
                lines.append(f"    {{\"params\": ...,  # {what}\n     \"lr_mult\": {g.lr_mult:g}, \"decay_mult\": {g.decay_mult:g}}},")
        if self.frozen:
            lines.append(f"    # no Caffe blob, keep frozen: {_summarise(self.frozen)}")
        lines.append("]")
        if self.exact_with_torch_sgd:
            nesterov = ", nesterov=True" if s.nesterov and s.momentum > 0 else ""
            lines.append(f"optimizer = torch.optim.SGD(param_groups, lr={s.base_lr:g}, momentum={s.momentum:g}{nesterov})")
        else:
            clip = "None" if s.clip_gradients is None else f"{s.clip_gradients:g}"
            lines.append(
                f"optimizer = CaffeSGD(param_groups, lr={s.base_lr:g}, momentum={s.momentum:g}, "
                f"weight_decay={s.weight_decay:g}, regularization=\"{s.regularization}\", "
                f"iter_size={s.iter_size}, clip_gradients={clip}"
                + (", nesterov=True)" if s.nesterov else ")")
            )
        sched = self.scheduler_text()
        if sched:
            lines.append(f"scheduler = {sched}")
            if s.lr_policy in _NATIVE:
                lines.append(f"# same rates as torch.optim.lr_scheduler.{_NATIVE[s.lr_policy](s.schedule)}")
            lines.append("# call scheduler.step() after every optimizer.step(): Caffe counts iterations, not epochs")
        lines += [f"# {n}" for n in self.notes]
        lines.append("# Caffe's learning rate (base_lr, before lr_mult) at:")
        lines += [f"#   iteration {it:>9}: {lr:.8g}" for it, lr in self.lr_at.items()]
        return "\n".join(lines)

    def build(self, named_parameters: Iterable[tuple[str, torch.nn.Parameter]]):
        """(optimizer, scheduler or None) over a reference model's ``named_parameters()``.

        Every trainable parameter must belong to exactly one group (through the conversion report);
        parameters with no Caffe blob are frozen (``requires_grad`` off) as Caffe has no such weight.
        """
        s = self.solver
        params = dict(named_parameters)
        mapped = [p for g in self.groups for p in g.params]
        single_default = len(self.groups) == 1 and not self.groups[0].params
        if not single_default:
            missing = sorted(set(params) - set(mapped) - set(self.frozen))
            trainable_missing = [k for k in missing if params[k].requires_grad]
            if trainable_missing:
                raise InputError(
                    f"no Caffe blob maps to {', '.join(trainable_missing[:5])}"
                    + (f" (+{len(trainable_missing) - 5} more)" if len(trainable_missing) > 5 else "")
                    + "; build the plan with the conversion report of this checkpoint (--checkpoint)"
                )
            unknown = sorted(set(mapped) - set(params))
            if unknown:
                raise InputError(f"the plan names parameters the model does not have: {', '.join(unknown[:5])}")
        for key in self.frozen:
            if key in params:
                params[key].requires_grad_(False)
        torch_groups = []
        for g in self.groups:
            members = [params[k] for k in g.params] if g.params else [p for k, p in params.items() if k not in self.frozen]
            members = [p for p in members if p.requires_grad]
            if not members:
                continue
            if self.exact_with_torch_sgd:
                torch_groups.append({"params": members, **g.torch_values(s), "name": g.name})
            else:
                torch_groups.append({"params": members, "lr_mult": g.lr_mult, "decay_mult": g.decay_mult, "name": g.name})
        if self.exact_with_torch_sgd:
            optimizer: torch.optim.Optimizer = torch.optim.SGD(
                torch_groups, lr=s.base_lr, momentum=s.momentum, nesterov=s.nesterov and s.momentum > 0)
        else:
            optimizer = CaffeSGD(torch_groups, lr=s.base_lr, momentum=s.momentum, weight_decay=s.weight_decay,
                                 regularization=s.regularization, iter_size=s.iter_size, clip_gradients=s.clip_gradients,
                                 nesterov=s.nesterov)
        scheduler = None
        if s.lr_policy != "fixed":
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=s.schedule)
        return optimizer, scheduler


def _policy_repr(s: CaffeLRPolicy) -> str:
    fields = {"policy": repr(s.policy), "base_lr": f"{s.base_lr:g}"}
    d = s.to_dict()
    for src, dst in (("gamma", "gamma"), ("power", "power"), ("stepsize", "stepsize")):
        if src in d:
            fields[dst] = f"{d[src]:g}" if isinstance(d[src], float) else str(d[src])
    if "stepvalue" in d:
        fields["stepvalues"] = repr(tuple(d["stepvalue"]))
    if s.max_iter:
        fields["max_iter"] = str(s.max_iter)
    return "CaffeLRPolicy(" + ", ".join(f"{k}={v}" for k, v in fields.items()) + ")"


def _summarise(names: Sequence[str], limit: int = 4) -> str:
    if len(names) <= limit:
        return ", ".join(names)
    return f"{', '.join(names[:limit])}, ... ({len(names)} in all)"


def _reasons(solver: SolverConfig) -> list[str]:
    """What keeps torch.optim.SGD from reproducing this solver exactly (empty: it is exact)."""
    out = []
    constant = solver.schedule.is_constant()
    conversion = convert_hyperparams(
        SGDHyperParams(solver.base_lr, solver.momentum, solver.weight_decay, "caffe"), "pytorch", lr_changes=not constant
    )
    if not conversion.exact:
        # the same holds for Nesterov: torch's SGD(nesterov=True) keeps the rate outside the velocity too
        changes = solver.schedule.boundaries()
        where = f" at iterations {_summarise([str(c) for c in changes], 6)}" if changes else " at every iteration"
        out.append(f"torch.optim.SGD is not exact: the rate changes{where} with momentum {solver.momentum:g}; "
                   "PyTorch rescales the accumulated momentum at each change and Caffe does not")
    if solver.regularization == "L1":
        out.append("torch.optim.SGD has no L1 weight decay (regularization_type L1)")
    if solver.clip_gradients is not None:
        out.append(f"clip_gradients {solver.clip_gradients:g}: Caffe clips the global norm of the summed gradients "
                   "before dividing by iter_size, with no epsilon")
    return out


def plan_optimizer(
    solver: SolverConfig,
    blobs: Sequence[BlobMultipliers] | None = None,
    mapped: Mapping[str, str] | None = None,
    at: Sequence[int] | None = None,
) -> OptimizerPlan:
    """The optimizer plan for ``solver``.

    ``blobs``: the train net's learnable blobs (`finetune.net_params.read_net_multipliers`); without
    them every parameter has lr_mult 1 and decay_mult 1, as in a Caffe net with no ``param`` entries.
    ``mapped``: reference key -> ``"layer.blobs[i]"`` (a Caffe conversion report's ``mapped``).
    ``at``: the iterations of the rate table (default 0, every step boundary and max_iter).
    """
    reasons = _reasons(solver)
    optimizer = "finetune.CaffeSGD" if reasons else "torch.optim.SGD"
    if not reasons:
        reasons = ["torch.optim.SGD is exact: " + (
            "momentum is 0" if solver.momentum == 0 else "the rate is constant for the whole run")
            + (" (Caffe's Nesterov step equals torch's nesterov=True then)" if solver.nesterov and solver.momentum else "")]
    notes = []
    if solver.nesterov:
        notes.append("type Nesterov: Caffe's NesterovSolver, w -= (1 + momentum) * h - momentum * h_before, with "
                     "h = momentum * h_before + lr * d as in SGD"
                     + ("; reproduced by CaffeSGD(nesterov=True)" if optimizer != "torch.optim.SGD"
                        else "; equal to torch.optim.SGD(nesterov=True) while the rate is constant"))
    if solver.ignored_fields:
        notes.append("ignored (they do not change the update): " + ", ".join(solver.ignored_fields))
    if solver.iter_size > 1 and optimizer == "torch.optim.SGD":
        notes.append(f"iter_size {solver.iter_size}: run {solver.iter_size} backward passes per step and divide "
                     "each loss by iter_size (Caffe averages the accumulated gradients)")
    elif solver.iter_size > 1:
        notes.append(f"iter_size {solver.iter_size}: run {solver.iter_size} backward passes per optimizer.step(); "
                     "CaffeSGD divides the summed gradients by iter_size")
    groups: dict[tuple[float, float], GroupPlan] = {}
    frozen: list[str] = []
    if blobs is None:
        groups[(1.0, 1.0)] = GroupPlan(1.0, 1.0)
    else:
        by_blob = {b.blob_id: b for b in blobs}
        for b in blobs:
            if not b.trained:
                continue
            groups.setdefault((b.lr_mult, b.decay_mult), GroupPlan(b.lr_mult, b.decay_mult)).blobs.append(b.blob_id)
        stats = [b.blob_id for b in blobs if not b.trained]
        if stats:
            notes.append(f"{len(stats)} BatchNorm statistics blobs are buffers in PyTorch, not parameters "
                         "(Caffe masks them from the solver); recompute them with recalibrate-bn")
        if mapped is not None:
            for key, source in mapped.items():
                if key.endswith(("running_mean", "running_var", "num_batches_tracked")):
                    continue
                match = _BLOB_ID.match(source)
                if match is None or source not in by_blob:
                    frozen.append(key)  # filled with a constant by the converter: Caffe never trains it
                    continue
                b = by_blob[source]
                if not b.trained:
                    raise InputError(f"{key} comes from {source}, a BatchNorm statistic, not a trained blob")
                groups[(b.lr_mult, b.decay_mult)].params.append(key)
            if frozen:
                notes.append(f"{len(frozen)} reference parameters have no Caffe blob (constants the converter "
                             f"filled: {_summarise(frozen, 3)}); they stay frozen, as in Caffe")
    iterations = list(at) if at is not None else solver.schedule.default_table_iterations()
    lr_at = {int(it): solver.schedule.lr_at(int(it)) for it in iterations}
    return OptimizerPlan(solver, optimizer, reasons, list(groups.values()), lr_at, notes, frozen)
