"""Solvers as they come with public Caffe ResNets: Nesterov (both spellings), iter_size, poly and
multistep, stray fields; other solver types refused by name.

Nesterov is checked against a numpy transcription of Caffe's NesterovSolver written here (the update
of SGDSolver::ApplyUpdate with NesterovSolver's last step), over many steps with rate changes.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from resnet_port.finetune import CaffeSGD, read_solver
from resnet_port.finetune.cli import convert_solver_main
from resnet_port.finetune.plan import plan_optimizer
from resnet_port.finetune.solver import SolverError
from tests.finetune.conftest import GROUP_MULTS
from tests.finetune.reference import grads_at, max_diff

BASE_LR, MOMENTUM, WEIGHT_DECAY, GAMMA, MILESTONES, STEPS = 0.05, 0.9, 5e-3, 0.1, (12, 30), 45


def multistep_lr(it: int) -> float:
    return BASE_LR * GAMMA ** sum(it >= s for s in MILESTONES)


def nesterov_reference(net, batches, steps, lr_at, iter_size=1, clip=-1.0, regularization="L2", mults=GROUP_MULTS,
                       weight_decay=WEIGHT_DECAY, momentum=MOMENTUM):
    """Caffe's NesterovSolver in numpy: the weights after every update."""
    w = {k: p.detach().numpy().copy() for k, p in net.named_parameters()}
    h = {k: np.zeros_like(v) for k, v in w.items()}
    out = []
    for it in range(steps):
        diff = {k: np.zeros_like(v) for k, v in w.items()}
        for j in range(iter_size):
            for k, g in grads_at(net, w, batches[(it * iter_size + j) % len(batches)]).items():
                diff[k] += g
        if clip >= 0:
            norm = np.sqrt(sum((d**2).sum() for d in diff.values()))
            if norm > clip:
                diff = {k: d * (clip / norm) for k, d in diff.items()}
        for k in w:
            lr_mult, decay_mult = mults[k]
            d = diff[k] / iter_size
            d = d + weight_decay * decay_mult * (w[k] if regularization == "L2" else np.sign(w[k]))
            before = h[k].copy()  # "save history momentum for stepping back"
            h[k] = momentum * h[k] + lr_at(it) * lr_mult * d
            w[k] = w[k] - ((1.0 + momentum) * h[k] - momentum * before)  # step back, then over-step
        out.append({k: v.copy() for k, v in w.items()})
    return out


def run(net, opt, sched, batches, steps, iter_size=1):
    weights = []
    for it in range(steps):
        opt.zero_grad()
        for j in range(iter_size):
            x, y = batches[(it * iter_size + j) % len(batches)]
            F.cross_entropy(net(x), y).backward()
        opt.step()
        if sched is not None:
            sched.step()
        weights.append({k: p.detach().numpy().copy() for k, p in net.named_parameters()})
    return weights


def caffe_groups(net):
    return [{"params": [p], "lr_mult": GROUP_MULTS[n][0], "decay_mult": GROUP_MULTS[n][1], "name": n}
            for n, p in net.named_parameters()]


@pytest.mark.parametrize("iter_size, clip, regularization", [(1, -1.0, "L2"), (2, 0.5, "L2"), (3, -1.0, "L1")])
def test_caffe_sgd_nesterov_matches_numpy_reference(tiny_net, batches, iter_size, clip, regularization):
    reference = nesterov_reference(tiny_net, batches, STEPS, multistep_lr, iter_size, clip, regularization)
    net = copy.deepcopy(tiny_net)
    opt = CaffeSGD(caffe_groups(net), lr=BASE_LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY,
                   regularization=regularization, iter_size=iter_size, clip_gradients=clip, nesterov=True)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(MILESTONES), gamma=GAMMA)
    ours = run(net, opt, sched, batches, STEPS, iter_size)
    worst = max(max_diff(r, o) for r, o in zip(reference, ours))
    assert worst < 1e-10, f"CaffeSGD(nesterov=True) departs from Caffe's NesterovSolver by {worst:.3g}"
    # not trivially plain momentum: plain CaffeSGD gives other weights
    plain_net = copy.deepcopy(tiny_net)
    plain = CaffeSGD(caffe_groups(plain_net), lr=BASE_LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY,
                     regularization=regularization, iter_size=iter_size, clip_gradients=clip)
    plain_w = run(plain_net, plain, torch.optim.lr_scheduler.MultiStepLR(plain, list(MILESTONES), GAMMA), batches, STEPS, iter_size)
    assert max_diff(plain_w[-1], ours[-1]) > 1e-4


