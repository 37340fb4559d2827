"""What each ``--protocol`` preset changes, on the sample photos (`validation.sample`).

For every preset it measures, against the default (the checkpoint's metadata, Pillow):

- the pixel gap of the 1-crop and 10-crop uint8 crops (mean and max absolute difference, and the
  share of crops of a different size, where the resize differs);
- with a checkpoint: top-1 / top-5 on the photos under each preset (1-crop and 10-crop), the
  difference in top-1 from the default, and the share of photos whose top-1 class changed.

The photos are few (scikit-image ships four that fit ImageNet classes), so a top-1 difference here
says whether the presets move predictions, not by how much on ImageNet.  Usage::

    python benchmarks/protocol_presets.py [CKPT [--preset FAMILY]] [--json OUT]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

from resnet_port.checkpoints import Preprocessing
from resnet_port.validation import evaluate, make_sample_dataset, scan_dataset
from resnet_port.validation.decode import decode_image
from resnet_port.validation.protocols import PROTOCOLS, resolve_geometry
from resnet_port.validation.transforms import CropTransform


def pixel_gaps(folder: Path, preprocessing: Preprocessing) -> dict:
    samples = scan_dataset(folder).samples
    base = {crops: CropTransform(preprocessing, crops, **resolve_geometry(preprocessing).transform_options()) for crops in (1, 10)}
    out = {}
    for name in PROTOCOLS:
        geometry = resolve_geometry(preprocessing, name)
        row = {"resize": geometry.resize, "crop": geometry.crop, "interpolation": geometry.interpolation,
               "backend": geometry.backend, "offsets": geometry.offsets}  # fmt: skip
        for crops in (1, 10):
            preset = CropTransform(preprocessing, crops, **geometry.transform_options())
            gaps = []
            for sample in samples:
                image = decode_image(sample.path)
                a, b = base[crops](image).pixels.numpy().astype(np.int16), preset(image).pixels.numpy().astype(np.int16)
                gaps.append(np.abs(a - b))
            row[f"{crops}crop_mean_abs_pixel_gap"] = float(np.mean([g.mean() for g in gaps]))
            row[f"{crops}crop_max_abs_pixel_gap"] = int(max(g.max() for g in gaps))
        out[name] = row
    return out


def accuracy(checkpoint: Path, preset_family: str | None, folder: Path) -> dict:
    from resnet_port.validation.cli import load_for_validation

    model, metadata = load_for_validation(checkpoint, None, preset_family)
    out = {}
    for crops in (1, 10):
        runs = {}
        for name in (None, *PROTOCOLS):
            pred = folder.parent / f"pred_{name}_{crops}.jsonl"
            result = evaluate(model, metadata, folder, crops, protocol=name, workers=0, progress=False, predictions=pred)
            top = [json.loads(line)["top5"][0] for line in pred.read_text().splitlines()]
            runs[name or "default"] = (result, top)
        base_result, base_top = runs["default"]
        out[f"{crops}crop"] = {
            key: {
                "top1": r["top1"],
                "top5": r["top5"],
                "top1_minus_default": r["top1"] - base_result["top1"],
                "top1_class_changed": sum(a != b for a, b in zip(top, base_top)) / len(top),
            }
            for key, (r, top) in runs.items()
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", type=Path, help="a checkpoint with trained weights (optional)")
    parser.add_argument("--preset", help="preprocessing family of a plain state dict (as validate --preset)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_sample_dataset(Path(tmp) / "photos")
        report = {
            "date": datetime.date.today().isoformat(),
            "machine": f"{platform.machine()} {platform.system()}, python {platform.python_version()}",
            "images": len(scan_dataset(folder).samples),
            "pixel_gap_vs_default": pixel_gaps(folder, Preprocessing()),
        }
        if args.checkpoint is not None:
            report["checkpoint"] = str(args.checkpoint)
            report["accuracy"] = accuracy(args.checkpoint, args.preset, folder)
    text = json.dumps(report, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
