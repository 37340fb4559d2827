"""The one loop that feeds images to models: workers decode and crop, the main process normalises
once per batch and hands the model inputs to a consumer (accuracy, or the parity of two checkpoints).

Where time goes: on a CPU the model bounds the rate (ResNet-50 fp32 ~15 images/s on 2 cores against
a few ms of decode and resize per image), on a GPU the decoder does.  So the JPEG is decoded once per
image for all its crops and all its transforms, in DataLoader workers overlapped with the model; the
crops are views of one resized uint8 tensor (a quarter of float32's bytes cross the process boundary
and the PCIe bus); they arrive channels_last, which is also the faster layout for the model on both
devices.  The loop runs on this process's shard (`runtime.Shard`); callers gather what it measured.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from resnet_port.validation.data import ImageDataset, Item, Sample
from resnet_port.validation.decode import BadImageError
from resnet_port.validation.transforms import CropTransform, Normalizer


@dataclass
class Batch:
    """Images of one DataLoader batch that decoded, stacked per transform, and those that did not."""

    indices: torch.Tensor  # positions in the shard's sample list
    labels: torch.Tensor
    pixels: list[torch.Tensor]  # per transform: uint8 (images * crops, H, W, C)
    mean_crops: list[torch.Tensor | None]
    bad: list[tuple[int, str]]

    def pin_memory(self) -> "Batch":
        self.pixels = [p.pin_memory() for p in self.pixels]
        return self


def collate_items(items: Sequence[Item]) -> Batch:
    good = [it for it in items if it.error is None]
    bad = [(it.index, it.error or "") for it in items if it.error is not None]
    sets = [it.crops if isinstance(it.crops, list) else [it.crops] for it in good]
    count = len(sets[0]) if sets else 0
    pixels, means = [], []
    for t in range(count):
        pixels.append(torch.cat([s[t].pixels for s in sets]))
        has_mean = sets[0][t].mean_crops is not None
        means.append(torch.cat([s[t].mean_crops for s in sets]) if has_mean else None)
    return Batch(
        torch.tensor([it.index for it in good], dtype=torch.int64),
        torch.tensor([it.label for it in good], dtype=torch.int64),
        pixels,
        means,
        bad,
    )


def make_loader(dataset: ImageDataset, batch_size: int, workers: int, device: torch.device) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate_items,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if workers > 0 else None,
        persistent_workers=False,
    )


def iterate_batches(
    loader: DataLoader, samples: Sequence[Sample], skip_bad: bool, skipped: list[str], bar: tqdm
) -> Iterator[Batch]:
    """Batches with their undecodable images reported (and skipped with ``skip_bad``, else raised)."""
    for batch in loader:
        for index, error in batch.bad:
            if not skip_bad:
                raise BadImageError(f"{error} (pass --skip-bad to skip unreadable images)")
            skipped.append(str(samples[index].path))
            tqdm.write(f"skipped: {error}", file=sys.stderr)
        bar.update(len(batch.bad))
        if len(batch.indices):
            yield batch
        bar.update(len(batch.indices))


@dataclass
class LoopRun:
    """What the loop itself saw on one shard: skipped files, seconds, and the bad image that
    stopped it, if one did (raised on every rank after the exchange, not before it, so that no rank
    waits for one that has stopped)."""

    skipped: list[str]
    seconds: float
    failure: str | None


# consume(batch, inputs): inputs[t] is the model input of transform t, float (images * crops, C, H, W).
Consumer = Callable[[Batch, list[torch.Tensor]], None]


def run_loop(
    samples: Sequence[Sample],
    transforms: Sequence[CropTransform],
    normalizers: Sequence[Normalizer],
    consume: Consumer,
    *,
    device: torch.device,
    batch_size: int,
    workers: int,
    channels_last: bool = True,
    skip_bad: bool = False,
    progress: bool = True,
    desc: str = "validate",
) -> LoopRun:
    """Decode each image once, cut every transform's crops, normalise them on ``device`` a batch at
    a time and pass them to ``consume``, under ``inference_mode``."""
    skipped: list[str] = []
    failure = None
    bar = tqdm(total=len(samples), unit="img", desc=desc, disable=not progress, dynamic_ncols=True)
    start = time.perf_counter()
    with torch.inference_mode():
        loader = make_loader(ImageDataset(samples, list(transforms)), batch_size, workers, device)
        try:
            for batch in iterate_batches(loader, samples, skip_bad, skipped, bar):
                inputs = []
                for normalizer, pixels, means in zip(normalizers, batch.pixels, batch.mean_crops):
                    pixels = pixels.to(device, non_blocking=True)
                    means = means.to(device, non_blocking=True) if means is not None else None
                    inputs.append(normalizer(pixels, means, channels_last))
                consume(batch, inputs)
        except BadImageError as exc:
            failure = str(exc)
    seconds = time.perf_counter() - start
    bar.close()
    return LoopRun(skipped, seconds, failure)
