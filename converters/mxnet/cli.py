"""convert-mxnet: an MXNet / Gluon ResNet to a reference checkpoint.

    convert-mxnet resnet50_v1.params --arch resnet50_v1 -o r50v1.pth
    convert-mxnet resnet-50-0000.params --symbol resnet-50-symbol.json -o r50.pth
    convert-mxnet model.params -o m.pth --verify input.npy logits.npy   # parity with MXNet's own logits

Exit codes: 0 converted (and, with --verify, within tolerance), 1 the parity check failed (nothing
written), 2 unusable input (one line naming the file and what was expected; nothing written).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from resnet_port.converters.common import PARITY_RTOL, add_output_arguments, compare_logits, run_converted, write_outputs
from resnet_port.converters.mxnet.convert import convert_mxnet
from resnet_port.cli import run_cli
from resnet_port.errors import InputError

DEFAULT_TOLERANCE = PARITY_RTOL


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convert-mxnet",
        description=(
            "Convert a Gluon model-zoo ResNet (save_parameters, save_params or export files) or a classic\n"
            "MXNet symbolic ResNet (resnet-N-symbol.json + resnet-N-0000.params) to a reference checkpoint.\n"
            "MXNet is not needed.  The converted model takes what the source takes: normalised RGB for\n"
            "Gluon, 0-255 RGB for the symbolic models (their data BN normalises inside); the checkpoint\n"
            "metadata says which."
        ),
        epilog="examples:\n" + __doc__.split("\n\n", 1)[1] if __doc__ else None,
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
    parser.add_argument(
        "--verify",
        nargs=2,
        type=Path,
        metavar=("INPUT.npy", "LOGITS.npy"),
        help="run the converted model on INPUT (N,3,H,W float32, what the source takes) and compare with LOGITS "
        "computed by MXNet; exit 1 and write nothing if they differ beyond --tolerance",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        help=f"largest allowed max|diff| / max|reference logit| for --verify (default {DEFAULT_TOLERANCE})",
    )
    add_output_arguments(parser)
    return parser


def _load_npy(path: Path, what: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read the {what} as a .npy array: {exc}") from exc


def verify(conversion, input_path: Path, logits_path: Path, tolerance: float) -> dict:
    """Parity of the converted weights with logits the source framework computed."""
    x = _load_npy(input_path, "verification input")
    reference = _load_npy(logits_path, "reference logits")
    if x.ndim != 4 or x.shape[1] != conversion.spec.in_chans:
        raise InputError(f"{input_path}: expected an (N, {conversion.spec.in_chans}, H, W) input, got shape {x.shape}")
    if reference.shape != (x.shape[0], conversion.spec.num_classes):
        raise InputError(
            f"{logits_path}: expected logits of shape ({x.shape[0]}, {conversion.spec.num_classes}), got {reference.shape}"
        )
    result = compare_logits(reference, run_converted(conversion, x))
    result.update(
        reference=f"logits supplied in {logits_path.name}",
        tolerance=tolerance,
        passed=bool(result["max_rel_diff"] <= tolerance and result["top1_agreement"] == 1.0),
    )
    return result


@run_cli
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    conversion = convert_mxnet(args.params, arch=args.arch, symbol=args.symbol)
    if args.verify:
        conversion.metadata.verification = verify(conversion, *args.verify, args.tolerance)
        if not conversion.metadata.verification["passed"]:
            v = conversion.metadata.verification
            print(
                f"convert-mxnet: parity check FAILED: max |diff| {v['max_abs_diff']:.3g} "
                f"({v['max_rel_diff']:.3g} of the largest logit, tolerance {args.tolerance:g}), "
                f"top-1 agreement {v['top1_agreement']:.2f}; nothing written"
            )
            return 1
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
    if conversion.metadata.verification:
        v = conversion.metadata.verification
        print(f"  parity: max |diff| {v['max_abs_diff']:.3g} ({v['max_rel_diff']:.3g} relative), top-1 agreement {v['top1_agreement']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
