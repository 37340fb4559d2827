"""convert_hyperparams: each conversion it calls exact is run both ways and gives the same weights;
each it calls inexact is run and shown to differ."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from resnet_port.finetune import CaffeSGD, SGDHyperParams, convert_hyperparams
from resnet_port.errors import InputError
from tests.finetune.reference import grads_at, max_diff

STEPS = 30
MILESTONES = (10, 20)


def schedule(base: float, changing: bool):
    return [base * (0.1 ** sum(it >= s for s in MILESTONES) if changing else 1.0) for it in range(STEPS)]


def unit_gain_reference(net, batches, lrs, momentum, wd):
    """v = m*v + (1-m)*lr*(g + wd*w); w = w - v, in numpy."""
    w = {k: p.detach().numpy().copy() for k, p in net.named_parameters()}
    v = {k: np.zeros_like(x) for k, x in w.items()}
    for it, lr in enumerate(lrs):
        grads = grads_at(net, w, batches[it % len(batches)])
        for k in w:
            v[k] = momentum * v[k] + (1 - momentum) * lr * (grads[k] + wd * w[k])
            w[k] = w[k] - v[k]
    return w


def run(net, opt, batches, lrs):
    for it, lr in enumerate(lrs):
        for group in opt.param_groups:
            group["lr"] = lr  # what any scheduler does between steps
        opt.zero_grad()
        x, y = batches[it % len(batches)]
        F.cross_entropy(net(x), y).backward()
        opt.step()
    return {k: p.detach().numpy().copy() for k, p in net.named_parameters()}


def test_unit_gain_to_caffe_is_exact_even_with_a_changing_rate(tiny_net, batches):
    source = SGDHyperParams(lr=0.5, momentum=0.9, weight_decay=1e-3, convention="unit_gain")
    conv = convert_hyperparams(source, "caffe", lr_changes=True)
    assert conv.exact
    assert conv.target.lr == pytest.approx(0.05) and conv.lr_scale == pytest.approx(0.1)
    assert (conv.target.momentum, conv.target.weight_decay) == (0.9, 1e-3)
    reference = unit_gain_reference(tiny_net, batches, schedule(source.lr, True), 0.9, 1e-3)
    net = copy.deepcopy(tiny_net)
    opt = CaffeSGD(net.parameters(), lr=conv.target.lr, momentum=0.9, weight_decay=1e-3)
    ours = run(net, opt, batches, [lr * conv.lr_scale for lr in schedule(source.lr, True)])
    assert max_diff(reference, ours) < 1e-10
    # the naive port (same number as the rate) is the 1/(1-m) error the release notes warn about
    net2 = copy.deepcopy(tiny_net)
    wrong = run(net2, CaffeSGD(net2.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-3), batches, schedule(0.5, True))
    assert max_diff(reference, wrong) > 1e-2


def test_pytorch_to_caffe_is_exact_with_a_constant_rate(tiny_net, batches):
    source = SGDHyperParams(lr=0.05, momentum=0.9, weight_decay=1e-3, convention="pytorch")
    conv = convert_hyperparams(source, "caffe", lr_changes=False)
    assert conv.exact and conv.target.lr == 0.05
    net_t, net_c = copy.deepcopy(tiny_net), copy.deepcopy(tiny_net)
    torch_w = run(net_t, torch.optim.SGD(net_t.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3), batches,
                  schedule(0.05, False))
    caffe_w = run(net_c, CaffeSGD(net_c.parameters(), lr=conv.target.lr, momentum=0.9, weight_decay=1e-3), batches,
                  schedule(conv.target.lr, False))
    assert max_diff(torch_w, caffe_w) < 1e-10


def test_pytorch_to_caffe_with_a_changing_rate_is_flagged_inexact_and_is(tiny_net, batches):
    source = SGDHyperParams(lr=0.05, momentum=0.9, weight_decay=1e-3, convention="pytorch")
    conv = convert_hyperparams(source, "caffe", lr_changes=True)
    assert not conv.exact and "CaffeSGD" in conv.reason
    net_t, net_c = copy.deepcopy(tiny_net), copy.deepcopy(tiny_net)
    torch_w = run(net_t, torch.optim.SGD(net_t.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3), batches,
                  schedule(0.05, True))
    caffe_w = run(net_c, CaffeSGD(net_c.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3), batches,
                  schedule(0.05, True))
    assert max_diff(torch_w, caffe_w) > 1e-3


def test_zero_momentum_is_exact_whatever_the_schedule(tiny_net, batches):
    conv = convert_hyperparams(SGDHyperParams(lr=0.05, momentum=0.0, convention="pytorch"), "caffe", lr_changes=True)
    assert conv.exact
    net_t, net_c = copy.deepcopy(tiny_net), copy.deepcopy(tiny_net)
    torch_w = run(net_t, torch.optim.SGD(net_t.parameters(), lr=0.05, weight_decay=1e-3), batches, schedule(0.05, True))
    caffe_w = run(net_c, CaffeSGD(net_c.parameters(), lr=0.05, weight_decay=1e-3), batches, schedule(0.05, True))
    assert max_diff(torch_w, caffe_w) < 1e-10


@pytest.mark.parametrize(
    "source, target, lr_factor",
    [("caffe", "unit_gain", 1 / (1 - 0.9)), ("unit_gain", "pytorch", 1 - 0.9), ("pytorch", "unit_gain", 1 / (1 - 0.9)),
     ("caffe", "pytorch", 1.0), ("caffe", "caffe", 1.0)],
)
def test_rate_factors(source, target, lr_factor):
    conv = convert_hyperparams(SGDHyperParams(0.2, 0.9, 1e-4, source), target)
    assert conv.target.lr == pytest.approx(0.2 * lr_factor)
    assert conv.target.convention == target and conv.to_dict()["lr_scale"] == pytest.approx(lr_factor)


def test_unknown_convention_is_refused():
    with pytest.raises(InputError, match="nesterov"):
        convert_hyperparams(SGDHyperParams(0.1, 0.9), "nesterov")
    with pytest.raises(InputError, match="momentum"):
        SGDHyperParams(0.1, 1.5)