def test_torch_nesterov_is_exact_until_the_rate_changes(tiny_net, batches):
    """torch's SGD(nesterov=True) keeps the rate outside the velocity: equal to Caffe's rule at a constant
    rate, different from the first rate change on."""
    reference = nesterov_reference(tiny_net, batches, STEPS, multistep_lr)
    net = copy.deepcopy(tiny_net)
    groups = [{"params": [p], "lr": BASE_LR * GROUP_MULTS[n][0], "weight_decay": WEIGHT_DECAY * GROUP_MULTS[n][1]}
              for n, p in net.named_parameters()]
    opt = torch.optim.SGD(groups, lr=BASE_LR, momentum=MOMENTUM, nesterov=True)
    theirs = run(net, opt, torch.optim.lr_scheduler.MultiStepLR(opt, list(MILESTONES), GAMMA), batches, STEPS)
    before = max(max_diff(reference[i], theirs[i]) for i in range(MILESTONES[0]))
    after = max_diff(reference[-1], theirs[-1])
    assert before < 1e-10 and after > 1e-4, (before, after)


NESTEROV_SOLVER = """\
net: "train_val.prototxt"
test_iter: 100
test_interval: 1000
base_lr: {base_lr}
lr_policy: "{policy}"
{policy_fields}
max_iter: {max_iter}
momentum: {momentum}
weight_decay: {weight_decay}
{type_line}
iter_size: {iter_size}
display: 20
snapshot: 5000
snapshot_prefix: "snap/r50"
solver_mode: GPU
device_id: 3
random_seed: 7
delta: 1e-8
"""


def write_solver(tmp_path, policy="multistep", type_line='type: "Nesterov"', iter_size=1, max_iter=STEPS, momentum=MOMENTUM):
    fields = {
        "multistep": f"gamma: {GAMMA}\n" + "".join(f"stepvalue: {s}\n" for s in MILESTONES),
        "poly": "power: 2.0",
        "fixed": "",
    }[policy]
    path = tmp_path / "solver.prototxt"
    path.write_text(NESTEROV_SOLVER.format(base_lr=BASE_LR, policy=policy, policy_fields=fields, max_iter=max_iter,
                                           momentum=momentum, weight_decay=WEIGHT_DECAY, type_line=type_line,
                                           iter_size=iter_size))
    return path


@pytest.mark.parametrize("type_line", ['type: "Nesterov"', "solver_type: NESTEROV"], ids=["type", "old_enum"])
def test_nesterov_solver_plan_reproduces_caffe(tmp_path, tiny_net, batches, type_line):
    """read_solver -> plan -> build, run end to end: Caffe's Nesterov with multistep and iter_size 2."""
    solver = read_solver(write_solver(tmp_path, type_line=type_line, iter_size=2))
    assert solver.solver_type == "Nesterov" and solver.nesterov and solver.iter_size == 2
    plan = plan_optimizer(solver)
    assert plan.optimizer == "finetune.CaffeSGD"
    assert "nesterov=True" in plan.render()
    assert any("Nesterov" in n for n in plan.notes)
    net = copy.deepcopy(tiny_net)
    opt, sched = plan.build(net.named_parameters())
    assert isinstance(opt, CaffeSGD) and all(g["nesterov"] for g in opt.param_groups)
    ours = run(net, opt, sched, batches, STEPS, iter_size=2)
    ones = {k: (1.0, 1.0) for k in GROUP_MULTS}  # no --net: every multiplier is 1
    reference = nesterov_reference(tiny_net, batches, STEPS, multistep_lr, iter_size=2, mults=ones)
    assert max(max_diff(r, o) for r, o in zip(reference, ours)) < 1e-10


