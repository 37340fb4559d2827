"""convert-onnx: an ONNX model-zoo ResNet file -> a reference checkpoint, checked by onnxruntime."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from resnet_port.converters.common import add_output_arguments, write_outputs
from resnet_port.converters.onnx.convert import convert_onnx
from resnet_port.converters.onnx.graph import import_onnx
from resnet_port.converters.onnx.verify import DEFAULT_TOLERANCE, verify_conversion
from resnet_port.cli import run_cli, write_json
from resnet_port.errors import InputError

DESCRIPTION = """\
Convert an ONNX ResNet (the ONNX model zoo's resnet{18..152}-v{1,2}, exported from Gluon, or any
MXNet export of a Gluon ResNet) into a reference checkpoint.

The architecture is recognised from the graph itself (its topology and tensor shapes, not its
names); a graph that is not a ResNet is refused with the first node that does not fit.  The
converted model takes exactly the tensor the ONNX graph takes; the checkpoint's metadata records
the ONNX zoo preprocessing (RGB, 0-1, ImageNet mean/std, resize 256, crop 224).

Then the file is run in onnxruntime and in the converted model on a seeded input and the logits are
compared (max |diff| <= tolerance x the largest logit, same top-1); the checkpoint is written only
if they agree.  Needs the onnx package (pip install 'resnet-port[onnx]').  Without onnxruntime the
check evaluates the ONNX graph node by node in torch instead, and says so.
"""

EPILOG = """\
examples:
  convert-onnx resnet50-v2-7.onnx -o r50v2.pth
  convert-onnx resnet18-v1-7.onnx -o r18v1.safetensors --report r18v1-report.json --json
exit status: 0 written; 1 the onnxruntime check failed; 2 unusable input (not ONNX, not a ResNet).
On 1 and 2 nothing is written.
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
    parser.add_argument("--no-verify", action="store_true", help="skip the numeric check (the metadata then says so)")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        help=f"largest max |diff| accepted, relative to the largest logit (default {DEFAULT_TOLERANCE:g})",
    )
    return parser


def _check_output(path: Path) -> None:
    """Refuse an unusable output path before minutes of converting, not after."""
    if path.suffix not in (".pth", ".safetensors"):
        raise InputError(f"{path}: unknown checkpoint extension {path.suffix or '(none)'}; use .pth or .safetensors")
    if not path.parent.is_dir():
        raise InputError(f"{path}: the folder {path.parent} does not exist")


@run_cli
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import_onnx()  # a missing package is said first, with how to install it
    _check_output(args.output)
    steps = tqdm(total=3, desc="convert-onnx", unit="step", disable=args.json or None, file=sys.stderr)
    steps.set_postfix_str("reading and recognising the graph")
    conversion = convert_onnx(args.model)
    steps.update()
    if args.no_verify:
        verification = {"skipped": "--no-verify"}
    else:
        steps.set_postfix_str("comparing with the referee")
        verification = verify_conversion(conversion, args.model, tolerance=args.tolerance)
        if verification.get("passed") is False:
            # A check that fails is exit 1 (README: "1 a check failed"); nothing is written.
            print(
                f"convert-onnx: check failed: {args.model}: the converted model disagrees with "
                f"{verification['referee']}: max |diff| "
                f"{verification['max_abs_diff']:.3g} ({verification['max_rel_diff']:.3g} of the largest logit, "
                f"tolerance {args.tolerance:g}), top-1 agreement {verification['top1_agreement']:.0%}; nothing written",
                file=sys.stderr,
            )
            steps.close()
            return 1
    conversion.metadata.verification = verification
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
    if "skipped" in verification:
        print(f"  check: skipped ({verification['skipped']})")
    else:
        print(
            f"  check vs {verification['referee']}: max |diff| {verification['max_abs_diff']:.3g} "
            f"({verification['max_rel_diff']:.3g} of the largest logit), top-1 agreement {verification['top1_agreement']:.0%}"
        )
    return 0
