"""CaffeSGD against an independent numpy transcription of Caffe's SGDSolver::ApplyUpdate.

The reference below is written from Caffe's rule, not from finetune/: gradients come from autograd
at the *reference's own* weights, and the update (clip, normalise, regularise, momentum with the rate
inside the velocity) is numpy.  The naive alternatives (torch SGD, unit gain) are run beside it to
show by how much, and exactly where, they move away.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from resnet_port.finetune import CaffeSGD
from tests.finetune.conftest import GROUP_MULTS
from tests.finetune.reference import grads_at, max_diff

BASE_LR = 0.05
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-3
GAMMA = 0.1
MILESTONES = (15, 35)
STEPS = 50


def caffe_lr(it: int) -> float:
    """multistep: base_lr * gamma ^ (number of stepvalues reached)."""
    return BASE_LR * GAMMA ** sum(it >= s for s in MILESTONES)


def caffe_reference(net, batches, steps, iter_size=1, clip=-1.0, regularization="L2", clip_after_normalize=False):
    """Caffe's SGD, one few-line loop per update: the weights after every update."""
    w = {k: p.detach().numpy().copy() for k, p in net.named_parameters()}
    history = {k: np.zeros_like(v) for k, v in w.items()}
    out = []
    for it in range(steps):
        diff = {k: np.zeros_like(v) for k, v in w.items()}
        for j in range(iter_size):  # Caffe accumulates diffs over iter_size forward/backward passes
            for k, g in grads_at(net, w, batches[(it * iter_size + j) % len(batches)]).items():
                diff[k] += g
        if clip_after_normalize:  # the wrong order, for the test that shows it matters
            diff = {k: d / iter_size for k, d in diff.items()}
        if clip >= 0:  # ClipGradients, on the accumulated diffs, before Normalize
            norm = np.sqrt(sum((d**2).sum() for d in diff.values()))
            if norm > clip:
                diff = {k: d * (clip / norm) for k, d in diff.items()}
        for k in w:
            lr_mult, decay_mult = GROUP_MULTS[k]
            d = diff[k] if clip_after_normalize else diff[k] / iter_size  # Normalize
            local_decay = WEIGHT_DECAY * decay_mult  # Regularize
            d = d + local_decay * (w[k] if regularization == "L2" else np.sign(w[k]))
            history[k] = caffe_lr(it) * lr_mult * d + MOMENTUM * history[k]  # ComputeUpdateValue
            w[k] = w[k] - history[k]  # Net::Update
        out.append({k: v.copy() for k, v in w.items()})
    return out


def param_groups(net, caffe: bool):
    """One group per parameter; CaffeSGD takes the multipliers, torch SGD has them folded in."""
    groups = []
    for name, p in net.named_parameters():
        lr_mult, decay_mult = GROUP_MULTS[name]
        if caffe:
            groups.append({"params": [p], "lr_mult": lr_mult, "decay_mult": decay_mult, "name": name})
        else:
            groups.append({"params": [p], "lr": BASE_LR * lr_mult, "weight_decay": WEIGHT_DECAY * decay_mult, "name": name})
    return groups


def run_optimizer(net, opt, batches, steps, iter_size=1, record_buffers=False):
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(MILESTONES), gamma=GAMMA)
    weights, buffers = [], []
    for it in range(steps):
        if record_buffers:
            buffers.append({g["name"]: opt.state[g["params"][0]].get("momentum_buffer") for g in opt.param_groups})
            buffers[-1] = {k: None if v is None else v.numpy().copy() for k, v in buffers[-1].items()}
        opt.zero_grad()
        for j in range(iter_size):
            x, y = batches[(it * iter_size + j) % len(batches)]
            F.cross_entropy(net(x), y).backward()
        opt.step()
        sched.step()
        weights.append({k: p.detach().numpy().copy() for k, p in net.named_parameters()})
    return weights, buffers


@pytest.mark.parametrize(
    "iter_size, clip, regularization",
    [(1, -1.0, "L2"), (2, 0.5, "L2"), (2, -1.0, "L1"), (1, 0.3, "L1")],
)
def test_caffe_sgd_matches_numpy_reference_for_50_steps(tiny_net, batches, iter_size, clip, regularization):
    reference = caffe_reference(tiny_net, batches, STEPS, iter_size, clip, regularization)
    net = copy.deepcopy(tiny_net)
    opt = CaffeSGD(
        param_groups(net, caffe=True), lr=BASE_LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY,
        regularization=regularization, iter_size=iter_size, clip_gradients=clip,
    )
    ours, _ = run_optimizer(net, opt, batches, STEPS, iter_size)
    worst = max(max_diff(r, o) for r, o in zip(reference, ours))
    assert worst < 1e-10, f"CaffeSGD departs from Caffe's rule by {worst:.3g}"
    # the run is not trivial: the weights moved far more than the tolerance
    assert max_diff(reference[-1], {k: p.detach().numpy() for k, p in tiny_net.named_parameters()}) > 1e-2


