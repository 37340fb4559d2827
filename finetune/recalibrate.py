"""BatchNorm statistics recomputed as exact averages over a fixed set of batches.

Kaiming He's release notes: "the provided mean and variance are strictly computed using average
(not moving average) on a sufficiently large training batch after the training procedure".  A
moving average (PyTorch's ``momentum=0.1``) weights the last batches most and lags the weights it
was collected under; here each BN layer's ``running_mean`` / ``running_var`` become the per-channel
mean and variance of that layer's input over *all* the given images (every pixel of every image
counts once), accumulated in float64 with Chan's pairwise update so that nothing is lost to
cancellation.  Two modes, because a BN layer's input depends on the BN layers before it:

``sequential``  layer by layer in forward order: a layer's input is computed with every earlier BN
                already holding its new statistics, in eval mode.  This is what one forward pass of
                all the images as a single huge training batch computes (with ``variance="biased"``:
                training-mode BN divides by n), i.e. the release notes' "large training batch".
                It costs one pass over the data per BN layer (each pass stops at that layer).
``cumulative``  one pass in training mode: every BN normalises each batch with that batch's own
                statistics, as during training, while each layer's input statistics are pooled
                over all batches.  Cheap; the statistics differ from ``sequential`` by how much
                batch statistics differ from the population's.

``variance``: ``unbiased`` stores n/(n-1) times the population variance (the convention of PyTorch's
and Caffe's stored variance), ``biased`` the population variance itself; n counts every pixel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
from torch import nn

from resnet_port.errors import InputError

MODES = ("sequential", "cumulative")
VARIANCES = ("unbiased", "biased")

BatchSource = Iterable[Any] | Callable[[], Iterable[Any]]


class RecalibrationError(InputError):
    """The model or the data cannot be recalibrated as asked."""


class _Stop(Exception):
    """Raised from a hook to end a forward pass once the layer being measured has its input."""


@dataclass
class ChannelStats:
    """Per-channel count, mean and sum of squared deviations (M2), in float64."""

    count: int = 0
    mean: torch.Tensor | None = None
    m2: torch.Tensor | None = None

    def add(self, x: torch.Tensor) -> None:
        """Fold in a batch (N, C, ...): every position of every sample is one observation per channel."""
        x = x.detach().to(torch.float64)
        dims = [0, *range(2, x.dim())]
        n = x.numel() // x.shape[1]
        mean = x.mean(dim=dims)
        m2 = ((x - mean.view(1, -1, *([1] * (x.dim() - 2)))) ** 2).sum(dim=dims)
        if self.mean is None:
            self.count, self.mean, self.m2 = n, mean, m2
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta**2 * (self.count * n / total)
        self.count = total

    def variance(self, kind: str) -> torch.Tensor:
        if self.mean is None or self.count < 2:
            raise RecalibrationError(f"variance needs at least 2 observations per channel, got {self.count}")
        return self.m2 / (self.count - 1 if kind == "unbiased" else self.count)


@dataclass
class RecalibrationResult:
    """What was done, for the checkpoint's metadata."""

    mode: str
    variance: str
    batches: int
    images: int
    layers: list[str]
    observations: dict[str, int] = field(default_factory=dict)  # per layer: values per channel
    changes: dict[str, dict[str, float]] = field(default_factory=dict)  # per layer: max |new - old|

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": "exact average over all batches (not a moving average)",
            "mode": self.mode,
            "variance": self.variance,
            "batches": self.batches,
            "images": self.images,
            "bn_layers": len(self.layers),
            "observations_per_channel": dict(self.observations),
            "max_abs_change": dict(self.changes),
        }


