"""The evaluation loop: workers decode and crop, the main process normalises once per batch and
runs the model under ``inference_mode``; shards across processes add up exactly once.

Where time goes: on a CPU the model bounds the rate (ResNet-50 fp32 ~15 images/s on 2 cores against
a few ms of decode and resize per image), on a GPU the decoder does.  So the JPEG is decoded once per
image for all its crops, in DataLoader workers overlapped with the model; the crops are views of one
resized uint8 tensor (a quarter of float32's bytes cross the process boundary and the PCIe bus); they
arrive channels_last, which is also the faster layout for the model on both devices.

Distributed (``torchrun --nproc-per-node N -m resnet_port.validation.cli ...``, or any initialised process group):
rank r takes images r, r + N, r + 2N, ... (no padding, unlike ``DistributedSampler``, which repeats
images to even the shards and so counts some twice); counts and per-image records are gathered once
at the end.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import PIL
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from tqdm import tqdm

from resnet_port.checkpoints import CheckpointMetadata, sha256_file
from resnet_port.checkpoints.io import atomic_output
from resnet_port import __version__
from resnet_port.errors import InputError
from resnet_port.parity import ParityTally
from resnet_port.validation.data import DatasetIndex, ImageDataset, Item, class_order_warnings, read_class_list, scan_dataset
from resnet_port.validation.decode import BadImageError
from resnet_port.validation.metrics import Tally, average_crop_probabilities
from resnet_port.validation.transforms import CropTransform, Normalizer

RESIZE_IMPL = "pillow-resize (torchvision Resize(int) on PIL: shorter side, long side truncated, antialiased)"
CROP_IMPL = "torchvision CenterCrop/TenCrop offsets (round half to even), crops as views"


# -- batches --------------------------------------------------------------------------------------
@dataclass
class Batch:
    """Images of one DataLoader batch that decoded, stacked per transform, and those that did not."""

    indices: torch.Tensor
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


# -- devices and processes ------------------------------------------------------------------------
def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise InputError(f"--device {device!r} is not a device name (cpu, cuda, cuda:1, auto)") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device}: CUDA is not available on this machine")
    return resolved


@dataclass
class Shard:
    """This process's place among the evaluating processes."""

    rank: int = 0
    world: int = 1
    owns_group: bool = False

    @classmethod
    def current(cls, device: torch.device) -> "Shard":
        """The initialised process group, or the one torchrun's environment describes, or none."""
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world > 1 and dist.is_available() and "RANK" in os.environ:
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            return cls(dist.get_rank(), dist.get_world_size(), owns_group=True)
        return cls()

    def device_for(self, device: torch.device) -> torch.device:
        """One GPU per process: ``cuda`` under torchrun means ``cuda:LOCAL_RANK``."""
        if device.type != "cuda" or device.index is not None or self.world == 1:
            return device
        local = int(os.environ.get("LOCAL_RANK", self.rank % torch.cuda.device_count()))
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        return device

    def take(self, items: Sequence[Any]) -> list[Any]:
        return list(items[self.rank :: self.world])

    def global_index(self, local: int) -> int:
        return self.rank + self.world * local

    def gather(self, obj: Any) -> list[Any]:
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.owns_group:
            dist.destroy_process_group()


