"""``validate``: 1-crop / 10-crop ImageNet evaluation of a checkpoint, and parity of two checkpoints.

Examples::

    validate r50.pth --data /data/imagenet/val --crops 10 --json r50.json --compare-published
    validate resnet50-0676ba61.pth --preset torchvision --data /data/imagenet/val
    validate caffe_r50.pth --data /data/ILSVRC2012_val --labels /data/val.txt --limit 500 --shuffle-seed 0
    validate r50.pth --data ILSVRC2012_img_val.tar --labels ILSVRC2012_validation_ground_truth.txt --devkit ILSVRC2012_devkit_t12.tar.gz
    validate r50.pth --data ILSVRC/Data/CLS-LOC/val --labels LOC_val_solution.csv --classes LOC_synset_mapping.txt
    validate --parity ported.pth original.pth --data /data/some_images
    validate timm_r50_a1.pth --preset timm --data /data/imagenet/val --protocol timm --crop 288 --crop-pct 1.0
    validate mmcls_r50.pth --preset mmcls --data /data/imagenet/val --protocol mmcls
    torchrun --nproc-per-node 4 -m resnet_port.validation.cli r50.pth --data /data/imagenet/val --device cuda
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from resnet_port.cli import run_cli, write_json
from resnet_port.errors import InputError

DESCRIPTION = """Evaluate a checkpoint on ImageNet val the way the papers did, and compare with the
published numbers. 1-crop: shorter side resized to 256 (torchvision's Resize on PIL), center 224
crop. 10-crop: the four corners and the center plus their horizontal flips, softmax scores averaged.
Preprocessing (channel order, 0-1 or 0-255, mean values or mean image, std, sizes, interpolation)
comes from the checkpoint's metadata; plain torchvision/timm/mmcls state dicts need --preset.
Data: ImageFolder (val/n01440764/*.JPEG; class i = i-th WordNet id in sorted order); a flat folder
with Caffe's val.txt ('ILSVRC2012_val_00000001.JPEG 65'); the official val images with the devkit
(--labels .../ILSVRC2012_validation_ground_truth.txt --devkit ILSVRC2012_devkit_t12[.tar.gz]: its
IDs are mapped through data/meta.mat); Kaggle's (--data .../CLS-LOC/val --labels LOC_val_solution.csv
--classes LOC_synset_mapping.txt); any of these as an uncompressed tar (--data ILSVRC2012_img_val.tar),
read in place. Labels are mapped onto the checkpoint's class order. Exit codes: 0 done, 2 unusable input."""


def build_parser() -> argparse.ArgumentParser:
    from resnet_port.checkpoints.presets import PRESET_CHOICES
    from resnet_port.validation.protocols import PROTOCOLS

    parser = argparse.ArgumentParser(
        prog="validate", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint", nargs="?", type=Path, help="checkpoint to evaluate (.pth or .safetensors)")
    parser.add_argument("--data", type=Path, required=True, help="image folder (ImageFolder layout, or flat with --labels), "
                        "or an uncompressed tar of either (ILSVRC2012_img_val.tar), read in place")
    parser.add_argument("--labels", type=Path, help="labels of a flat layout, format recognised: Caffe's val.txt ('<image> <index or WNID>'), "
                        "the devkit's ILSVRC2012_validation_ground_truth.txt (with --devkit), Kaggle's LOC_val_solution.csv; "
                        "default: DATA/val.txt when DATA holds images and no class folders")
    parser.add_argument("--devkit", type=Path, help="ILSVRC2012_devkit_t12 folder or .tar.gz: its data/meta.mat maps the ground truth's "
                        "ILSVRC2012_IDs to WordNet ids (default --labels: its own ground truth)")
    parser.add_argument("--classes", type=Path, help="class names in index order, one a line (synsets.txt, synset_words.txt, "
                        "LOC_synset_mapping.txt): maps ImageFolder folders and WordNet-id labels to indices by name "
                        "(default: the checkpoint's classes, else sorted folders)")
    proto = parser.add_argument_group("protocol (defaults from the checkpoint's metadata)")
    proto.add_argument("--crops", type=int, choices=(1, 10), default=1, help="1 (center) or 10 (corners, center, flips); default 1")
    proto.add_argument("--resize", type=int, help="shorter side after resizing (default: metadata, usually 256)")
    proto.add_argument("--crop", type=int, help="crop size (default: metadata, usually 224)")
    proto.add_argument("--interpolation", choices=("bilinear", "bicubic", "nearest"), help="resize filter (default: metadata)")
    proto.add_argument("--protocol", choices=tuple(PROTOCOLS), help="a source's own eval geometry (recorded in the JSON): "
                       "torchvision (256/224 Pillow bilinear), timm (crop_pct 0.95 Pillow bicubic), mmcls (256/224 OpenCV "
                       "bilinear), gluon (256/224 OpenCV bilinear, truncated offsets), caffe (256/224 Pillow bilinear); "
                       "default: the checkpoint's metadata with Pillow")
    proto.add_argument("--crop-pct", type=float, help="resize = floor(crop / CROP_PCT), timm's rule (e.g. 0.875 -> 256 for 224)")
    proto.add_argument("--resize-backend", choices=("pil", "cv2"), help="pil: Pillow, antialiased (torchvision, timm); "
                       "cv2: OpenCV, not antialiased (mmcls backend='cv2', Gluon); default: the preset's, else pil")
    load = parser.add_argument_group("loading")
    load.add_argument("--arch", help="architecture of a plain state dict (default: inferred from names and shapes)")
    load.add_argument("--ema", action="store_true", help="take the EMA weights of a training checkpoint (model_ema, state_dict_ema; mmengine's swapped pair)")
    load.add_argument("--preset", choices=PRESET_CHOICES, help="preprocessing family of a plain state dict without metadata (required "
                      "for those), or the weight source it holds (e.g. gluoncv, timm-gluon: --compare-published then marks its rows)")
    run = parser.add_argument_group("running")
    run.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: cuda when available)")
    run.add_argument("--batch-size", type=int, help="images per batch (default: ~8 crops a batch on CPU, ~256 on GPU)")
    run.add_argument("--workers", type=int, help="DataLoader worker processes decoding images (default: by device and cores)")
    run.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="fp32 (default, the reference) or bf16 "
                     "autocast for the model (faster on recent CPUs and GPUs; check its top-1 agreement with fp32 first)")
    run.add_argument("--no-channels-last", action="store_true", help="feed NCHW-contiguous tensors instead of channels_last")
    run.add_argument("--limit", type=int, help="evaluate only the first N images (after --shuffle-seed)")
    run.add_argument("--shuffle-seed", type=int, help="shuffle the image list with this seed before --limit")
    run.add_argument("--skip-bad", action="store_true", help="skip (and report) images that cannot be decoded; default: error")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    out = parser.add_argument_group("output")
    out.add_argument("--json", metavar="FILE", help="write the result as JSON ('-' for stdout)")
    out.add_argument("--predictions", metavar="FILE", type=Path, help="one JSON line per image: path, label, top5, probs")
    out.add_argument("--per-class", action="store_true", help="per-class accuracy (in the JSON, and a summary)")
    out.add_argument("--compare-published", action="store_true", help="print the published 1-crop/10-crop errors of the arch beside the measured ones")
    parser.add_argument("--parity", nargs=2, type=Path, metavar=("A", "B"),
                        help="run the same images through two checkpoints (each with its own preprocessing): "
                        "top-1 agreement, max and mean logit difference; needs no labels")
    return parser


def load_for_validation(path: Path, arch: str | None, preset: str | None, ema: bool = False):
    """(model, metadata); a file without toolkit metadata needs ``preset``, since its preprocessing
    would otherwise be a guess and a wrong guess costs accuracy silently."""
    from resnet_port.checkpoints import load_model, read_raw

    _, record, _ = read_raw(path, ema=ema)
    if record is None and preset is None:
        raise InputError(
            f"{path}: a plain state dict without toolkit metadata, so its preprocessing is unknown; "
            "pass --preset (torchvision, timm, mmcls, gluon, onnx, mxnet, caffe, cifar)"
        )
    return load_model(path, arch=arch, preset=preset, ema=ema)


def format_result(result: dict, compare: list[dict] | None) -> str:
    lines = [
        f"checkpoint   {result.get('checkpoint')} (arch {result.get('arch')})",
        f"images       {result['images']} x {result['crops']} crop(s), skipped {len(result['skipped'])}",
        f"top-1        {100 * result['top1']:.3f}%  (error {100 * result['top1_error']:.3f}%)",
        f"top-5        {100 * result['top5']:.3f}%  (error {100 * result['top5_error']:.3f}%)",
        f"speed        {result['images_per_s']:.2f} images/s on {result['device']} x {result['processes']} process(es)",
    ]
    if compare is not None:
        if not compare:
            lines.append(f"published    no published figures for arch {result.get('arch')}")
        for row in compare:
            lines.append(
                f"published    {row['source']}, {row['crops']}-crop: top-1 error {row['top1_error']:.2f}%, "
                f"top-5 error {row['top5_error']:.2f}%"
                + (f"  (measured {row['measured_top1_error']:.2f}% / {row['measured_top5_error']:.2f}%)" if row["same_protocol"] else "  (other protocol)")
                + ("  [this checkpoint's weight source]" if row.get("same_source") else "")
            )
    return "\n".join(lines)


@run_cli
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from resnet_port.validation.evaluate import compare_checkpoints, evaluate
    from resnet_port.validation.published import comparison_rows

    if args.parity:
        if args.checkpoint is not None:
            raise InputError("--parity A B takes the two checkpoints itself; give no other checkpoint")
        (model_a, meta_a), (model_b, meta_b) = (load_for_validation(p, args.arch, args.preset, args.ema) for p in args.parity)
        result = compare_checkpoints(
            model_a, meta_a, model_b, meta_b, args.data, args.crops, labels_file=args.labels,
            batch_size=args.batch_size, workers=args.workers, device=args.device, limit=args.limit,
            shuffle_seed=args.shuffle_seed, skip_bad=args.skip_bad, progress=not args.no_progress,
        )  # fmt: skip
        if result.get("rank", 0) != 0:  # under torchrun, rank 0 alone reports
            return 0
        result["checkpoints"] = [str(p) for p in args.parity]
        print(
            f"parity of {args.parity[0]} and {args.parity[1]} on {result['images']} images: top-1 agreement "
            f"{100 * result['top1_agreement']:.3f}%, max |logit diff| {result['max_abs_diff']:.4g} "
            f"({result['max_rel_diff']:.3g} of the largest logit of A), mean {result['mean_abs_diff']:.4g}"
        )
        if args.json:
            write_json(args.json, result)
        return 0

    if args.checkpoint is None:
        raise InputError("no checkpoint given (validate CHECKPOINT --data DIR, or --parity A B)")
    model, metadata = load_for_validation(args.checkpoint, args.arch, args.preset, args.ema)
    result = evaluate(
        model, metadata, args.data, args.crops, labels_file=args.labels, classes_file=args.classes, devkit=args.devkit,
        resize=args.resize, crop=args.crop, interpolation=args.interpolation, protocol=args.protocol,
        crop_pct=args.crop_pct, resize_backend=args.resize_backend, batch_size=args.batch_size,
        workers=args.workers, device=args.device, channels_last=not args.no_channels_last, precision=args.precision,
        limit=args.limit,
        shuffle_seed=args.shuffle_seed, skip_bad=args.skip_bad, per_class=args.per_class,
        predictions=args.predictions, checkpoint=args.checkpoint, progress=not args.no_progress,
    )  # fmt: skip
    if result["rank"] != 0:  # under torchrun, rank 0 alone reports
        return 0
    compare = None
    if args.compare_published:
        source = metadata.published.get("weight_source")  # recorded by converters / --preset
        compare = comparison_rows(metadata.arch, args.crops, result["top1_error"], result["top5_error"], source=source)
        result["published"] = compare
    print(format_result(result, compare), file=sys.stdout if args.json != "-" else sys.stderr)
    if args.per_class:
        worst = sorted(result["per_class"], key=lambda r: r["top1"])[:5]
        print("worst classes " + ", ".join(f"{r['class']} ({100 * r['top1']:.1f}%)" for r in worst))
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
