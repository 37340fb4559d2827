"""``validate --precision bf16`` against fp32: top-1 agreement, largest score gap and speed.

With a checkpoint it runs that checkpoint; without one a seeded ResNet-50 whose BatchNorm statistics
and classifier are randomised (so that its outputs depend on the input: fresh statistics make every
logit nearly equal).  Images: the sample photos (`validation.sample`) unless ``--data`` is given.
A random network's top-1 agreement measures only the numerics (how often bf16 rounding flips the
arg-max), not accuracy; run it on trained weights and real images before trusting bf16 figures.

    python benchmarks/bf16_agreement.py [CKPT [--preset FAMILY]] [--data DIR] [--crops 1 10] [--json OUT]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import tempfile
from pathlib import Path

import torch

from resnet_port.checkpoints import CheckpointMetadata, Preprocessing
from resnet_port.resnet_ref import create_model
from resnet_port.validation import evaluate, make_sample_dataset


def seeded_resnet50():
    torch.manual_seed(0)
    model = create_model("resnet50").eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
        model.fc.weight.normal_(0, 0.05)
    return model, CheckpointMetadata(spec=model.spec, arch="resnet50", preprocessing=Preprocessing())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", type=Path)
    parser.add_argument("--preset")
    parser.add_argument("--data", type=Path)
    parser.add_argument("--crops", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.checkpoint is not None:
        from resnet_port.validation.cli import load_for_validation

        model, metadata = load_for_validation(args.checkpoint, None, args.preset)
    else:
        model, metadata = seeded_resnet50()
    report = {"date": datetime.date.today().isoformat(), "torch": torch.__version__,
              "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
              "model": str(args.checkpoint) if args.checkpoint else "seeded ResNet-50 (random BN statistics)"}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or make_sample_dataset(Path(tmp) / "photos")
        for crops in args.crops:
            rows = {}
            for precision in ("fp32", "bf16"):
                pred = Path(tmp) / f"{precision}_{crops}.jsonl"
                result = evaluate(model, metadata, data, crops, precision=precision, predictions=pred, workers=0, progress=False)
                rows[precision] = (result, [json.loads(line) for line in pred.read_text().splitlines()])
            (r32, p32), (r16, p16) = rows["fp32"], rows["bf16"]
            same = [a["top5"][0] == b["top5"][0] for a, b in zip(p32, p16)]
            gap = max(abs(x - y) for a, b in zip(p32, p16) if a["top5"][0] == b["top5"][0] for x, y in [(a["probs"][0], b["probs"][0])])
            report[f"{crops}crop"] = {
                "images": r32["images"],
                "top1_agreement": sum(same) / len(same),
                "max_top1_score_gap": gap,
                "top1_fp32": r32["top1"],
                "top1_bf16": r16["top1"],
                "images_per_s_fp32": r32["images_per_s"],
                "images_per_s_bf16": r16["images_per_s"],
            }
    text = json.dumps(report, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