def default_workers(device: torch.device, processes: int = 1) -> int:
    """DataLoader workers per process: on a GPU enough to feed it (the decoder bounds the rate
    there); on a CPU, where the model bounds it, one (two cores) to four, beside the model threads."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    cores = max(1, cores // max(1, processes))
    if device.type == "cuda":
        return max(1, min(12, cores - 2))
    return max(1, min(4, cores // 4))


def default_batch_size(device: torch.device, crops: int) -> int:
    """Images per batch: ~8-10 crops a forward on a CPU (its best throughput), ~256 on a GPU."""
    per_forward = 256 if device.type == "cuda" else 8
    return max(1, per_forward // crops)


def versions() -> dict[str, str]:
    return {
        "resnet_port": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "python": platform.python_version(),
    }


# -- the loop -------------------------------------------------------------------------------------
def _loader(dataset: ImageDataset, batch_size: int, workers: int, device: torch.device) -> DataLoader:
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


def _batches(
    loader: DataLoader, samples: Sequence, skip_bad: bool, skipped: list[str], bar: tqdm
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


def _prepare(model: torch.nn.Module, device: torch.device, channels_last: bool) -> torch.nn.Module:
    model = model.eval().to(device)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def evaluate(
    model: torch.nn.Module,
    metadata: CheckpointMetadata,
    data_dir: str | Path,
    crops: int = 1,
    *,
    labels_file: str | Path | None = None,
    classes_file: str | Path | None = None,
    resize: int | None = None,
    crop: int | None = None,
    interpolation: str | None = None,
    batch_size: int | None = None,
    workers: int | None = None,
    device: str | torch.device | None = "cpu",
    channels_last: bool = True,
    limit: int | None = None,
    shuffle_seed: int | None = None,
    skip_bad: bool = False,
    per_class: bool = False,
    predictions: str | Path | None = None,
    checkpoint: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Top-1 / top-5 of ``model`` on the images in ``data_dir`` under the 1- or 10-crop protocol.

    Preprocessing comes from ``metadata.preprocessing``; ``resize``, ``crop`` and ``interpolation``
    override its geometry.  Returns the JSON result (see the README's ``validate`` section); with
    ``predictions`` also writes one JSON line per image.  Under torch.distributed every rank returns
    the same totals and only rank 0 writes files.  The model is put in eval mode and moved to the
    device (and to channels_last) in place, as ``Module.to`` does.
    """
    dev = resolve_device(device)
    transform = CropTransform(metadata.preprocessing, crops, resize, crop, interpolation)  # bad options first
    if predictions is not None and not Path(predictions).parent.exists():
        raise InputError(f"{predictions}: the folder {Path(predictions).parent} does not exist")
    num_classes = int(model.fc.out_features) if hasattr(model, "fc") else int(metadata.spec.num_classes)
    class_list = read_class_list(classes_file) if classes_file else metadata.classes
    index = scan_dataset(data_dir, labels_file, class_list).subset(limit, shuffle_seed)
    warnings = class_order_warnings(index, metadata, num_classes)
    batch_size = batch_size or default_batch_size(dev, crops)

    shard = Shard.current(dev)
    try:
        dev = shard.device_for(dev)
        workers = default_workers(dev, shard.world) if workers is None else workers
        if shard.rank == 0:
            for line in warnings:
                print(f"warning: {line}", file=sys.stderr)
        run = _run_shard(
            _prepare(model, dev, channels_last), transform, Normalizer(metadata.preprocessing, dev),
            shard.take(index.samples), shard, dev, num_classes, batch_size, workers, channels_last, skip_bad,
            keep_records=predictions is not None, progress=progress and shard.rank == 0,
        )  # fmt: skip
        # One exchange: counts, per-image records, skipped files, times and failures of every rank.
        gathered = shard.gather(run)
    finally:
        shard.close()
    failures = [r.failure for r in gathered if r.failure is not None]
    if failures:
        raise BadImageError(failures[0])
    tally = Tally.from_tensor(sum(r.counts for r in gathered), num_classes)
    if tally.images == 0:
        raise InputError(f"{data_dir}: none of the {len(index.samples)} images could be decoded")
    elapsed = max(r.seconds for r in gathered)

    p = metadata.preprocessing
    result: dict[str, Any] = {
        **tally.summary(),
        "crops": crops,
        "skipped": sorted(path for r in gathered for path in r.skipped),
        "protocol": {
            "crops": crops,
            "resize": transform.resize,
            "crop": transform.crop,
            "interpolation": transform.interpolation,
            "resize_impl": RESIZE_IMPL,
            "crop_impl": CROP_IMPL,
            "averaging": "softmax probabilities averaged over crops",
            "channel_order": p.channel_order,
            "pixel_max": p.pixel_max,
            "mean": list(p.mean) if p.mean is not None and p.mean_image is None else None,
            "std": list(p.std) if p.std is not None else None,
            "mean_image_shape": list(p.mean_image.shape) if p.mean_image is not None else None,
            "mean_image_mode": transform.mean_image_mode,
            "layout": index.layout,
            "data_dir": str(index.root),
            "labels_file": str(index.labels_file) if index.labels_file else None,
            "limit": limit,
            "shuffle_seed": shuffle_seed,
            "class_order": metadata.class_order,
        },
        "arch": metadata.arch,
        "checkpoint": str(checkpoint) if checkpoint else None,
        "checkpoint_sha256": sha256_file(checkpoint) if checkpoint else None,
        "versions": versions(),
        "images_per_s": tally.images / elapsed if elapsed > 0 else None,
        "seconds": elapsed,
        "device": str(dev),
        "processes": shard.world,
        "rank": shard.rank,
        "batch_size": batch_size,
        "workers": workers,
        "channels_last": channels_last,
        "warnings": warnings,
    }
    if per_class:
        result["per_class"] = tally.per_class(index.classes)
    if predictions is not None and shard.rank == 0:
        write_predictions(predictions, sorted((rec for r in gathered for rec in r.records), key=lambda rec: rec["index"]))
    return result


