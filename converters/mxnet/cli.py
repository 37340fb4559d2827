"""convert-mxnet: an MXNet / Gluon ResNet to a reference checkpoint.

    convert-mxnet resnet50_v1.params --arch resnet50_v1 -o r50v1.pth
    convert-mxnet resnet-50-0000.params --symbol resnet-50-symbol.json -o r50.pth
    convert-mxnet model.params -o m.pth --logits input.npy logits.npy   # check against MXNet's own logits
    convert-mxnet model.params -o m.pth --no-verify
    convert-mxnet cifar_resnet20_v1.params -o c20.pth                    # GluonCV CIFAR-10 net

The check (on by default) runs an independent float64 evaluation of the source beside the converted
model: the symbol graph node by node when there is a symbol JSON, else (Gluon save_parameters files
hold no graph) the Gluon model-zoo ResNet V1/V2 graph (or GluonCV's CIFAR / ResNetV1b graph) written
out from the parameter names.  Other Gluon layouts need --logits (computed with MXNet) or --no-verify.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from resnet_port.converters.common import add_output_arguments, write_outputs
from resnet_port.converters.mxnet.convert import convert_mxnet
from resnet_port.converters.mxnet.verify import mxnet_referee
from resnet_port.converters.verify import (
    EXIT_CODES, add_verify_arguments, check_from_args, check_output_path, resolve_verify_arguments, summary_line,
)
from resnet_port.cli import run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convert-mxnet",
        description=(
            "Convert a Gluon model-zoo ResNet (thumbnail nets included), a GluonCV ResNetV1b/c/d/e/s or CIFAR\n"
            "ResNet (cifar_resnetN_v1/_v2) (save_parameters, save_params or export files) or a classic MXNet\n"
            "symbolic ResNet (resnet-N-symbol.json + resnet-N-0000.params) to a reference checkpoint.\n"
            "MXNet is not needed.  The converted model takes what the source takes: normalised RGB for\n"
            "Gluon, 0-255 RGB for the symbolic models (their data BN normalises inside); the checkpoint\n"
            "metadata says which."
        ),
        epilog="examples:\n" + __doc__.split("\n\n", 1)[1] + EXIT_CODES if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "params", type=Path, help="the .params file (Gluon save_parameters or save_params, export(), or save_checkpoint)"
    )
    parser.add_argument(
        "--symbol",
        type=Path,
        help="the symbol JSON for arg:/aux: params (default: PREFIX-symbol.json beside PREFIX-NNNN.params)",
    )
    parser.add_argument(
        "--arch", help="expected architecture (resnet-port archs lists them); refused if the file is another; default: read from the file"
    )
    add_output_arguments(parser)
    add_verify_arguments(
        parser,
        "an independent float64 evaluation of the source (the symbol graph node by node, or the Gluon model-zoo graph)",
        verify_takes_logits=True,
    )
    return parser


@run_cli
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = resolve_verify_arguments(parser, parser.parse_args(argv))
    check_output_path(args.output)
    conversion = convert_mxnet(args.params, arch=args.arch, symbol=args.symbol)
    check_from_args(
        conversion, args, lambda: mxnet_referee(conversion, args.params, args.symbol, args.seed), str(args.params)
    )
    summary = write_outputs(conversion, args)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
        return 0
    report = conversion.report
    print(f"{args.params} -> {args.output}")
    print(f"  arch: {summary['arch'] or 'unregistered (spec stored in the checkpoint)'}, {summary['num_params']:,} parameters")
    for note in report.notes:
        print(f"  note: {note}")
    print(f"  tensors mapped: {summary['mapped_tensors']}, skipped: {len(report.skipped)}")
    for item in report.skipped[:8]:
        print(f"    skipped {item['source']}: {item['reason']}")
    pre = conversion.metadata.preprocessing
    print(f"  input: {pre.channel_order}, 0-{pre.pixel_max:g}, mean {pre.mean}, std {pre.std}")
    print(summary_line(conversion.metadata.verification))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