def test_constant_rate_nesterov_uses_torch_sgd_exactly(tmp_path, tiny_net, batches):
    plan = plan_optimizer(read_solver(write_solver(tmp_path, policy="fixed")))
    assert plan.optimizer == "torch.optim.SGD" and "nesterov=True" in plan.render()
    net = copy.deepcopy(tiny_net)
    opt, sched = plan.build(net.named_parameters())
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["nesterov"] is True and sched is None
    ours = run(net, opt, sched, batches, 20)
    ones = {k: (1.0, 1.0) for k in GROUP_MULTS}
    reference = nesterov_reference(tiny_net, batches, 20, lambda it: BASE_LR, mults=ones)
    assert max(max_diff(r, o) for r, o in zip(reference, ours)) < 1e-10


def test_poly_nesterov_table_follows_the_formula(tmp_path, capsys):
    path = write_solver(tmp_path, policy="poly", max_iter=1000)
    out = tmp_path / "plan.json"
    assert convert_solver_main([str(path), "--at", "0,250,500,999,1000", "--json", str(out)]) == 0
    plan = json.loads(out.read_text())
    assert plan["type"] == "Nesterov" and plan["optimizer"] == "finetune.CaffeSGD"
    for it, lr in plan["lr_at"].items():
        assert lr == pytest.approx(BASE_LR * (1 - int(it) / 1000) ** 2.0, rel=1e-6)


def test_stray_fields_are_ignored_and_noted(tmp_path, capsys):
    path = write_solver(tmp_path)
    solver = read_solver(path)
    assert set(solver.ignored_fields) == {"test_iter", "test_interval", "display", "snapshot", "snapshot_prefix",
                                          "solver_mode", "device_id", "random_seed", "delta"}
    assert convert_solver_main([str(path)]) == 0
    printed = capsys.readouterr().out
    note = next(line for line in printed.splitlines() if line.startswith("# ignored ("))
    assert "device_id" in note and "solver_mode" in note and "delta" in note and "base_lr" not in note
    out = tmp_path / "plan.json"
    assert convert_solver_main([str(path), "--json", str(out)]) == 0
    assert any("device_id" in n for n in json.loads(out.read_text())["notes"])


@pytest.mark.parametrize(
    "type_line, name",
    [('type: "Adam"', "Adam"), ('type: "RMSProp"', "RMSProp"), ('type: "AdaGrad"', "AdaGrad"),
     ('type: "AdaDelta"', "AdaDelta"), ("solver_type: ADAM", "Adam"), ("solver_type: RMSPROP", "RMSProp"),
     ("solver_type: ADAGRAD", "AdaGrad"), ("solver_type: ADADELTA", "AdaDelta"), ('type: "nesterov"', "nesterov")],
)
def test_other_solver_types_are_refused_by_name(tmp_path, capsys, type_line, name):
    path = write_solver(tmp_path, type_line=type_line)
    with pytest.raises(SolverError, match=f"solver type '{name}' is not supported"):
        read_solver(path)
    out = tmp_path / "plan.json"
    assert convert_solver_main([str(path), "--json", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and name in err
    assert not out.exists()


def test_type_and_old_enum_must_agree(tmp_path):
    path = write_solver(tmp_path, type_line='type: "SGD"\nsolver_type: NESTEROV')
    with pytest.raises(SolverError, match="solver_type NESTEROV contradicts type 'SGD'"):
        read_solver(path)