def test_clipping_before_normalisation_is_what_caffe_does(tiny_net, batches):
    """Clipping the averaged gradient (the wrong order) gives other weights than CaffeSGD."""
    net = copy.deepcopy(tiny_net)
    opt = CaffeSGD(param_groups(net, caffe=True), lr=BASE_LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY,
                   iter_size=2, clip_gradients=0.5)
    ours, _ = run_optimizer(net, opt, batches, 10, iter_size=2)
    right = caffe_reference(tiny_net, batches, 10, iter_size=2, clip=0.5)
    wrong = caffe_reference(tiny_net, batches, 10, iter_size=2, clip=0.5, clip_after_normalize=True)
    assert max(max_diff(r, o) for r, o in zip(right, ours)) < 1e-10
    assert max_diff(wrong[-1], ours[-1]) > 1e-3


def test_torch_sgd_with_naive_conversion_departs_at_the_first_rate_change_by_the_predicted_amount(tiny_net, batches):
    reference = caffe_reference(tiny_net, batches, STEPS)
    net = copy.deepcopy(tiny_net)
    opt = torch.optim.SGD(param_groups(net, caffe=False), lr=BASE_LR, momentum=MOMENTUM)
    torch_w, buffers = run_optimizer(net, opt, batches, STEPS, record_buffers=True)

    first_change = MILESTONES[0]
    before = max(max_diff(r, t) for r, t in zip(reference[:first_change], torch_w[:first_change]))
    assert before < 1e-10, "with a constant rate torch SGD and Caffe must agree"

    # Theory at the first update with the new rate: Caffe's velocity still holds lr_old * buf, torch
    # rescales it to lr_new * buf, so  w_torch - w_caffe = momentum * lr_mult * (lr_old - lr_new) * buf.
    lr_old, lr_new = caffe_lr(first_change - 1), caffe_lr(first_change)
    assert lr_old != lr_new
    measured_max = 0.0
    for name in GROUP_MULTS:
        lr_mult = GROUP_MULTS[name][0]
        predicted = MOMENTUM * lr_mult * (lr_old - lr_new) * buffers[first_change][name]
        measured = torch_w[first_change][name] - reference[first_change][name]
        np.testing.assert_allclose(measured, predicted, rtol=1e-6, atol=1e-12)
        measured_max = max(measured_max, float(np.abs(measured).max()))
    assert measured_max > 1e-4, "the predicted departure must be far beyond float tolerance"
    assert max_diff(reference[-1], torch_w[-1]) > 1e-4


def test_unit_gain_with_the_same_rate_moves_1_over_1_minus_m_slower():
    """Constant gradient: Caffe's steps tend to lr*g/(1-m), unit gain's to lr*g, a 1/(1-m) ratio."""
    g = np.array([0.3, -1.2, 2.0])
    w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = CaffeSGD([w], lr=0.01, momentum=0.9)
    v_unit = np.zeros(3)
    for _ in range(300):
        before = w.detach().numpy().copy()
        w.grad = torch.from_numpy(g.copy())
        opt.step()
        caffe_step = before - w.detach().numpy()
        v_unit = 0.9 * v_unit + (1 - 0.9) * 0.01 * g
    np.testing.assert_allclose(caffe_step, 0.01 * g / (1 - 0.9), rtol=1e-9)
    np.testing.assert_allclose(caffe_step / v_unit, np.full(3, 1 / (1 - 0.9)), rtol=1e-9)