@dataclass
class ShardRun:
    """What one process measured on its shard: integer counts (`Tally.as_tensor`), per-image
    records, skipped files, seconds, and the bad image that stopped it, if one did."""

    counts: torch.Tensor
    records: list[dict[str, Any]]
    skipped: list[str]
    seconds: float
    failure: str | None


def _run_shard(
    model: torch.nn.Module,
    transform: CropTransform,
    normalizer: Normalizer,
    samples: list,
    shard: Shard,
    dev: torch.device,
    num_classes: int,
    batch_size: int,
    workers: int,
    channels_last: bool,
    skip_bad: bool,
    keep_records: bool,
    progress: bool,
) -> ShardRun:
    crops = transform.crops
    tally = Tally(num_classes)
    records: list[dict[str, Any]] = []
    skipped: list[str] = []
    failure = None  # a bad image is raised on every rank after the exchange, not before it
    bar = tqdm(total=len(samples), unit="img", desc=f"validate {crops}-crop", disable=not progress, dynamic_ncols=True)
    start = time.perf_counter()
    with torch.inference_mode():
        loader = _loader(ImageDataset(samples, transform), batch_size, workers, dev)
        try:
            for batch in _batches(loader, samples, skip_bad, skipped, bar):
                pixels = batch.pixels[0].to(dev, non_blocking=True)
                means = batch.mean_crops[0].to(dev, non_blocking=True) if batch.mean_crops[0] is not None else None
                probs = average_crop_probabilities(model(normalizer(pixels, means, channels_last)), crops)
                hits = tally.add(probs, batch.labels)
                if keep_records:
                    records += _records(probs, batch, hits, samples, shard)
        except BadImageError as exc:
            failure = str(exc)
    elapsed = time.perf_counter() - start
    bar.close()
    return ShardRun(tally.as_tensor(), records, skipped, elapsed, failure)


def _records(probs: torch.Tensor, batch: Batch, hits: dict, samples: Sequence, shard: Shard) -> list[dict[str, Any]]:
    top = probs.topk(min(5, probs.shape[1]), dim=1)
    indices, values, correct = top.indices.tolist(), top.values.tolist(), hits[1].tolist()  # one copy each
    return [
        {
            "index": shard.global_index(local),
            "path": str(samples[local].path),
            "label": int(batch.labels[row]),
            "top5": indices[row],
            "probs": [round(p, 7) for p in values[row]],
            "top1_correct": bool(correct[row]),
        }
        for row, local in enumerate(batch.indices.tolist())
    ]


