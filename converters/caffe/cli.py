"""``convert-caffe``: Kaiming He's Caffe ResNets to a resnet-port checkpoint, without Caffe."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from resnet_port.converters.caffe.convert import convert_caffe
from resnet_port.converters.common import add_output_arguments, write_outputs
from resnet_port.converters.verify import (
    EXIT_CODES, add_verify_arguments, check_from_args, check_output_path, resolve_verify_arguments, summary_line,
)
from resnet_port.cli import run_cli

EPILOG = """\
examples:
  convert-caffe ResNet-50-model.caffemodel -o r50.pth
  convert-caffe ResNet-50-model.caffemodel --prototxt ResNet-50-deploy.prototxt \\
      --mean ResNet_mean.binaryproto -o r50.safetensors --report r50-report.json
  convert-caffe ResNet-50-model.caffemodel -o r50.pth --logits input.npy caffe_logits.npy
  convert-caffe snapshot.caffemodel.h5 --prototxt deploy.prototxt --mean-values 104 117 123 -o r.pth

The converted model takes exactly what Caffe's `data` blob takes: BGR, 0-255, minus the mean
(recorded in the checkpoint's preprocessing, with resize 256 / crop 224).  --rgb reverses conv1's
input channels instead, so that the model takes RGB; the recorded mean follows.
The check (on by default) runs the independent float64 Caffe-graph interpreter beside the
converted model on a seeded input of the net's size.
""" + EXIT_CODES + """
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convert-caffe",
        description="Convert a Caffe ResNet (.caffemodel, or .caffemodel.h5 with --prototxt) onto the reference "
        "PyTorch ResNet. The architecture is inferred from the layer graph (depth, stride placement, pooling, "
        "conv biases, BatchNorm eps, pool5); a graph that is not a ResNet is refused, naming the first layer "
        "that does not fit.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", type=Path, help="the weights: a binary .caffemodel, or Caffe's .caffemodel.h5 snapshot")
    parser.add_argument(
        "--prototxt", type=Path, help="the net definition (deploy or train_val). Optional for a .caffemodel, which "
        "carries its own (both are then checked to agree); required for .h5"
    )
    means = parser.add_mutually_exclusive_group()
    means.add_argument("--mean", type=Path, metavar="FILE", help="mean image .binaryproto (e.g. ResNet_mean.binaryproto), BGR")
    means.add_argument("--mean-values", type=float, nargs="+", metavar="V", help="per-channel mean in BGR order, e.g. 104 117 123")
    parser.add_argument("--rgb", action="store_true", help="make the model take RGB (conv1's input channels reversed; exact)")
    add_output_arguments(parser)
    add_verify_arguments(parser, "the independent Caffe-graph interpreter (float64)")
    return parser


@run_cli
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = resolve_verify_arguments(parser, parser.parse_args(argv))
    check_output_path(args.output)
    builtin = not args.no_verify and not args.logits
    conversion = convert_caffe(
        args.model, prototxt=args.prototxt, mean=args.mean, mean_values=args.mean_values,
        rgb=args.rgb, verify=builtin, verify_seed=args.seed, progress=sys.stderr.isatty(), tolerance=args.tolerance,
    )
    rgb_input = (lambda x: x[:, ::-1].copy()) if args.rgb else None
    check_from_args(conversion, args, None, str(args.model), model_input=rgb_input)
    summary = write_outputs(conversion, args)
    if args.json:
        json.dump(summary, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
        return 0
    report = conversion.report
    print(f"{args.model} -> {args.output}")
    print(f"  arch: {conversion.metadata.arch or 'unregistered'} ({conversion.spec.depth} layers, {summary['num_params']:,} parameters)")
    print(f"  mapped {len(report.mapped)} tensors from {len(report.layers)} layers; skipped {len(report.skipped)}")
    pre = conversion.metadata.preprocessing
    mean = "mean image " + "x".join(map(str, pre.mean_image.shape)) if pre.mean_image is not None else (f"mean {pre.mean}" if pre.mean else "NO MEAN (give --mean or --mean-values)")
    print(f"  takes {pre.channel_order}, 0-{pre.pixel_max:g}, {mean}; resize {pre.resize}, crop {pre.crop}")
    print(summary_line(conversion.metadata.verification))
    if pre.mean is None and pre.mean_image is None:
        print("convert-caffe: warning: no mean given; the checkpoint's preprocessing subtracts nothing", file=sys.stderr)
    for warning in report.warnings:  # also in --json's "warnings" and the --report file
        print(f"convert-caffe: warning: {warning}", file=sys.stderr)
    return 0


__all__ = ["build_parser", "main"]
