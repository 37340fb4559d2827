"""Parity of two checkpoints: the same images through both, each with its own preprocessing,
decoded once; top-1 agreement and the max / mean absolute logit difference.

It runs through the same loop as accuracy (`validation.loop`), so it shards across processes the
same way (``torchrun ... -m resnet_port.validation.cli --parity A B``): each rank compares its own
images, and the sums (not means) are added up once at the end.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from resnet_port.checkpoints import CheckpointMetadata
from resnet_port.errors import InputError
from resnet_port.parity import ParityTally
from resnet_port.validation.data import DatasetError, DatasetIndex, Sample, is_image_file, scan_dataset
from resnet_port.validation.decode import BadImageError
from resnet_port.validation.loop import Batch, LoopRun, run_loop
from resnet_port.validation.metrics import average_crop_probabilities
from resnet_port.validation.runtime import default_batch_size, default_workers, prepare_model, resolve_device, sharded, versions
from resnet_port.validation.sources import TarSource
from resnet_port.validation.transforms import CropTransform, Normalizer


@dataclass
class ShardParity:
    """One shard's figures: the shared parity tally (`resnet_port.parity`, sums and maxima, so shards add
    up exactly) and the images whose top-1 differs."""

    tally: ParityTally = field(default_factory=ParityTally)
    disagreements: list[str] = field(default_factory=list)

    def add(self, logits_a: torch.Tensor, logits_b: torch.Tensor, crops: int, paths: Sequence[str]) -> None:
        """One batch: (images * crops, classes) logits of each checkpoint (A is the reference side);
        top-1 on the crop-averaged probabilities, differences over every crop's logits."""
        top_a = average_crop_probabilities(logits_a, crops).argmax(1)
        top_b = average_crop_probabilities(logits_b, crops).argmax(1)
        same = self.tally.add(logits_a.float(), logits_b.float(), top_a, top_b)
        self.disagreements += [p for p, s in zip(paths, same.tolist()) if not s]

    @classmethod
    def total(cls, parts: Sequence["ShardParity"]) -> "ShardParity":
        return cls(ParityTally.total([p.tally for p in parts]), [d for p in parts for d in p.disagreements])


def compare_checkpoints(
    model_a: torch.nn.Module,
    metadata_a: CheckpointMetadata,
    model_b: torch.nn.Module,
    metadata_b: CheckpointMetadata,
    data_dir: str | Path,
    crops: int = 1,
    *,
    labels_file: str | Path | None = None,
    batch_size: int | None = None,
    workers: int | None = None,
    device: str | torch.device | None = "cpu",
    limit: int | None = None,
    shuffle_seed: int | None = None,
    skip_bad: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """The same images through two checkpoints, each with its own preprocessing (decoded once):
    the parity record of `resnet_port.parity` (A is the reference side).  Needs no labels: in the flat
    layout without a labels file every image file in the folder is used.  Under torch.distributed
    every rank returns the same totals."""
    dev = resolve_device(device)
    index = _unlabelled_or_scan(data_dir, labels_file).subset(limit, shuffle_seed)
    out_a, out_b = int(model_a.fc.out_features), int(model_b.fc.out_features)
    if out_a != out_b:
        raise InputError(f"the checkpoints have {out_a} and {out_b} outputs: their logits cannot be compared")
    transforms = [CropTransform(metadata_a.preprocessing, crops), CropTransform(metadata_b.preprocessing, crops)]
    batch_size = batch_size or default_batch_size(dev, crops)
    start = time.perf_counter()
    with sharded(dev) as (shard, dev):
        workers = default_workers(dev, shard.world) if workers is None else workers
        normalizers = [Normalizer(metadata_a.preprocessing, dev), Normalizer(metadata_b.preprocessing, dev)]
        models = [prepare_model(model_a, dev, True), prepare_model(model_b, dev, True)]
        samples = shard.take(index.samples)
        tally = ShardParity()

        def consume(batch: Batch, inputs: list[torch.Tensor]) -> None:
            logits_a, logits_b = (model(x).float() for model, x in zip(models, inputs))
            tally.add(logits_a, logits_b, crops, [str(samples[i].path) for i in batch.indices.tolist()])

        run = run_loop(
            samples, transforms, normalizers, consume, device=dev, batch_size=batch_size, workers=workers,
            skip_bad=skip_bad, progress=progress and shard.rank == 0, desc="parity",
        )  # fmt: skip
        gathered: list[tuple[ShardParity, LoopRun]] = shard.gather((tally, run))
    failures = [r.failure for _, r in gathered if r.failure is not None]
    if failures:
        raise BadImageError(failures[0])
    total = ShardParity.total([t for t, _ in gathered])
    images = total.tally.samples
    if images == 0:
        raise InputError(f"{data_dir}: none of the {len(index.samples)} images could be decoded")
    return {
        "images": images,
        "crops": crops,
        **total.tally.result(),  # resnet_port.parity's keys: samples, max_abs_diff, max_rel_diff, top1_agreement, ...
        "disagreements": sorted(total.disagreements, key=_order_of(index)),
        "skipped": sorted(path for _, r in gathered for path in r.skipped),
        "images_per_s": images / (time.perf_counter() - start),
        "processes": shard.world,
        "rank": shard.rank,
        "versions": versions(),
    }


def _order_of(index: DatasetIndex):
    """Sort key: an image's position in the dataset, so that shards' lists merge in file order."""
    position = {str(s.path): i for i, s in enumerate(index.samples)}
    return lambda path: position.get(path, len(position))


def _unlabelled_or_scan(data_dir: str | Path, labels_file: str | Path | None) -> DatasetIndex:
    """Parity needs no labels: a folder (or uncompressed tar) of bare images is read with label 0 for each."""
    try:
        return scan_dataset(data_dir, labels_file)
    except DatasetError:
        root = Path(data_dir)
        if labels_file is not None:
            raise
        if root.is_file():  # a flat tar of bare images, read in place
            tar = TarSource.open(root)
            samples = [Sample(tar.display(name), 0, tar.members[name]) for name in tar.top_level()]
            if not samples:
                raise
            return DatasetIndex(tar.path, "flat", samples, source="tar")
        if not root.is_dir():
            raise
        files = sorted(p for p in root.iterdir() if p.is_file() and is_image_file(p.name))
        if not files:
            raise
        return DatasetIndex(root, "flat", [Sample(p, 0) for p in files])
