"""Accuracy of one checkpoint: top-1 / top-5 under the 1- or 10-crop protocol, per-image records,
and the JSON result of ``validate``.

The images reach the model through `validation.loop` (decode once, crops as views, normalise a
batch at a time) on this process's shard (`validation.runtime`); integer counts from every rank are
added up once, so each image weighs the same however the data was split.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from resnet_port.checkpoints import CheckpointMetadata, sha256_file
from resnet_port.checkpoints.io import atomic_output
from resnet_port.errors import InputError
from resnet_port.validation.data import class_order_warnings, read_class_list, scan_dataset
from resnet_port.validation.decode import BadImageError
from resnet_port.validation.loop import Batch, run_loop
from resnet_port.validation.metrics import Tally, average_crop_probabilities
from resnet_port.validation.parity import compare_checkpoints  # noqa: F401  (re-exported: its old home)
from resnet_port.validation.protocols import resolve_geometry
from resnet_port.validation.runtime import (  # noqa: F401  (default_* and versions re-exported)
    Shard,
    default_batch_size,
    default_workers,
    prepare_model,
    resolve_device,
    sharded,
    versions,
)
from resnet_port.validation.transforms import CropTransform, Normalizer

RESIZE_IMPL = {
    "pil": "pillow-resize (torchvision Resize(int) on PIL: shorter side, long side truncated, antialiased)",
    "cv2": "opencv-resize (cv2.resize as mmcv imresize / mx.image: shorter side, long side truncated, no antialiasing)",
}
CROP_IMPL = {
    "round": "torchvision CenterCrop/TenCrop offsets (round half to even), crops as views",
    "floor": "Gluon center_crop offsets (truncated), TenCrop corners, crops as views",
}

PRECISIONS = ("fp32", "bf16")


@dataclass
class ShardRun:
    """What one process measured on its shard: integer counts (`Tally.as_tensor`), per-image
    records, skipped files, seconds, and the bad image that stopped it, if one did."""

    counts: torch.Tensor
    records: list[dict[str, Any]]
    skipped: list[str]
    seconds: float
    failure: str | None


def evaluate(
    model: torch.nn.Module,
    metadata: CheckpointMetadata,
    data_dir: str | Path,
    crops: int = 1,
    *,
    labels_file: str | Path | None = None,
    classes_file: str | Path | None = None,
    devkit: str | Path | None = None,
    resize: int | None = None,
    crop: int | None = None,
    interpolation: str | None = None,
    protocol: str | None = None,
    crop_pct: float | None = None,
    resize_backend: str | None = None,
    batch_size: int | None = None,
    workers: int | None = None,
    device: str | torch.device | None = "cpu",
    channels_last: bool = True,
    precision: str = "fp32",
    limit: int | None = None,
    shuffle_seed: int | None = None,
    skip_bad: bool = False,
    per_class: bool = False,
    predictions: str | Path | None = None,
    checkpoint: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Top-1 / top-5 of ``model`` on the images in ``data_dir`` under the 1- or 10-crop protocol.

    Data: see `scan_dataset` (ImageFolder, or flat images with Caffe's val.txt, the devkit's ground
    truth with ``devkit``, or Kaggle's CSV; a folder or an uncompressed tar).  Preprocessing comes
    from ``metadata.preprocessing``; ``resize``, ``crop`` and ``interpolation``
    override its geometry.  ``precision="bf16"`` runs the model under bfloat16 autocast (CPU or
    GPU); fp32 stays the reference.  Returns the JSON result (see the README's ``validate`` section); with
    ``predictions`` also writes one JSON line per image.  Under torch.distributed every rank returns
    the same totals and only rank 0 writes files.  The model is put in eval mode and moved to the
    device (and to channels_last) in place, as ``Module.to`` does.
    """
    dev = resolve_device(device)
    if precision not in PRECISIONS:
        raise InputError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    geometry = resolve_geometry(
        metadata.preprocessing, protocol, crop_pct=crop_pct, resize=resize, crop=crop, interpolation=interpolation,
        backend=resize_backend,
    )  # fmt: skip
    transform = CropTransform(metadata.preprocessing, crops, **geometry.transform_options())  # bad options first
    if predictions is not None and not Path(predictions).parent.exists():
        raise InputError(f"{predictions}: the folder {Path(predictions).parent} does not exist")
    num_classes = int(model.fc.out_features) if hasattr(model, "fc") else int(metadata.spec.num_classes)
    class_list = read_class_list(classes_file) if classes_file else metadata.classes
    index = scan_dataset(
        data_dir, labels_file, class_list, devkit=devkit, checkpoint_classes=metadata.classes
    ).subset(limit, shuffle_seed)
    warnings = class_order_warnings(index, metadata, num_classes)
    batch_size = batch_size or default_batch_size(dev, crops)

    with sharded(dev) as (shard, dev):
        workers = default_workers(dev, shard.world) if workers is None else workers
        if shard.rank == 0:
            for line in warnings:
                print(f"warning: {line}", file=sys.stderr)
        run = _run_shard(
            prepare_model(model, dev, channels_last), transform, Normalizer(metadata.preprocessing, dev),
            shard.take(index.samples), shard, dev, num_classes, batch_size, workers, channels_last, skip_bad,
            keep_records=predictions is not None, progress=progress and shard.rank == 0, precision=precision,
        )  # fmt: skip
        # One exchange: counts, per-image records, skipped files, times and failures of every rank.
        gathered = shard.gather(run)
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
            **geometry.record(),
            "resize_impl": RESIZE_IMPL[geometry.backend],
            "crop_impl": CROP_IMPL[geometry.offsets],
            "averaging": "softmax probabilities averaged over crops",
            "channel_order": p.channel_order,
            "pixel_max": p.pixel_max,
            "mean": list(p.mean) if p.mean is not None and p.mean_image is None else None,
            "std": list(p.std) if p.std is not None else None,
            "mean_image_shape": list(p.mean_image.shape) if p.mean_image is not None else None,
            "mean_image_mode": transform.mean_image_mode,
            "layout": index.layout,
            "source": index.source,
            "devkit": str(index.devkit) if index.devkit else None,
            "labels_mapped_by_name": index.mapped_by_name,
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
        "precision": precision,
        "warnings": warnings,
    }
    if per_class:
        result["per_class"] = tally.per_class(index.classes)
    if predictions is not None and shard.rank == 0:
        write_predictions(predictions, sorted((rec for r in gathered for rec in r.records), key=lambda rec: rec["index"]))
    return result


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
    precision: str = "fp32",
) -> ShardRun:
    crops = transform.crops
    tally = Tally(num_classes)
    records: list[dict[str, Any]] = []

    def consume(batch: Batch, inputs: list[torch.Tensor]) -> None:
        # bf16: the model's matmuls and convolutions under autocast; softmax and averaging in float32.
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = model(inputs[0])
        probs = average_crop_probabilities(logits, crops)
        hits = tally.add(probs, batch.labels)
        if keep_records:
            records.extend(_records(probs, batch, hits, samples, shard))

    run = run_loop(
        samples, [transform], [normalizer], consume, device=dev, batch_size=batch_size, workers=workers,
        channels_last=channels_last, skip_bad=skip_bad, progress=progress, desc=f"validate {crops}-crop",
    )  # fmt: skip
    return ShardRun(tally.as_tensor(), records, run.skipped, run.seconds, run.failure)


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
