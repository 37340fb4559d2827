"""Caffe solver files: parsing, every lr_policy against Caffe's formulas written out here, and the
optimizer/scheduler plan convert-solver hands back."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from resnet_port.finetune import CaffeLRPolicy, CaffeSGD, read_solver
from resnet_port.finetune.cli import convert_solver_main
from resnet_port.finetune.plan import plan_optimizer
from resnet_port.finetune.solver import SolverError

RESNET_SOLVER = """\
# the ImageNet ResNet recipe: 0.1, divided by 10 twice, momentum 0.9, weight decay 1e-4
net: "train_val.prototxt"
test_iter: 1000
test_interval: 5000
test_initialization: false
display: 20
average_loss: 20
base_lr: 0.1
lr_policy: "multistep"
gamma: 0.1
stepvalue: 150000
stepvalue: 300000
max_iter: 600000
momentum: 0.9
weight_decay: 0.0001
snapshot: 10000
snapshot_prefix: "snapshots/resnet50"
solver_mode: GPU
iter_size: 2
"""


def caffe_formula(policy: str, it: int, base_lr: float, gamma=0.0, power=0.0, stepsize=0, stepvalues=(), max_iter=0):
    """GetLearningRate, transcribed from Caffe's sgd_solver.cpp (multistep's counter simulated)."""
    if policy == "fixed":
        return base_lr
    if policy == "step":
        return base_lr * gamma ** math.floor(it / stepsize)
    if policy == "exp":
        return base_lr * gamma**it
    if policy == "inv":
        return base_lr * (1 + gamma * it) ** (-power)
    if policy == "multistep":
        current = 0
        for i in range(it + 1):  # Caffe advances the counter at most once per iteration
            if current < len(stepvalues) and i >= stepvalues[current]:
                current += 1
        return base_lr * gamma**current
    if policy == "poly":
        return base_lr * (1 - it / max_iter) ** power
    if policy == "sigmoid":
        return base_lr * (1 / (1 + math.exp(-gamma * (it - stepsize))))
    raise AssertionError(policy)


POLICIES = {
    "fixed": ("", {}),
    "step": ("gamma: 0.5\nstepsize: 1000\n", {"gamma": 0.5, "stepsize": 1000}),
    "multistep": ("gamma: 0.2\nstepvalue: 700\nstepvalue: 2100\nstepvalue: 2500\n", {"gamma": 0.2, "stepvalues": (700, 2100, 2500)}),
    "exp": ("gamma: 0.9995\n", {"gamma": 0.9995}),
    "inv": ("gamma: 0.0001\npower: 0.75\n", {"gamma": 0.0001, "power": 0.75}),
    "poly": ("power: 2.0\n", {"power": 2.0}),
    "sigmoid": ("gamma: -0.005\nstepsize: 1500\n", {"gamma": -0.005, "stepsize": 1500}),
}
TABLE_AT = [0, 1, 699, 700, 999, 1000, 1500, 2099, 2100, 2500, 2999, 3000]


def write(tmp_path, text, name="solver.prototxt"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_resnet_solver_reads_and_tabulates(tmp_path):
    solver = read_solver(write(tmp_path, RESNET_SOLVER))
    assert (solver.base_lr, solver.momentum, solver.weight_decay) == (0.1, 0.9, 0.0001)
    assert solver.lr_policy == "multistep" and solver.schedule.stepvalues == (150000, 300000)
    assert solver.max_iter == 600000 and solver.iter_size == 2 and solver.regularization == "L2"
    assert solver.net == "train_val.prototxt" and solver.clip_gradients is None
    plan = plan_optimizer(solver, at=[0, 149999, 150000, 299999, 300000, 599999])
    expected = {0: 0.1, 149999: 0.1, 150000: 0.01, 299999: 0.01, 300000: 0.001, 599999: 0.001}
    for it, lr in expected.items():
        assert plan.lr_at[it] == pytest.approx(lr, rel=1e-12)
    assert plan.optimizer == "finetune.CaffeSGD"
    assert any("150000, 300000" in r for r in plan.reasons)
    assert list(plan_optimizer(solver).lr_at) == [0, 150000, 300000, 600000]


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_every_policy_against_caffe_formula(tmp_path, policy):
    extra, kwargs = POLICIES[policy]
    text = f'base_lr: 0.01\nlr_policy: "{policy}"\nmax_iter: 3000\nmomentum: 0.9\n{extra}'
    solver = read_solver(write(tmp_path, text))
    plan = plan_optimizer(solver, at=TABLE_AT)
    for it in TABLE_AT:
        assert plan.lr_at[it] == pytest.approx(caffe_formula(policy, it, 0.01, max_iter=3000, **kwargs), rel=1e-7), it
    # exact with torch SGD only where the rate never changes
    assert plan.exact_with_torch_sgd == (policy == "fixed")


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_built_scheduler_follows_caffe_per_iteration(tmp_path, policy):
    extra, kwargs = POLICIES[policy]
    text = f'base_lr: 0.01\nlr_policy: "{policy}"\nmax_iter: 3000\nmomentum: 0.9\n{extra}'
    plan = plan_optimizer(read_solver(write(tmp_path, text)))
    w = torch.nn.Parameter(torch.zeros(2))
    optimizer, scheduler = plan.build([("w", w)])
    for it in range(0, 2600):
        expected = caffe_formula(policy, it, 0.01, max_iter=3000, **kwargs) if it % 97 == 0 or it in (700, 2100) else None
        if expected is not None:
            assert optimizer.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-7, abs=1e-15), it
        optimizer.step()
        if scheduler is not None:
            scheduler.step()


def test_repeated_stepvalue_takes_effect_one_iteration_later():
    policy = CaffeLRPolicy("multistep", 1.0, gamma=0.5, stepvalues=(100, 100, 50), max_iter=200)
    for it in (99, 100, 101, 102, 150):
        assert policy.lr_at(it) == caffe_formula("multistep", it, 1.0, gamma=0.5, stepvalues=(100, 100, 50))
    assert policy.boundaries() == [100, 101, 102]


@settings(max_examples=40, deadline=None)
@given(
    policy=st.sampled_from(sorted(POLICIES)),
    gamma=st.floats(0.05, 0.99),
    power=st.floats(0.1, 3.0),
    stepsize=st.integers(1, 500),
    stepvalues=st.lists(st.integers(0, 1000), max_size=4),
    it=st.integers(0, 1000),
)
def test_policies_match_the_formula_anywhere(policy, gamma, power, stepsize, stepvalues, it):
    sig_gamma = -gamma / 50 if policy == "sigmoid" else gamma
    p = CaffeLRPolicy(policy, 0.1, gamma=sig_gamma, power=power, stepsize=stepsize, stepvalues=tuple(stepvalues), max_iter=1000)
    expected = caffe_formula(policy, it, 0.1, sig_gamma, power, stepsize, tuple(stepvalues), 1000)
    assert p.lr_at(it) == pytest.approx(expected, rel=1e-9, abs=1e-300)


def test_constant_schedules_choose_torch_sgd_and_say_why(tmp_path):
    never = read_solver(write(tmp_path, 'base_lr: 0.01\nlr_policy: "step"\ngamma: 0.1\nstepsize: 5000\nmax_iter: 5000\nmomentum: 0.9\n'))
    plan = plan_optimizer(never)
    assert plan.optimizer == "torch.optim.SGD" and "constant" in plan.reasons[0]
    zero_m = read_solver(write(tmp_path, 'base_lr: 0.01\nlr_policy: "step"\ngamma: 0.1\nstepsize: 100\nmax_iter: 5000\n'))
    assert plan_optimizer(zero_m).optimizer == "torch.optim.SGD"


@pytest.mark.parametrize(
    "extra, fragment",
    [('regularization_type: "L1"\n', "L1"), ("clip_gradients: 10\n", "clip_gradients")],
)
def test_l1_and_clipping_need_caffe_sgd(tmp_path, extra, fragment):
    solver = read_solver(write(tmp_path, f'base_lr: 0.01\nlr_policy: "fixed"\nmomentum: 0.9\nweight_decay: 0.001\n{extra}'))
    plan = plan_optimizer(solver)
    assert plan.optimizer == "finetune.CaffeSGD" and any(fragment in r for r in plan.reasons)
    w = torch.nn.Parameter(torch.ones(2))
    optimizer, _ = plan.build([("w", w)])
    assert isinstance(optimizer, CaffeSGD)
    assert optimizer.param_groups[0]["regularization"] == solver.regularization
    assert optimizer.clip_gradients == solver.clip_gradients


@pytest.mark.parametrize(
    "text, fragment",
    [
        ('base_lt: 0.1\nlr_policy: "fixed"\n', 'line 1|1:1.*base_lt'),
        ("base_lr: 0.1\n", "lr_policy is not set"),
        ('base_lr: 0.1\nlr_policy: "cosine"\n', "unknown lr_policy 'cosine'"),
        ('base_lr: 0.1\nlr_policy: "step"\ngamma: 0.1\n', "stepsize"),
        ('base_lr: 0.1\nlr_policy: "poly"\npower: 1\n', "max_iter"),
        ('base_lr: 0.1\nlr_policy: "fixed"\ntype: "Adam"\n', "'Adam' is not supported"),
        ('base_lr: 0.1\nlr_policy: "fixed"\nsolver_type: ADAGRAD\n', "'AdaGrad' is not supported"),
        ('base_lr: 0.1\nlr_policy: "fixed"\nregularization_type: "L3"\n', "L2 or L1"),
        ('net_param { name: "inline" }\nbase_lr: 0.1\nlr_policy: "fixed"\n', "inline net_param"),
        ('base_lr: 0.1\nlr_policy: "fixed"\nmomentum: 1.5\n', "momentum"),
    ],
)
def test_bad_solvers_exit_2_with_one_line_naming_the_file(tmp_path, capsys, text, fragment):
    path = write(tmp_path, text)
    with pytest.raises(SolverError, match=fragment):
        read_solver(path)
    assert convert_solver_main([str(path), "--json", str(tmp_path / "out.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert str(path) in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out.json").exists()


def test_cli_json_holds_the_table_and_groups(tmp_path, capsys):
    solver = write(tmp_path, RESNET_SOLVER)
    out = tmp_path / "plan.json"
    assert convert_solver_main([str(solver), "--at", "0,30000,150000,450000", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["base_lr"] == 0.1 and data["momentum"] == 0.9 and data["weight_decay"] == 0.0001
    assert data["lr_policy"] == "multistep" and data["optimizer"] == "finetune.CaffeSGD"
    assert set(data["lr_at"]) == {"0", "30000", "150000", "450000"}
    assert data["lr_at"]["450000"] == pytest.approx(0.001)
    assert data["groups"] and data["groups"][0]["lr_mult"] == 1.0
    printed = capsys.readouterr().out
    assert "CaffeSGD(" in printed and "LambdaLR" in printed


def test_cli_refuses_a_bad_at_list(tmp_path, capsys):
    solver = write(tmp_path, RESNET_SOLVER)
    assert convert_solver_main([str(solver), "--at", "0,ten"]) == 2
    assert "--at" in capsys.readouterr().err


FULL_SOLVER = """\
train_net: "train.prototxt"
test_net: "val.prototxt"
test_iter: 50
test_interval: 1000
test_compute_loss: true
test_initialization: false
train_state { phase: TRAIN stage: "finetune" }
test_state { phase: TEST level: 1 }
base_lr: 0.01
display: 100
average_loss: 10
max_iter: 45000
iter_size: 4
lr_policy: 'step'
gamma: 0.1
power: 0.75
momentum: 0.9
weight_decay: 5e-4
regularization_type: "L2"
stepsize: 15000
clip_gradients: -1
snapshot: 5000
snapshot_prefix: "snap/ft"
snapshot_diff: false
snapshot_format: HDF5
solver_mode: CPU
device_id: 0
random_seed: 1701
type: "SGD"
delta: 1e-8
momentum2: 0.999
rms_decay: 0.99
debug_info: false
snapshot_after_train: true
solver_type: SGD
layer_wise_reduce: true
weights: "ResNet-50-model.caffemodel"
"""


def test_a_solver_using_every_sgd_field_reads(tmp_path):
    solver = read_solver(write(tmp_path, FULL_SOLVER))
    assert solver.net == "train.prototxt" and solver.iter_size == 4 and solver.clip_gradients is None
    assert solver.weight_decay == 0.0005 and solver.schedule.stepsize == 15000
    plan = plan_optimizer(solver)
    assert list(plan.lr_at) == [0, 15000, 30000, 45000]
    assert [plan.lr_at[k] for k in plan.lr_at] == pytest.approx([0.01, 0.001, 0.0001, 0.00001])
    assert any("iter_size 4" in n for n in plan.notes)


@pytest.mark.parametrize(
    "text",
    [
        RESNET_SOLVER,  # CaffeSGD + CaffeLRPolicy
        'base_lr: 0.01\nlr_policy: "step"\ngamma: 0.1\nstepsize: 5000\nmax_iter: 5000\nmomentum: 0.9\n',  # torch SGD
        'base_lr: 0.01\nlr_policy: "poly"\npower: 1\nmax_iter: 5000\nmomentum: 0\n',  # torch SGD + CaffeLRPolicy
    ],
)
def test_the_printed_plan_runs_as_written(tmp_path, text):
    """The code convert-solver prints is pasted by users: its imports must resolve in the installed
    package (``resnet_port.``), and with the ``...`` placeholders filled it builds the optimizer."""
    code = plan_optimizer(read_solver(write(tmp_path, text))).render()
    assert "from finetune" not in code
    weights = [torch.nn.Parameter(torch.zeros(3))]
    namespace: dict = {"weights": weights}
    exec(compile(code.replace('"params": ...', '"params": weights'), "<convert-solver>", "exec"), namespace)
    assert isinstance(namespace["optimizer"], torch.optim.Optimizer)
