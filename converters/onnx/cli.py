"""convert-onnx: an ONNX model-zoo ResNet file -> a reference checkpoint, checked by onnxruntime."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from resnet_port.converters.common import add_output_arguments, write_outputs
from resnet_port.converters.onnx.convert import convert_onnx
from resnet_port.converters.onnx.graph import import_onnx
from resnet_port.converters.onnx.verify import onnx_referee
from resnet_port.converters.verify import (
    EXIT_CODES, add_verify_arguments, check_from_args, check_output_path, resolve_verify_arguments, summary_line,
)
from resnet_port.cli import run_cli, write_json

DESCRIPTION = """\
Convert an ONNX ResNet (the ONNX model zoo's resnet{18..152}-v{1,2}, exported from Gluon; any
MXNet export of a Gluon or GluonCV ResNet; torch.onnx exports of torchvision, timm and mmcls
ResNets, BatchNorms folded or not) into a reference checkpoint.

The architecture is recognised from the graph itself (its topology and tensor shapes, not its
names); a graph that is not a ResNet is refused with the first node that does not fit.  The
converted model takes exactly the tensor the ONNX graph takes; the checkpoint's metadata records
the ONNX zoo preprocessing (RGB, 0-1, ImageNet mean/std, resize 256, crop 224, scaled to a fixed
input size).  A Softmax after the logits is dropped (noted): the converted model returns the logits.

Then the file is run in onnxruntime and in the converted model on a seeded input and the logits are
compared (max |diff| <= tolerance x the largest logit, same top-1); the checkpoint is written only
if they agree.  Needs the onnx package (pip install 'resnet-port[onnx]').  Without onnxruntime the
check evaluates the ONNX graph node by node in torch instead, and says so.
"""

EPILOG = """\
examples:
  convert-onnx resnet50-v2-7.onnx -o r50v2.pth
  convert-onnx resnet18-v1-7.onnx -o r18v1.safetensors --report r18v1-report.json --json
""" + EXIT_CODES + """
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convert-onnx",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", help="the .onnx file")
    add_output_arguments(parser)
    add_verify_arguments(parser, "onnxruntime (without it: the ONNX graph evaluated node by node in torch float64)")
    return parser


@run_cli
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = resolve_verify_arguments(parser, parser.parse_args(argv))
    import_onnx()  # a missing package is said first, with how to install it
    check_output_path(args.output)
    steps = tqdm(total=3, desc="convert-onnx", unit="step", disable=args.json or None, file=sys.stderr)
    steps.set_postfix_str("reading and recognising the graph")
    conversion = convert_onnx(args.model)
    steps.update()
    steps.set_postfix_str("comparing with the referee")
    try:
        verification = check_from_args(
            conversion, args, lambda: onnx_referee(conversion, args.model, seed=args.seed), str(args.model)
        )
    except BaseException:
        steps.close()
        raise
    steps.update()
    steps.set_postfix_str("writing")
    summary = write_outputs(conversion, args)
    steps.update()
    steps.close()
    if args.json:
        write_json("-", summary)
        return 0
    print(f"{args.model} -> {summary['output']}")
    print(f"  arch: {summary['arch'] or '(no registered name; the spec is stored in the checkpoint)'}")
    print(f"  parameters: {summary['num_params']:,}; tensors mapped: {summary['mapped_tensors']}")
    for note in conversion.report.notes:
        print(f"  note: {note}")
    print(summary_line(verification))
    return 0
