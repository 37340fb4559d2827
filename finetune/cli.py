"""The fine-tuning commands: ``convert-solver`` and ``recalibrate-bn``."""

from __future__ import annotations

import argparse
from pathlib import Path

from resnet_port.finetune.net_params import read_net_multipliers
from resnet_port.finetune.plan import plan_optimizer
from resnet_port.finetune.solver import read_solver
from resnet_port.cli import run_cli, write_json
from resnet_port.errors import InputError


def _iterations(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise InputError(f"--at expects comma-separated iteration numbers such as 0,30000,60000, got {text!r}") from exc
    if not values or any(v < 0 for v in values):
        raise InputError(f"--at expects iteration numbers >= 0, got {text!r}")
    return sorted(set(values))


def build_solver_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convert-solver",
        description=(
            "Read a Caffe solver.prototxt (and the train net's param { lr_mult decay_mult } entries) and print "
            "the PyTorch optimizer and LR scheduler that reproduce it. Caffe puts the learning rate inside the "
            "momentum (v = m*v + lr*g; w -= v), PyTorch outside it (v = m*v + g; w -= lr*v): they agree only "
            "while the rate is constant. torch.optim.SGD is proposed when it is exact; otherwise finetune.CaffeSGD, "
            "which applies Caffe's rule. The scheduler is Caffe's own formula, stepped once per iteration."
        ),
    )
    parser.add_argument("solver", type=Path, help="Caffe solver in protobuf text format")
    parser.add_argument(
        "--net", type=Path,
        help="train_val.prototxt whose param { lr_mult decay_mult } define the parameter groups "
        "(default: the solver's net:/train_net: if that file exists beside the solver)",
    )
    parser.add_argument(
        "--checkpoint", type=Path,
        help="a checkpoint written by convert-caffe from this net: its conversion report ties each reference "
        "parameter (conv1.weight, layer1.0.bn1.bias, ...) to its Caffe blob, so groups list reference names",
    )
    parser.add_argument(
        "--at", type=_iterations, metavar="ITERS",
        help="iterations of the learning-rate table, e.g. 0,30000,60000 (default: 0, every step boundary and max_iter)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the plan as JSON to FILE ('-' for stdout only)")
    return parser


def _resolve_net(args: argparse.Namespace, declared: str | None) -> tuple[Path | None, str | None]:
    if args.net is not None:
        return args.net, None
    if not declared:
        return None, "no --net and the solver names no net: every parameter has lr_mult 1, decay_mult 1"
    candidate = args.solver.parent / declared
    if candidate.is_file():
        return candidate, f"read the net {candidate} named by the solver"
    return None, (f"the solver's net {declared!r} was not found beside it; pass --net to read its "
                  "lr_mult/decay_mult (assumed 1 and 1 here)")


@run_cli
def convert_solver_main(argv: list[str] | None = None) -> int:
    args = build_solver_parser().parse_args(argv)
    solver = read_solver(args.solver)
    net_path, note = _resolve_net(args, solver.net)
    blobs = read_net_multipliers(net_path) if net_path is not None else None
    mapped = None
    if args.checkpoint is not None:
        if blobs is None:
            raise InputError(f"{args.checkpoint}: --checkpoint needs the train net (--net) to know each blob's multipliers")
        mapped = _conversion_map(args.checkpoint)
    plan = plan_optimizer(solver, blobs, mapped, at=args.at)
    if note:
        plan.notes.insert(0, note)
    if args.json:
        write_json(args.json, plan.to_dict())
        if args.json == "-":
            return 0
    print(plan.render())
    return 0


def _conversion_map(path: Path) -> dict[str, str]:
    """reference key -> "layer.blobs[i]" from a convert-caffe checkpoint's conversion report."""
    from resnet_port.checkpoints import load_checkpoint

    _, _, metadata = load_checkpoint(path)
    report = metadata.conversion_report or {}
    if report.get("source_framework") != "caffe" or not isinstance(report.get("mapped"), dict):
        raise InputError(
            f"{path}: holds no Caffe conversion report (source {report.get('source_framework')!r}); "
            "give a checkpoint written by convert-caffe"
        )
    return dict(report["mapped"])


@run_cli
def recalibrate_bn_main(argv: list[str] | None = None) -> int:
    from resnet_port.finetune.recalibrate_cli import main

    return main(argv)


convert_solver_main.__doc__ = "convert-solver: " + build_solver_parser().description.split(". ")[0] + "."
recalibrate_bn_main.__doc__ = "recalibrate-bn: BN statistics as exact averages over training images."
