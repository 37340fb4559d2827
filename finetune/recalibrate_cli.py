"""``recalibrate-bn``: a checkpoint's BN statistics recomputed as exact averages over training images.

Images reach the model through `validation` (the checkpoint's own preprocessing: channel order,
scale, mean or mean image, resize and centre crop), the same door evaluation uses.  The images are
a seeded shuffle of the data folder, so a run is reproducible.  ``sequential`` mode reads the data
once per BN layer: the decoded batches are kept in memory when they fit under ``--cache-gb``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from resnet_port.checkpoints import load_model, save_checkpoint, sha256_file
from resnet_port.finetune.recalibrate import MODES, VARIANCES, recalibrate_bn
from resnet_port.cli import write_json
from resnet_port.errors import InputError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recalibrate-bn",
        description=(
            "Recompute every BatchNorm layer's mean and variance as the exact average over N batches of "
            "training images (not a moving average), as Kaiming He's release notes describe, and write a new "
            "checkpoint recording what was done. sequential (default): layer by layer, each layer measured "
            "with all earlier layers already recalibrated (= all the images as one huge training batch); "
            "one pass over the images per BN layer. cumulative: one pass, each BN normalising every batch "
            "with that batch's statistics, as in training."
        ),
    )
    parser.add_argument("checkpoint", type=Path, help="checkpoint to recalibrate (.pth / .safetensors; plain state dicts with --arch)")
    parser.add_argument("--data", type=Path, required=True, help="training images: class folders (ImageFolder) or images + --labels")
    parser.add_argument("--labels", type=Path, help="labels file of a flat folder (Caffe's train.txt style)")
    parser.add_argument("--batches", type=int, required=True, help="number of batches N to average over")
    parser.add_argument("--batch-size", type=int, default=32, help="images per batch (default 32, the release's per-GPU batch)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="recalibrated checkpoint to write (.pth or .safetensors)")
    parser.add_argument("--mode", choices=MODES, default="sequential", help="sequential (default) or cumulative; see above")
    parser.add_argument("--variance", choices=VARIANCES, default="unbiased",
                        help="unbiased (default; n/(n-1), what PyTorch and Caffe store) or biased (the population variance)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the image shuffle (default 0)")
    parser.add_argument("--arch", help="architecture of a plain state_dict")
    parser.add_argument("--ema", action="store_true", help="take the EMA weights of a training checkpoint (model_ema, state_dict_ema; mmengine's swapped pair)")
    parser.add_argument("--preset", help="preprocessing preset of a plain state_dict (torchvision, caffe, ...)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: from the device)")
    parser.add_argument("--cache-gb", type=float, default=4.0,
                        help="sequential mode: keep the decoded batches in memory if they fit in this many GiB (default 4)")
    parser.add_argument("--json", nargs="?", const="-", metavar="FILE", help="write the summary as JSON to FILE (or stdout)")
    return parser


def _collate(items: list[tuple[torch.Tensor, int]]) -> torch.Tensor:
    return torch.cat([crops for crops, _ in items])  # each image gives one (1, C, H, W) centre crop


def _batch_source(args: argparse.Namespace, metadata: Any, device: torch.device) -> tuple[Callable[[], Iterable[torch.Tensor]], int]:
    from resnet_port.validation.data import ImageDataset, scan_dataset
    from resnet_port.validation.evaluate import default_workers
    from resnet_port.validation.transforms import CropTransform

    if args.batches < 1 or args.batch_size < 1:
        raise InputError(f"--batches and --batch-size must be positive, got {args.batches} and {args.batch_size}")
    needed = args.batches * args.batch_size
    index = scan_dataset(args.data, args.labels)
    if len(index.samples) < needed:
        raise InputError(
            f"{args.data}: --batches {args.batches} x --batch-size {args.batch_size} needs {needed} images, "
            f"the folder has {len(index.samples)}"
        )
    samples = index.subset(limit=needed, shuffle_seed=args.seed).samples
    dataset = ImageDataset(samples, CropTransform(metadata.preprocessing, crops=1), normalize=True)
    workers = default_workers(device) if args.workers is None else max(0, args.workers)
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=False, num_workers=workers,
                        collate_fn=_collate, drop_last=False)
    crop = metadata.preprocessing.crop
    size_gb = needed * metadata.spec.in_chans * crop * crop * 4 / 2**30
    if args.mode == "sequential" and size_gb <= args.cache_gb:
        cache: list[torch.Tensor] = []

        def cached() -> Iterable[torch.Tensor]:
            if cache:
                yield from cache
                return
            seen = []
            for batch in loader:
                seen.append(batch)
                yield batch
            cache.extend(seen)  # only a complete pass is kept (a partial read must not look complete)

        return cached, needed
    return (lambda: iter(loader)), needed


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.output.resolve() == args.checkpoint.resolve():
        raise InputError(f"{args.output}: the output would overwrite the input checkpoint; choose another -o")
    model, metadata = load_model(args.checkpoint, arch=args.arch, preset=args.preset, ema=args.ema)
    try:
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError as exc:
        raise InputError(f"--device {args.device!r} is not a device name ({exc})") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {args.device}: CUDA is not available on this machine; use --device cpu")
    source, images = _batch_source(args, metadata, device)
    bn_layers = sum(1 for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))
    passes = bn_layers if args.mode == "sequential" else 1
    with tqdm(total=args.batches * passes, unit="batch", desc=f"recalibrate-bn ({args.mode})", file=sys.stderr) as bar:
        result = recalibrate_bn(model, source, mode=args.mode, variance=args.variance, device=device,
                                progress=lambda done: bar.update(done - bar.n))
    record = result.to_dict()
    record.update({
        "data": str(args.data),
        "batch_size": args.batch_size,
        "shuffle_seed": args.seed,
        "images_used": images,
        "preprocessing": "the checkpoint's own: resize %d (%s), centre crop %d" % (
            metadata.preprocessing.resize, metadata.preprocessing.interpolation, metadata.preprocessing.crop),
        "input_checkpoint": str(args.checkpoint),
        "input_sha256": sha256_file(args.checkpoint),
    })
    metadata.notes = dict(metadata.notes)
    metadata.notes["bn_recalibration"] = record
    state_dict = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_checkpoint(args.output, metadata.spec, state_dict, metadata)
    summary = {"output": str(args.output), **{k: v for k, v in record.items() if k != "observations_per_channel"}}
    summary["max_abs_change"] = {
        "mean": max(c["mean"] for c in result.changes.values()),
        "var": max(c["var"] for c in result.changes.values()),
    }
    if args.json:
        write_json(args.json, summary)
        if args.json == "-":
            return 0
    print(f"recalibrated {len(result.layers)} BN layers over {result.batches} batches ({result.images} images), "
          f"mode {result.mode}, variance {result.variance}")
    print(f"largest change: mean {summary['max_abs_change']['mean']:.4g}, var {summary['max_abs_change']['var']:.4g}")
    print(f"wrote {args.output}")
    return 0
