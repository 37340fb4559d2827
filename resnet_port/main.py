"""`resnet-port`: the toolkit's front door.

``resnet-port demo`` is the main job on a fresh machine with no user files: it builds a reference
model, saves it in both formats, reloads it, checks the reload is bit-exact and prints its summary.
``resnet-port archs`` lists the registered architectures.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from resnet_port.cli import run_cli


def demo(arch: str, out_dir: Path | None) -> dict:
    from checkpoints import CheckpointMetadata, load_model, save_checkpoint
    from checkpoints.inspect import format_summary, summarize
    from checkpoints.presets import preset_preprocessing
    from resnet_ref import arch_info, create_model

    torch.manual_seed(0)
    model = create_model(arch).eval()
    info = arch_info(arch)
    meta = CheckpointMetadata(spec=model.spec, arch=arch, preprocessing=preset_preprocessing(info.family))
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        ref = model(x)
    work = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="resnet-port-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    result = {"arch": arch, "files": {}}
    for suffix in (".pth", ".safetensors"):
        path = work / f"{arch}{suffix}"
        save_checkpoint(path, model.spec, model.state_dict(), meta)
        loaded, _ = load_model(path)
        with torch.inference_mode():
            out = loaded(x)
        same = all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
        result["files"][suffix] = {
            "path": str(path),
            "weights_bit_exact": same,
            "max_abs_logit_diff": float((out - ref).abs().max()),
        }
        print(f"saved and reloaded {path}: weights bit-exact {same}, max |logit diff| {result['files'][suffix]['max_abs_logit_diff']:.3g}")
    print()
    print(format_summary(summarize(work / f"{arch}.safetensors")))
    return result


@run_cli
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="resnet-port",
        description="Port the classic ImageNet ResNets onto one reference PyTorch ResNet and prove every port correct. "
        "Commands: convert-caffe, convert-mxnet, convert-onnx, validate, audit, inspect-checkpoint; "
        "`resnet-port demo` runs an end-to-end demonstration with no user files.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser("demo", help="build, save, reload and inspect a reference model (no user files needed)")
    p_demo.add_argument("--arch", default="caffe_resnet50", help="architecture to demonstrate (default: caffe_resnet50)")
    p_demo.add_argument("--out-dir", type=Path, help="where to write the demo files (default: a temp folder)")
    p_demo.add_argument("--json", metavar="FILE", help="also write the result as JSON")
    p_archs = sub.add_parser("archs", help="list the registered architectures")
    p_archs.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)

    if args.command == "archs":
        from resnet_ref import arch_info, list_archs

        rows = [{"name": n, "family": arch_info(n).family, "note": arch_info(n).note} for n in list_archs()]
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            for row in rows:
                print(f"{row['name']:<20} {row['family']:<12} {row['note']}")
        return 0
    result = demo(args.arch, args.out_dir)
    if args.json:
        from resnet_port.cli import write_json

        write_json(args.json, result)
    ok = all(f["weights_bit_exact"] and f["max_abs_logit_diff"] == 0.0 for f in result["files"].values())
    return 0 if ok else 1