def write_predictions(path: str | Path, records: list[dict[str, Any]]) -> None:
    """One JSON object a line: path, label, top5 (class indices), probs (their averaged scores)."""
    import json

    with atomic_output(path) as tmp:
        with open(tmp, "w") as handle:
            for r in records:
                handle.write(json.dumps({k: r[k] for k in ("path", "label", "top5", "probs")}) + "\n")


# -- parity of two checkpoints -------------------------------------------------------------------
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
    """The same images through two checkpoints, each with its own preprocessing (decoded once): the
    parity record of `resnet_port.parity` (A is the reference side; top-1 on the crop-averaged
    probabilities, the differences over every crop's logits).  Needs no labels: in the flat
    layout without a labels file every image file in the folder is used."""
    dev = resolve_device(device)
    index = _unlabelled_or_scan(data_dir, labels_file).subset(limit, shuffle_seed)
    out_a, out_b = int(model_a.fc.out_features), int(model_b.fc.out_features)
    if out_a != out_b:
        raise InputError(f"the checkpoints have {out_a} and {out_b} outputs: their logits cannot be compared")
    transforms = [CropTransform(metadata_a.preprocessing, crops), CropTransform(metadata_b.preprocessing, crops)]
    normalizers = [Normalizer(metadata_a.preprocessing, dev), Normalizer(metadata_b.preprocessing, dev)]
    models = [_prepare(model_a, dev, True), _prepare(model_b, dev, True)]
    batch_size = batch_size or default_batch_size(dev, crops)
    workers = default_workers(dev) if workers is None else workers
    tally = ParityTally()  # model A is the reference side
    disagreements: list[str] = []
    skipped: list[str] = []
    bar = tqdm(total=len(index.samples), unit="img", desc="parity", disable=not progress, dynamic_ncols=True)
    start = time.perf_counter()
    with torch.inference_mode():
        loader = _loader(ImageDataset(index.samples, transforms), batch_size, workers, dev)
        for batch in _batches(loader, index.samples, skip_bad, skipped, bar):
            logits = []
            for model, norm, pixels, means in zip(models, normalizers, batch.pixels, batch.mean_crops):
                x = norm(pixels.to(dev), None if means is None else means.to(dev))
                logits.append(model(x).float())
            top_a = average_crop_probabilities(logits[0], crops).argmax(1)
            top_b = average_crop_probabilities(logits[1], crops).argmax(1)
            same = torch.from_numpy(tally.add(logits[0], logits[1], top_a, top_b))
            disagreements += [str(index.samples[int(i)].path) for i in batch.indices[~same]]
    bar.close()
    images = tally.samples
    if images == 0:
        raise InputError(f"{data_dir}: none of the {len(index.samples)} images could be decoded")
    return {
        "images": images,
        "crops": crops,
        **tally.result(),  # resnet_port.parity's keys: samples, max_abs_diff, max_rel_diff, top1_agreement, ...
        "disagreements": disagreements,
        "skipped": skipped,
        "images_per_s": images / (time.perf_counter() - start),
        "versions": versions(),
    }


def _unlabelled_or_scan(data_dir: str | Path, labels_file: str | Path | None) -> DatasetIndex:
    """Parity needs no labels: a folder of bare images is read with label 0 for each."""
    from resnet_port.validation.data import DatasetError, Sample, is_image_file

    try:
        return scan_dataset(data_dir, labels_file)
    except DatasetError:
        root = Path(data_dir)
        if not root.is_dir() or labels_file is not None:
            raise
        files = sorted(p for p in root.iterdir() if p.is_file() and is_image_file(p.name))
        if not files:
            raise
        return DatasetIndex(root, "flat", [Sample(p, 0) for p in files])