def batch_norm_layers(model: nn.Module) -> dict[str, nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm module of ``model`` by name, refusing those without running statistics."""
    layers = {name: m for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    for name, m in layers.items():
        if m.running_mean is None or m.running_var is None:
            raise RecalibrationError(f"BN layer {name!r} keeps no running statistics (track_running_stats=False)")
    if not layers:
        raise RecalibrationError("the model has no BatchNorm layers to recalibrate")
    return layers


def _images(item: Any) -> torch.Tensor:
    """The input tensor of a batch: a tensor, or the first element of an (images, labels) pair."""
    if isinstance(item, (tuple, list)) and item:
        item = item[0]
    if not isinstance(item, torch.Tensor) or item.dim() < 2:
        raise RecalibrationError(f"a batch must be an image tensor (N, C, H, W) or (images, labels); got {type(item).__name__}")
    return item


def _iterate(batches: BatchSource) -> Iterable[torch.Tensor]:
    source = batches() if callable(batches) else batches
    for item in source:
        yield _images(item)


def _forward_order(model: nn.Module, layers: dict[str, nn.Module], first: torch.Tensor) -> list[str]:
    """BN layers in the order the forward pass calls them (a topological order of their inputs)."""
    order: list[str] = []
    handles = [m.register_forward_pre_hook(lambda mod, inp, name=name: order.append(name)) for name, m in layers.items()]
    try:
        with torch.no_grad():
            model(first)
    finally:
        for h in handles:
            h.remove()
    missing = [name for name in layers if name not in order]
    if missing:
        raise RecalibrationError(f"BN layers never called by the forward pass: {', '.join(missing)}")
    seen: list[str] = []
    for name in order:
        if name in seen:
            raise RecalibrationError(f"BN layer {name!r} is called twice per forward pass; its input is ambiguous")
        seen.append(name)
    return seen


def recalibrate_bn(
    model: nn.Module,
    batches: BatchSource,
    mode: str = "sequential",
    variance: str = "unbiased",
    device: str | torch.device | None = None,
    progress: Callable[[int], None] | None = None,
) -> RecalibrationResult:
    """Overwrite every BN layer's running statistics with their exact average over ``batches``.

    ``batches`` yields image tensors (or (images, labels) pairs).  ``sequential`` reads them once per
    BN layer, so it must be re-iterable (a list, a DataLoader) or a function returning a fresh iterable;
    the batches must come in the same order with the same content each time.
    ``progress`` is called with the number of batches processed after each one.  The model is left
    in eval mode; its parameters are not touched.
    """
    if mode not in MODES:
        raise RecalibrationError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if variance not in VARIANCES:
        raise RecalibrationError(f"variance must be one of {', '.join(VARIANCES)}, got {variance!r}")
    if mode == "sequential" and not callable(batches) and iter(batches) is batches:
        raise RecalibrationError(
            "sequential mode reads the data once per BN layer: pass a list, a DataLoader or a function returning "
            "the batches, not a one-shot iterator or generator"
        )
    layers = batch_norm_layers(model)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device).eval()
    first = next(iter(_iterate(batches)), None)
    if first is None:
        raise RecalibrationError("no batches to recalibrate on")
    order = _forward_order(model, layers, first.to(device))
    old = {name: (layers[name].running_mean.clone(), layers[name].running_var.clone()) for name in order}
    tick = progress or (lambda n: None)
    if mode == "sequential":
        stats, count, images = _sequential(model, layers, order, batches, variance, device, tick)
    else:
        stats, count, images = _cumulative(model, layers, order, batches, variance, device, tick)
    result = RecalibrationResult(mode, variance, count, images, order)
    for name in order:
        result.observations[name] = stats[name].count
        mean, var = old[name]
        m = layers[name]
        result.changes[name] = {
            "mean": float((m.running_mean.double() - mean.double()).abs().max()),
            "var": float((m.running_var.double() - var.double()).abs().max()),
        }
    model.eval()
    return result


def _store(module: nn.modules.batchnorm._BatchNorm, stats: ChannelStats, variance: str, name: str) -> None:
    if stats.mean is None or stats.mean.numel() != module.running_mean.numel():
        raise RecalibrationError(f"BN layer {name!r}: input has {None if stats.mean is None else stats.mean.numel()} "
                                 f"channels, the layer {module.running_mean.numel()}")
    with torch.no_grad():
        module.running_mean.copy_(stats.mean.to(module.running_mean.dtype))
        module.running_var.copy_(stats.variance(variance).to(module.running_var.dtype))
        if module.num_batches_tracked is not None:
            module.num_batches_tracked.zero_()


def _sequential(model, layers, order, batches, variance, device, tick):
    stats: dict[str, ChannelStats] = {}
    done = 0
    images = 0
    for index, name in enumerate(order):
        acc = ChannelStats()

        def measure(mod, inputs, acc=acc):
            acc.add(inputs[0])
            raise _Stop

        handle = layers[name].register_forward_pre_hook(measure)
        count = 0
        try:
            with torch.no_grad():
                for x in _iterate(batches):
                    try:
                        model(x.to(device))
                    except _Stop:
                        pass
                    count += 1
                    if index == 0:
                        images += x.shape[0]
                    done += 1
                    tick(done)
        finally:
            handle.remove()
        _store(layers[name], acc, variance, name)  # later layers now see this layer recalibrated
        stats[name] = acc
    return stats, count, images


def _cumulative(model, layers, order, batches, variance, device, tick):
    stats = {name: ChannelStats() for name in order}
    handles = [layers[name].register_forward_pre_hook(lambda mod, inputs, acc=stats[name]: acc.add(inputs[0]))
               for name in order]
    count = images = 0
    try:
        for name in order:
            layers[name].train()  # normalise with each batch's own statistics, as in training
        with torch.no_grad():
            for x in _iterate(batches):
                model(x.to(device))
                count += 1
                images += x.shape[0]
                tick(count)
    finally:
        for h in handles:
            h.remove()
        model.eval()
    for name in order:
        _store(layers[name], stats[name], variance, name)
    return stats, count, images
