"""`audit A B`: are two files the same network, and if not, which porting bug makes them differ?"""

from __future__ import annotations

import argparse
from pathlib import Path

from resnet_port.audit.diagnose import DEFAULT_RTOL, audit
from resnet_port.audit.html_page import require_matplotlib, write_html
from resnet_port.audit.inputs import image_folder_inputs, seeded_inputs
from resnet_port.audit.layers import LAYER_MODES
from resnet_port.audit.report import format_result
from resnet_port.audit.sources import SideOptions, load_side
from resnet_port.cli import run_cli, write_json
from resnet_port.errors import InputError

DESCRIPTION = """\
Compare two files that claim to be the same network (a Caffe caffemodel and a PyTorch port, a Gluon
.params and its ONNX export, a timm and an mmcls checkpoint). Each is loaded through the toolkit's
converters onto the reference ResNet; then the specs are compared field by field, every tensor
(shape, max abs / relative difference, cosine; BatchNorm statistics apart from the affine
parameters; eps per layer), the output of every module (stem, each block, head pool, fc; --layers
fine for inside the blocks), paired by reference name, to find the first layer where the sides part,
and the logits on the same images, each side with its own preprocessing. Known porting bugs are
tested as hypotheses: a cause is named only when undoing it brings the outputs together.

Cause keys: channel_order, bn_scale_factor, bn_eps, fix_gamma, stride_placement, pool_rounding,
input_scale, mean_image, missing_mean, class_order, transposed_fc, missing_bias.
"""
EPILOG = "exit codes: 0 identical or equivalent, 1 different, 2 unusable input"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="audit", description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("a", type=Path, help="side A: the reference (.caffemodel[.h5], .params, .onnx, .pth, .safetensors)")
    parser.add_argument("b", type=Path, help="side B: the file audited against A")
    for side in ("a", "b"):
        group = parser.add_argument_group(f"side {side.upper()} options")
        group.add_argument(f"--arch-{side}", metavar="NAME", help="architecture of a plain state_dict or .params")
        group.add_argument(f"--preset-{side}", metavar="FAMILY", help="preprocessing preset of a plain state_dict")
        group.add_argument(f"--prototxt-{side}", type=Path, metavar="FILE", help="deploy prototxt of a Caffe file")
        means = group.add_mutually_exclusive_group()
        means.add_argument(f"--mean-{side}", type=Path, metavar="FILE", help="mean .binaryproto of a Caffe file")
        means.add_argument(
            f"--mean-values-{side}", type=float, nargs="+", metavar="V",
            help="per-channel mean of a Caffe file, BGR order (e.g. 104 117 123), as convert-caffe --mean-values",
        )
        group.add_argument(f"--ema-{side}", action="store_true", help="take the EMA weights of a training checkpoint (model_ema, state_dict_ema; mmengine's swapped pair)")
        group.add_argument(f"--symbol-{side}", type=Path, metavar="FILE", help="symbol JSON of an MXNet .params")
    parser.add_argument("--images", type=Path, metavar="DIR", help="compare on these images too (instead of seeded ones)")
    parser.add_argument("-n", "--num-inputs", type=int, default=4, help="seeded inputs, or images read from --images (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated inputs (default 0)")
    parser.add_argument(
        "--rtol", type=float, default=DEFAULT_RTOL,
        help=f"'equivalent' when max |logit diff| <= RTOL * max |logit| and every top-1 agrees (default {DEFAULT_RTOL:g})",
    )
    parser.add_argument(
        "--layers", choices=LAYER_MODES, default="blocks",
        help="compare module outputs to find where the sides part: 'blocks' (stem, each residual block, "
        "head pool, fc; default), 'fine' (also each conv, BN and pool inside the blocks), 'none'",
    )
    parser.add_argument(
        "--html", type=Path, metavar="FILE",
        help="also write one self-contained HTML page: verdict, causes, tensors, and a plot of the relative "
        "difference per layer (needs matplotlib: pip install 'resnet-port[html]')",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the full result as JSON ('-' for stdout)")
    parser.add_argument("--all-tensors", action="store_true", help="list every differing tensor, not the worst few")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the verdict line")
    return parser


def _options(args: argparse.Namespace, side: str) -> SideOptions:
    return SideOptions(
        arch=getattr(args, f"arch_{side}"),
        preset=getattr(args, f"preset_{side}"),
        prototxt=getattr(args, f"prototxt_{side}"),
        mean=getattr(args, f"mean_{side}"),
        mean_values=getattr(args, f"mean_values_{side}"),
        symbol=getattr(args, f"symbol_{side}"),
        ema=getattr(args, f"ema_{side}"),
    )


@run_cli
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.num_inputs < 1:
        raise InputError(f"--num-inputs must be at least 1, got {args.num_inputs}")
    if not args.rtol > 0:
        raise InputError(f"--rtol must be positive, got {args.rtol}")
    if args.html:
        require_matplotlib()  # before minutes of work, not after
        if not args.html.parent.is_dir():
            raise InputError(f"{args.html}: --html needs an existing folder, {args.html.parent} is not one")
    a = load_side("A", args.a, _options(args, "a"))
    b = load_side("B", args.b, _options(args, "b"))
    if args.images:
        inputs = image_folder_inputs(args.images, args.num_inputs)
    else:
        size = max(a.preprocessing.resize, b.preprocessing.resize, a.preprocessing.crop, b.preprocessing.crop)
        inputs = seeded_inputs(args.num_inputs, size, args.seed)
    result = audit(a, b, inputs, rtol=args.rtol, progress=not args.quiet, layers=args.layers)
    if args.json:
        write_json(args.json, result.to_dict())
    if args.html:
        write_html(args.html, result)
    if args.json != "-":
        if args.quiet:
            print(format_result(result).splitlines()[-1])
        else:
            print(format_result(result, all_tensors=args.all_tensors))
    return result.exit_code