def test_params_without_grad_are_left_alone_and_grad_is_not_modified(tiny_net, batches):
    opt = CaffeSGD(tiny_net.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    x, y = batches[0]
    F.cross_entropy(tiny_net(x), y).backward()
    tiny_net.fc.bias.grad = None
    bias_before = tiny_net.fc.bias.detach().clone()
    grad_before = tiny_net.conv.weight.grad.clone()
    opt.step()
    assert torch.equal(tiny_net.fc.bias, bias_before)
    assert torch.equal(tiny_net.conv.weight.grad, grad_before)


def test_state_dict_round_trip_continues_identically(tiny_net, batches):
    def make(net):
        return CaffeSGD(param_groups(net, caffe=True), lr=BASE_LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY,
                        iter_size=2, clip_gradients=0.5)

    net_a = copy.deepcopy(tiny_net)
    opt_a = make(net_a)
    run_optimizer(net_a, opt_a, batches, 3, iter_size=2)
    net_b = copy.deepcopy(net_a)
    opt_b = CaffeSGD(param_groups(net_b, caffe=True), lr=1.0)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))  # torch shares state tensors otherwise
    assert opt_b.iter_size == 2 and opt_b.clip_gradients == 0.5
    for net, opt in ((net_a, opt_a), (net_b, opt_b)):
        opt.zero_grad()
        for batch in batches[:2]:
            F.cross_entropy(net(batch[0]), batch[1]).backward()
        opt.step()
    assert max_diff(dict((k, p.detach().numpy()) for k, p in net_a.named_parameters()),
                    dict((k, p.detach().numpy()) for k, p in net_b.named_parameters())) == 0.0


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"momentum": 1.0}, "momentum"),
        ({"regularization": "L3"}, "L2 or L1"),
        ({"iter_size": 0}, "iter_size"),
        ({"weight_decay": -1.0}, "weight_decay"),
        ({"lr": float("nan")}, "lr"),
    ],
)
def test_bad_hyperparameters_are_refused_with_the_name(kwargs, fragment):
    from resnet_port.errors import InputError

    args = {"lr": 0.1, **kwargs}
    with pytest.raises(InputError, match=fragment):
        CaffeSGD([torch.zeros(2, requires_grad=True)], **args)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    momentum=st.sampled_from([0.0, 0.5, 0.9, 0.99]),
    weight_decay=st.sampled_from([0.0, 1e-4, 0.05]),
    lr_mults=st.tuples(st.sampled_from([0.0, 0.1, 1.0, 2.0, 10.0]), st.sampled_from([0.0, 1.0, 2.0])),
    iter_size=st.integers(1, 3),
    clip=st.sampled_from([-1.0, 0.0, 0.5, 5.0]),
    regularization=st.sampled_from(["L2", "L1"]),
)
def test_random_hyperparameters_on_a_quadratic(seed, momentum, weight_decay, lr_mults, iter_size, clip, regularization):
    """Gradients of 0.5*w'Aw + b'w per backward pass, in numpy; the rule in numpy; CaffeSGD beside it."""
    rng = np.random.default_rng(seed)
    sizes = (3, 4)
    a = [rng.normal(size=(n, n)) for n in sizes]
    a = [m @ m.T / n for m, n in zip(a, sizes)]
    bs = [[rng.normal(size=n) for _ in range(iter_size)] for n in sizes]
    lrs = [0.05 * 0.3 ** (it // 7) for it in range(20)]
    mults = [lr_mults, (1.0, 1.0)]
    w = [rng.normal(size=n) for n in sizes]
    params = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in w]
    opt = CaffeSGD([{"params": [params[0]], "lr_mult": lr_mults[0], "decay_mult": lr_mults[1]}, {"params": [params[1]]}],
                   lr=lrs[0], momentum=momentum, weight_decay=weight_decay, regularization=regularization,
                   iter_size=iter_size, clip_gradients=clip)
    history = [np.zeros(n) for n in sizes]
    for it, lr in enumerate(lrs):
        diffs = [sum(a[i] @ w[i] + bs[i][j] for j in range(iter_size)) for i in range(2)]
        if clip >= 0:
            norm = np.sqrt(sum((d**2).sum() for d in diffs))
            if norm > clip:
                diffs = [d * clip / norm for d in diffs]
        for i in range(2):
            d = diffs[i] / iter_size
            d = d + weight_decay * mults[i][1] * (w[i] if regularization == "L2" else np.sign(w[i]))
            history[i] = lr * mults[i][0] * d + momentum * history[i]
            w[i] = w[i] - history[i]
        for group in opt.param_groups:
            group["lr"] = lr
        for p in params:
            p.grad = None
        for j in range(iter_size):
            loss = sum(0.5 * p @ torch.from_numpy(a[i]) @ p + torch.from_numpy(bs[i][j]) @ p for i, p in enumerate(params))
            loss.backward()
        opt.step()
    for i, p in enumerate(params):
        np.testing.assert_allclose(p.detach().numpy(), w[i], rtol=1e-9, atol=1e-12)
