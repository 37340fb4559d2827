"""``convert-caffe``: Kaiming He's Caffe ResNets to a resnet-port checkpoint, without Caffe."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from resnet_port.converters.caffe.convert import convert_caffe
from resnet_port.converters.common import add_output_arguments, write_outputs
from resnet_port.cli import run_cli
from resnet_port.errors import InputError

EPILOG = """\
examples:
  convert-caffe ResNet-50-model.caffemodel -o r50.pth
  convert-caffe ResNet-50-model.caffemodel --prototxt ResNet-50-deploy.prototxt \\
      --mean ResNet_mean.binaryproto --verify -o r50.safetensors --report r50-report.json
  convert-caffe snapshot.caffemodel.h5 --prototxt deploy.prototxt --mean-values 104 117 123 -o r.pth

The converted model takes exactly what Caffe's `data` blob takes: BGR, 0-255, minus the mean
(recorded in the checkpoint's preprocessing, with resize 256 / crop 224).  --rgb reverses conv1's
input channels instead, so that the model takes RGB; the recorded mean follows.
Exit codes: 0 done, 2 unusable input (one line on stderr naming the file and the layer).
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
    parser.add_argument(
        "--verify", action="store_true", help="run the independent Caffe-graph interpreter beside the converted model on "
        "seeded inputs and record the max difference in the metadata"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the --verify inputs (default 0)")
    add_output_arguments(parser)
    return parser


@run_cli
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.output.exists() and args.output.is_dir():
        raise InputError(f"{args.output}: is a folder; -o names the checkpoint file to write")
    if args.output.suffix.lower() not in (".pth", ".pt", ".bin", ".ckpt", ".safetensors"):
        raise InputError(f"{args.output}: unknown checkpoint extension; use .pth or .safetensors")
    conversion = convert_caffe(
        args.model, prototxt=args.prototxt, mean=args.mean, mean_values=args.mean_values,
        rgb=args.rgb, verify=args.verify, verify_seed=args.seed, progress=sys.stderr.isatty(),
    )
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
    if conversion.metadata.verification:
        v = conversion.metadata.verification
        print(f"  verify: max |diff| {v['max_abs_diff']:.3g} ({v['max_rel_diff']:.3g} of max |logit|), top-1 agreement {v['top1_agreement']:.0%}")
    if pre.mean is None and pre.mean_image is None:
        print("convert-caffe: warning: no mean given; the checkpoint's preprocessing subtracts nothing", file=sys.stderr)
    for warning in report.warnings:  # also in --json's "warnings" and the --report file
        print(f"convert-caffe: warning: {warning}", file=sys.stderr)
    return 0


__all__ = ["build_parser", "main"]
