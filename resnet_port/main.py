"""`resnet-port`: the toolkit's front door.

``resnet-port demo`` is the main job on a fresh machine with no user files (see resnet_port/demo.py):
a Caffe model written by the project's writer, converted and verified, saved, reloaded, inspected,
and evaluated 10-crop on bundled photos.
``resnet-port archs`` lists the registered architectures.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from resnet_port.cli import run_cli


@run_cli
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="resnet-port",
        description="Port the classic ImageNet ResNets onto one reference PyTorch ResNet and prove every port correct. "
        "Commands: convert-caffe, convert-mxnet, convert-onnx, validate, audit, inspect-checkpoint; "
        "`resnet-port demo` runs an end-to-end demonstration with no user files.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser(
        "demo",
        help="end to end with no user files: write a Caffe ResNet, convert-caffe it with --verify, save, reload, "
        "inspect, and validate 10-crop on bundled photos",
    )
    p_demo.add_argument("--arch", default="caffe_resnet50", help="caffe_resnet50 (default), caffe_resnet101 or caffe_resnet152")
    p_demo.add_argument("--crops", type=int, choices=(1, 10), default=10, help="validation protocol (default: 10)")
    p_demo.add_argument("--out-dir", type=Path, help="where to write the demo files (default: a temp folder)")
    p_demo.add_argument("--json", metavar="FILE", help="also write the result as JSON")
    p_archs = sub.add_parser("archs", help="list the registered architectures")
    p_archs.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)

    if args.command == "archs":
        from resnet_port.resnet_ref import arch_info, list_archs

        rows = [{"name": n, "family": arch_info(n).family, "note": arch_info(n).note} for n in list_archs()]
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            for row in rows:
                print(f"{row['name']:<20} {row['family']:<12} {row['note']}")
        return 0
    from resnet_port.demo import run_demo

    result = run_demo(args.arch, args.out_dir, crops=args.crops)
    if args.json:
        from resnet_port.cli import write_json

        write_json(args.json, result)
    return 0 if result["ok"] else 1
