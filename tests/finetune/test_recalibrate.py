"""recalibrate_bn against statistics computed separately in the test: by hand for a small explicit
net, by PyTorch's own training-mode BatchNorm on the whole dataset as one batch for reference
ResNets, and the moving average / mean-of-batch-variances shortcuts shown to be wrong."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resnet_port import resnet_ref
from resnet_port.finetune.recalibrate import RecalibrationError, recalibrate_bn

EPS = 1e-5


def small_net() -> nn.Sequential:
    torch.manual_seed(3)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Conv2d(6, 5, 3, stride=2, padding=1), nn.BatchNorm2d(5), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 4),
    ).double()
    with torch.no_grad():  # statistics set wrong on purpose, affine parameters not trivial
        for m in net:
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-3, 3)
                m.running_var.uniform_(5, 9)
                m.weight.uniform_(0.5, 2.0)
                m.bias.uniform_(-1, 1)
    return net


def dataset(n_batches=4, batch=5, size=9, channels=3, seed=7, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    # not zero-mean, not unit-variance, and different from batch to batch
    return [torch.randn(batch, channels, size, size, generator=gen, dtype=dtype) * (1 + i) + 0.5 * i
            for i in range(n_batches)]


def by_hand(net: nn.Sequential, data, variance: str):
    """Layer by layer on the whole dataset at once: stats of BN1's input, normalise, BN2's input..."""
    x = torch.cat(data)
    conv1, bn1, _, conv2, bn2 = net[0], net[1], net[2], net[3], net[4]
    stats = []
    h = F.conv2d(x, conv1.weight, conv1.bias, padding=1)
    for bn, conv_next in ((bn1, conv2), (bn2, None)):
        mean = h.mean(dim=(0, 2, 3))
        var = h.var(dim=(0, 2, 3), unbiased=(variance == "unbiased"))
        stats.append((mean, var))
        h = (h - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + EPS)
        h = torch.relu(h * bn.weight[None, :, None, None] + bn.bias[None, :, None, None])
        if conv_next is not None:
            h = F.conv2d(h, conv_next.weight, conv_next.bias, stride=2, padding=1)
    return stats


@pytest.mark.parametrize("variance", ["unbiased", "biased"])
def test_sequential_gives_the_datasets_statistics_of_each_bn_input(variance):
    net = small_net()
    data = dataset()
    expected = by_hand(net, data, variance)
    result = recalibrate_bn(net, data, mode="sequential", variance=variance)
    for bn, (mean, var) in zip((net[1], net[4]), expected):
        torch.testing.assert_close(bn.running_mean, mean, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(bn.running_var, var, rtol=1e-10, atol=1e-12)
    assert result.layers == ["1", "4"] and result.batches == 4 and result.images == 20
    assert result.observations == {"1": 20 * 81, "4": 20 * 25}
    assert not net.training


def test_biased_and_unbiased_differ_by_n_over_n_minus_1():
    a, b = small_net(), small_net()
    recalibrate_bn(a, dataset(), variance="unbiased")
    recalibrate_bn(b, dataset(), variance="biased")
    n = 20 * 81
    torch.testing.assert_close(a[1].running_var, b[1].running_var * n / (n - 1), rtol=1e-12, atol=0)


def test_cumulative_pools_statistics_under_batch_normalisation():
    net = small_net()
    data = dataset()
    # independent: each batch through a training-mode copy, every BN input kept, pooled with torch.var
    twin = copy.deepcopy(net).train()
    inputs = {1: [], 4: []}
    hooks = [twin[i].register_forward_pre_hook(lambda m, inp, i=i: inputs[i].append(inp[0].detach()))
             for i in inputs]
    with torch.no_grad():
        for x in data:
            twin(x)
    for h in hooks:
        h.remove()
    recalibrate_bn(net, data, mode="cumulative", variance="unbiased")
    for i in inputs:
        pooled = torch.cat(inputs[i])
        torch.testing.assert_close(net[i].running_mean, pooled.mean(dim=(0, 2, 3)), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(net[i].running_var, pooled.var(dim=(0, 2, 3)), rtol=1e-10, atol=1e-12)
    # the first BN's input does not depend on any BN: both modes agree there, and only there
    seq = small_net()
    recalibrate_bn(seq, data, mode="sequential")
    torch.testing.assert_close(seq[1].running_var, net[1].running_var, rtol=1e-10, atol=0)
    assert (seq[4].running_var - net[4].running_var).abs().max() > 1e-3


def test_moving_average_and_mean_of_batch_variances_are_not_the_exact_average():
    """The pitfalls the release notes warn of, computed here and shown to miss by far more than tolerance."""
    data = dataset()
    exact = small_net()
    recalibrate_bn(exact, data, mode="cumulative")

    moving = small_net().train()  # PyTorch's default: exponential moving average, momentum 0.1
    with torch.no_grad():
        for x in data:
            moving(x)
    assert (moving[1].running_mean - exact[1].running_mean).abs().max() > 0.1

    # averaging each batch's variance forgets the spread between batch means
    per_batch = [F.conv2d(x, exact[0].weight, exact[0].bias, padding=1) for x in data]
    mean_of_vars = torch.stack([h.var(dim=(0, 2, 3)) for h in per_batch]).mean(0)
    assert (mean_of_vars - exact[1].running_var).abs().max() > 1e-2


def tiny(arch: str) -> nn.Module:
    base = resnet_ref.get_spec(arch, num_classes=7)
    widths = (8, 8, 16, 16) if base.block == "basic" else (4, 4, 8, 8)
    spec = dataclasses.replace(base, layers=(1, 2, 1, 1), widths=widths, stem_width=8)
    torch.manual_seed(5)
    model = resnet_ref.build_model(spec)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(2, 4)
                if m.affine:
                    m.bias.uniform_(-0.3, 0.3)
    return model.eval()


@pytest.mark.parametrize("arch", ["resnet18", "resnet50_v1d", "mxnet_resnet50", "resnet18_v2", "caffe_resnet50"])
def test_sequential_equals_one_training_batch_of_the_whole_dataset(arch):
    """Kaiming He's "large training batch": all the images as one batch through training-mode BN."""
    model = tiny(arch)
    data = dataset(n_batches=3, batch=4, size=32, dtype=torch.float32)
    huge = copy.deepcopy(model).train()
    for m in huge.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 1.0  # running stats := this batch's statistics (the variance unbiased)
    with torch.no_grad():
        huge.double()(torch.cat(data).double())
    model = model.double()
    result = recalibrate_bn(model, [x.double() for x in data], mode="sequential", variance="biased")
    bns = {n: m for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    twins = dict(huge.named_modules())
    assert set(result.layers) == set(bns)
    for name, bn in bns.items():
        n = result.observations[name]
        torch.testing.assert_close(bn.running_mean, twins[name].running_mean, rtol=1e-7, atol=1e-9)
        torch.testing.assert_close(bn.running_var, twins[name].running_var * (n - 1) / n, rtol=1e-7, atol=1e-9)


def test_errors_name_the_problem():
    with pytest.raises(RecalibrationError, match="no BatchNorm"):
        recalibrate_bn(nn.Sequential(nn.Conv2d(3, 3, 1)), dataset())
    with pytest.raises(RecalibrationError, match="mode"):
        recalibrate_bn(small_net(), dataset(), mode="moving")
    with pytest.raises(RecalibrationError, match="once per BN layer"):
        recalibrate_bn(small_net(), (x for x in dataset()))
    with pytest.raises(RecalibrationError, match="no batches"):
        recalibrate_bn(small_net(), [])
    with pytest.raises(RecalibrationError, match="track_running_stats"):
        recalibrate_bn(nn.Sequential(nn.BatchNorm2d(3, track_running_stats=False)), dataset())


def test_a_dataloader_is_accepted_and_gives_the_same_statistics():
    from torch.utils.data import DataLoader, TensorDataset

    data = dataset()
    loader = DataLoader(TensorDataset(torch.cat(data)), batch_size=5, shuffle=False)
    a, b = small_net(), small_net()
    recalibrate_bn(a, data)
    recalibrate_bn(b, loader)
    torch.testing.assert_close(a[4].running_var, b[4].running_var, rtol=1e-12, atol=0)
