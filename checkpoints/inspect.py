"""`inspect-checkpoint FILE`: what a checkpoint holds, readable or as JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from resnet_port.checkpoints.io import load_model
from resnet_port.checkpoints.metadata import sha256_file
from resnet_port.cli import run_cli, write_json
from resnet_port.resnet_ref import count_flops, count_params, find_arch


def summarize(path: str | Path, arch: str | None = None, preset: str | None = None, ema: bool = False) -> dict[str, Any]:
    """The facts `inspect-checkpoint` prints, recomputed from the weights where they can be."""
    model, meta = load_model(path, arch=arch, preset=preset, ema=ema)
    pre = meta.preprocessing
    size = pre.crop
    return {
        "file": str(path),
        "file_sha256": sha256_file(path),
        "arch": meta.arch or find_arch(meta.spec),
        "spec": meta.spec.to_dict(),
        "num_params": count_params(model),
        "flops": count_flops(model, size, meta.spec.in_chans),
        "flops_input_size": size,
        "num_classes": meta.spec.num_classes,
        "class_order": meta.class_order,
        "preprocessing": pre.to_dict(),
        "source": meta.source.to_dict(),
        "conversion_report": meta.conversion_report,
        "verification": meta.verification,
        "published": meta.published,
        "notes": meta.notes,
        "toolkit_version": meta.toolkit_version,
        "created": meta.created,
    }


def _stem_widths(spec: dict[str, Any]) -> str:
    """'24-32-64' for a deep stem (tiered or w/2-w/2-w), else the one conv's width."""
    width = int(spec["stem_width"])
    if spec["stem"] != "deep":
        return str(width)
    first, second = spec.get("stem_widths") or (width // 2, width // 2)
    return f"{first}-{second}-{width}"


def format_summary(info: dict[str, Any]) -> str:
    pre = info["preprocessing"]
    spec = info["spec"]
    lines = [
        f"file          {info['file']}",
        f"sha256        {info['file_sha256']}",
        f"arch          {info['arch'] or '(custom spec)'}",
        f"block         {spec['block']} {spec['layers']}  residual {spec['residual']}  stride in {spec['stride_in']}",
        f"stem          {spec['stem']} {_stem_widths(spec)} ("
        + ("" if spec.get("stem_norm", "bn_relu") == "bn_relu" else f"then {spec['stem_norm'].replace('none', 'no BN')}, ")
        + f"pool {spec['stem_pool']}, "
        f"input BN {spec['input_bn']})  head pool {spec['head_pool']}  shortcut {spec['shortcut']}"
        + (f" of the {spec['v2_shortcut_input'].replace('_', ' ')}" if spec.get("v2_shortcut_input", "preactivated") != "preactivated" else ""),
        f"BN eps        {spec['bn_eps']}" + (f" (+{len(spec['bn_eps_overrides'])} overrides)" if spec["bn_eps_overrides"] else ""),
        f"conv biases   {', '.join(spec['conv_bias']) or 'none'}",
        f"parameters    {info['num_params']:,} ({info['num_params'] / 1e6:.2f} M)",
        f"FLOPs         {info['flops'] / 1e9:.2f} G at {info['flops_input_size']}x{info['flops_input_size']}",
        f"classes       {info['num_classes']} ({info['class_order']})",
        f"input         {pre['channel_order']}, 0-{pre['pixel_max']:g}, "
        + (f"mean image {pre['mean_image_shape']}" if pre["mean_image_shape"] else f"mean {pre['mean']}")
        + f", std {pre['std']}",
        f"geometry      resize {pre['resize']} ({pre['interpolation']}), crop {pre['crop']}",
        f"source        {info['source']['framework']}"
        + (f" (weights from {info['source']['details']['weights_key']!r} of a {info['source']['details']['container']} file)"
           if info["source"]["details"].get("weights_key") else ""),
    ]
    details = info["source"]["details"]
    if details.get("training"):
        lines.append(f"training      {json.dumps(details['training'])}")
    if details.get("pickle_stand_ins"):
        lines.append(f"stand-ins     {', '.join(details['pickle_stand_ins'])} (recorded, never imported or run)")
    for f in info["source"]["files"]:
        lines.append(f"  file        {f['path']}  sha256 {f['sha256']}  {f['size']:,} bytes")
    if info["conversion_report"]:
        report = info["conversion_report"]
        summary = {k: v for k, v in report.items() if not isinstance(v, (list, dict))}
        lines.append(f"conversion    {json.dumps(summary)}")
    if info["verification"]:
        lines.append(f"verification  {json.dumps(info['verification'])}")
    lines.append(f"toolkit       {info['toolkit_version']}  created {info['created']}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inspect-checkpoint",
        description="Show what a checkpoint holds: architecture, parameter count, FLOPs at its input size, "
        "the preprocessing its weights expect, where it came from (with sha256) and its conversion report. "
        "Reads toolkit checkpoints (.pth, .safetensors) and plain torchvision / timm (ResNet and ResNetV2) / "
        "mmcls / pytorch-cifar state dicts, training checkpoints included.",
    )
    parser.add_argument("checkpoint", help="a .pth / .safetensors file")
    parser.add_argument("--arch", help="architecture of a plain state_dict (default: inferred from names and shapes)")
    parser.add_argument("--preset", help="preprocessing preset for a plain state_dict (torchvision, mmcls, timm, gluon, caffe, mxnet)")
    parser.add_argument("--ema", action="store_true", help="take the EMA weights of a training checkpoint (model_ema, state_dict_ema; mmengine's swapped pair)")
    parser.add_argument("--json", nargs="?", const="-", metavar="FILE", help="write JSON to FILE (or stdout when no FILE)")
    return parser


@run_cli
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    info = summarize(args.checkpoint, arch=args.arch, preset=args.preset, ema=args.ema)
    if args.json:
        write_json(args.json, info)
        if args.json == "-":
            return 0
    print(format_summary(info))
    return 0
