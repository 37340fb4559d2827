"""`resnet-port <verb>`: the toolkit's one command.

Every tool is a verb: ``resnet-port convert-caffe ...`` runs exactly what the ``convert-caffe``
console script runs (same options, same --help, same exit codes); the console scripts stay as
aliases.  ``resnet-port --help`` lists the verbs with one line each.

``resnet-port demo`` is the main job on a fresh machine with no user files (see resnet_port/demo.py):
a Caffe model written by the project's writer, converted and verified, saved, reloaded, inspected,
and evaluated 10-crop on bundled photos.  ``resnet-port archs`` lists the registered architectures.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from resnet_port.cli import run_cli


@dataclass(frozen=True)
class Verb:
    """A tool: where its ``main(argv)`` lives (the console script's target) and one line on what it does."""

    target: str  # "module:function", as in pyproject's [project.scripts]
    summary: str

    def load(self) -> Callable[[list[str] | None], int]:
        module, _, function = self.target.partition(":")
        return getattr(importlib.import_module(module), function)


VERBS: dict[str, Verb] = {
    "convert-caffe": Verb("resnet_port.converters.caffe.cli:main", "Caffe ResNet (.caffemodel / .h5 + prototxt) -> checkpoint, checked by the Caffe-graph interpreter"),
    "convert-mxnet": Verb("resnet_port.converters.mxnet.cli:main", "MXNet / Gluon ResNet (.params, + symbol JSON) -> checkpoint, checked by a float64 MXNet evaluator"),
    "convert-onnx": Verb("resnet_port.converters.onnx.cli:main", "ONNX ResNet -> checkpoint, checked by onnxruntime (or the node evaluator)"),
    "validate": Verb("resnet_port.validation.cli:main", "1-crop / 10-crop ImageNet accuracy of a checkpoint vs published numbers; --parity A B"),
    "audit": Verb("resnet_port.audit.cli:main", "compare two ports of one network and name the cause of any difference"),
    "inspect-checkpoint": Verb("resnet_port.checkpoints.inspect:main", "print a checkpoint's spec, preprocessing, source and verification"),
    "convert-solver": Verb("resnet_port.finetune.cli:convert_solver_main", "Caffe solver.prototxt -> the equivalent PyTorch fine-tuning plan"),
    "recalibrate-bn": Verb("resnet_port.finetune.cli:recalibrate_bn_main", "recompute BatchNorm statistics as exact averages over training images"),
    "demo": Verb("resnet_port.main:demo_main", "end to end with no user files: write, convert, verify, save, reload, inspect, validate"),
    "archs": Verb("resnet_port.main:archs_main", "list the registered architectures"),
}


def build_parser() -> argparse.ArgumentParser:
    width = max(map(len, VERBS))
    listing = "\n".join(f"  {name:<{width}}  {verb.summary}" for name, verb in VERBS.items())
    return argparse.ArgumentParser(
        prog="resnet-port",
        usage="resnet-port <verb> [options]   (resnet-port <verb> --help for each)",
        description="Port the classic ImageNet ResNets onto one reference PyTorch ResNet and prove every port correct.",
        epilog=f"verbs:\n{listing}\n\nEach verb is also installed as its own command (convert-caffe ... is resnet-port "
        "convert-caffe ...), except demo and archs.\nexample: resnet-port convert-caffe ResNet-50-model.caffemodel -o r50.pth",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``resnet-port <verb> ARGS`` to the verb's own ``main`` as if run as its own command."""
    args = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not args or args[0].startswith("-"):
        parser.add_argument("--version", action="version", version=_version())
        parser.parse_args(args)  # --help / --version exit here
        parser.print_usage(sys.stderr)
        print("resnet-port: error: give a verb (resnet-port --help lists them)", file=sys.stderr)
        return 2
    verb = VERBS.get(args[0])
    if verb is None:
        near = [name for name in VERBS if name.startswith(args[0][:4]) or args[0] in name]
        hint = f"; did you mean {', '.join(near)}?" if near else ""
        print(f"resnet-port: error: unknown verb {args[0]!r}{hint} (resnet-port --help lists them)", file=sys.stderr)
        return 2
    # The verb runs as its own command: its messages start with its name, as the console script's do.
    saved = sys.argv
    sys.argv = [args[0] if args[0] not in ("demo", "archs") else f"resnet-port {args[0]}", *args[1:]]
    try:
        return int(verb.load()(None) or 0)
    finally:
        sys.argv = saved


def _version() -> str:
    from resnet_port import __version__

    return f"resnet-port {__version__}"


@run_cli
def demo_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="resnet-port demo",
        description="End to end with no user files: write a Caffe ResNet, convert-caffe it (checked against the "
        "interpreter), save, reload, inspect, and validate 10-crop on bundled photos.",
    )
    parser.add_argument("--arch", default="caffe_resnet50", help="caffe_resnet50 (default), caffe_resnet101 or caffe_resnet152")
    parser.add_argument("--crops", type=int, choices=(1, 10), default=10, help="validation protocol (default: 10)")
    parser.add_argument("--out-dir", type=Path, help="where to write the demo files (default: a temp folder)")
    parser.add_argument("--json", metavar="FILE", help="also write the result as JSON")
    args = parser.parse_args(argv)
    from resnet_port.demo import run_demo

    result = run_demo(args.arch, args.out_dir, crops=args.crops)
    if args.json:
        from resnet_port.cli import write_json

        write_json(args.json, result)
    return 0 if result["ok"] else 1


@run_cli
def archs_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="resnet-port archs", description="List the registered architectures.")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    from resnet_port.resnet_ref import arch_info, list_archs

    rows = [{"name": n, "family": arch_info(n).family, "note": arch_info(n).note} for n in list_archs()]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print(f"{row['name']:<20} {row['family']:<12} {row['note']}")
    return 0


__all__ = ["VERBS", "archs_main", "build_parser", "demo_main", "main"]
