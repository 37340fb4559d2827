"""The verification contract every converter follows, written once.

A conversion is not done until the converted weights reproduce the source: each source supplies a
*referee* — an independent computation of the source network on a seeded input (Caffe: the float64
graph interpreter; ONNX: onnxruntime, or the node evaluator without it; MXNet: the float64 symbol
evaluator; or logits the user computed with the source framework) — and `verify` does the rest the
same way for all of them:

- the converted model runs in float32, as users will run it, on the referee's input;
- `resnet_port.parity.compare_logits` gives the figures;
- the check passes when max |diff| <= ``tolerance`` x max |reference logit| (default
  `converters.common.PARITY_RTOL`) and every top-1 agrees;
- the record (`VERIFICATION_KEYS`, the same for every converter) goes into the checkpoint metadata;
- a failed check raises `VerificationFailed`: the CLIs exit 1 and write nothing.

The CLI side is here as well: ``--no-verify`` / ``--verify`` / ``--tolerance`` / ``--seed`` and the
output-path check, so that every convert-* command takes the same options and refuses the same paths.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from resnet_port.checkpoints.io import SAFETENSORS_SUFFIXES, TORCH_SUFFIXES
from resnet_port.converters.common import PARITY_RTOL, Conversion, run_converted
from resnet_port.errors import InputError, ResnetPortError
from resnet_port.parity import PARITY_KEYS, compare_logits, within_tolerance

# The keys of every converter's verification record (metadata.verification and the JSON summary).
VERIFICATION_KEYS = ("referee", "input", "output", "tolerance", "passed", "skipped", *PARITY_KEYS)
OUTPUT_SUFFIXES = TORCH_SUFFIXES + SAFETENSORS_SUFFIXES


class VerificationFailed(ResnetPortError):
    """The converted model disagrees with the source's referee.  CLI exit code 1; nothing is written."""

    exit_code = 1

    def __init__(self, message: str, record: dict[str, Any]) -> None:
        super().__init__(message)
        self.record = record


@dataclass
class Referee:
    """An independent computation of the source network on one input.

    ``logits`` computes the reference on ``input`` (called once, by `verify`).  ``model_input`` is
    what the converted model is given when it takes the input in another form (Caffe ``--rgb``: the
    channels reversed); by default the same array.
    """

    name: str
    input: np.ndarray
    logits: Callable[[np.ndarray], np.ndarray]
    input_description: str
    output: str | None = None  # the source's output compared (a blob, a node), when it has a name
    model_input: np.ndarray | None = None


def record_of(referee: Referee, parity: dict[str, Any], tolerance: float) -> dict[str, Any]:
    return {
        "referee": referee.name,
        "input": referee.input_description,
        "output": referee.output,
        "tolerance": float(tolerance),
        "passed": within_tolerance(parity, tolerance),
        "skipped": None,
        **{key: parity[key] for key in PARITY_KEYS},
    }


def skipped_record(reason: str) -> dict[str, Any]:
    """The record of a check that was not run (``--no-verify``): the same keys, figures None."""
    return {
        "referee": None, "input": None, "output": None, "tolerance": None, "passed": None, "skipped": reason,
        **{key: None for key in PARITY_KEYS},
    }


def verify(conversion: Conversion, referee: Referee, tolerance: float = PARITY_RTOL, where: str = "") -> dict[str, Any]:
    """Run ``referee`` and the converted model, record the result in the metadata, and raise
    `VerificationFailed` when they disagree beyond ``tolerance``."""
    if not tolerance >= 0:
        raise InputError(f"--tolerance {tolerance}: expected a number >= 0")
    reference = np.asarray(referee.logits(referee.input))
    ours = run_converted(conversion, referee.input if referee.model_input is None else referee.model_input)
    if reference.reshape(len(reference), -1).shape != tuple(ours.reshape(len(ours), -1).shape):
        raise VerificationFailed(
            f"{where or 'the conversion'}: {referee.name} gives outputs of shape {list(reference.shape)}, the converted "
            f"model {list(ours.shape)}",
            skipped_record("output shapes differ"),
        )
    record = record_of(referee, compare_logits(reference, ours), tolerance)
    conversion.metadata.verification = record
    if not record["passed"]:
        raise VerificationFailed(failure_message(where, record), record)
    return record


def failure_message(where: str, record: dict[str, Any]) -> str:
    return (
        f"check failed: {where or 'the conversion'}: the converted model disagrees with {record['referee']}: "
        f"max |diff| {record['max_abs_diff']:.3g} ({record['max_rel_diff']:.3g} of the largest logit, tolerance "
        f"{record['tolerance']:g}), top-1 agreement {record['top1_agreement']:.0%}; nothing written"
    )


def summary_line(record: dict[str, Any]) -> str:
    """The one line every convert-* command prints about its check."""
    if record.get("skipped"):
        return f"  check: skipped ({record['skipped']})"
    return (
        f"  check vs {record['referee']}: max |diff| {record['max_abs_diff']:.3g} ({record['max_rel_diff']:.3g} of "
        f"the largest logit, tolerance {record['tolerance']:g}), top-1 agreement {record['top1_agreement']:.0%}"
    )


# -- user-supplied logits ------------------------------------------------------------------------
def _load_npy(path: Path, what: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read the {what} as a .npy array: {exc}") from exc


def logits_referee(input_path: str | Path, logits_path: str | Path, in_chans: int, num_classes: int) -> Referee:
    """Logits the user computed with the source framework on an input of theirs (N, C, H, W float32)."""
    input_path, logits_path = Path(input_path), Path(logits_path)
    x = _load_npy(input_path, "verification input")
    reference = _load_npy(logits_path, "reference logits")
    if x.ndim != 4 or x.shape[1] != in_chans:
        raise InputError(f"{input_path}: expected an (N, {in_chans}, H, W) input, got shape {x.shape}")
    if reference.shape != (x.shape[0], num_classes):
        raise InputError(f"{logits_path}: expected logits of shape ({x.shape[0]}, {num_classes}), got {reference.shape}")
    return Referee(
        name=f"logits supplied in {logits_path.name}",
        input=np.asarray(x, np.float32),
        logits=lambda _x: reference,
        input_description=f"{input_path.name}, shape {list(x.shape)}",
    )


# -- the command-line side -----------------------------------------------------------------------
def check_output_path(path: Path) -> None:
    """Refuse an unusable output path before minutes of converting, not after."""
    if path.exists() and path.is_dir():
        raise InputError(f"{path}: is a folder; -o names the checkpoint file to write")
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise InputError(f"{path}: unknown checkpoint extension {path.suffix or '(none)'}; use .pth or .safetensors")
    if not path.parent.is_dir():
        raise InputError(f"{path}: the folder {path.parent} does not exist")


def add_verify_arguments(parser: argparse.ArgumentParser, referee: str, verify_takes_logits: bool = False) -> None:
    """--no-verify, --verify, --logits, --tolerance, --seed: the same for every converter.

    ``--verify`` is kept for the scripts that passed it: the check runs by default, so it does
    nothing, except in convert-mxnet where ``--verify INPUT.npy LOGITS.npy`` (its older spelling of
    ``--logits``) still works (``verify_takes_logits``).  Call `resolve_verify_arguments` after parsing.
    """
    group = parser.add_argument_group(
        "verification",
        f"By default the converted model is run beside {referee} on a seeded input; the checkpoint is "
        "written only if max |diff| <= tolerance x the largest reference logit and every top-1 agrees "
        "(else exit 1, nothing written). The record goes into the checkpoint metadata and the JSON summary.",
    )
    group.add_argument("--no-verify", action="store_true", help="skip the check (the metadata records that it was skipped)")
    if verify_takes_logits:
        group.add_argument(
            "--verify", nargs="*", type=Path, metavar="FILE", dest="verify_files",
            help="accepted for compatibility (the check runs by default); --verify INPUT.npy LOGITS.npy is --logits",
        )
    else:
        group.add_argument("--verify", action="store_true", help="accepted for compatibility: the check runs by default")
    group.add_argument(
        "--logits", nargs=2, type=Path, metavar=("INPUT.npy", "LOGITS.npy"),
        help="check against logits you computed with the source framework on INPUT (N,C,H,W float32, what the "
        "source takes) instead of the built-in referee",
    )
    group.add_argument(
        "--tolerance", type=float, default=PARITY_RTOL, metavar="RTOL",
        help=f"largest max |diff| accepted, relative to the largest reference logit (default {PARITY_RTOL:g})",
    )
    group.add_argument("--seed", type=int, default=0, help="seed of the check's input (default 0)")


def resolve_verify_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """Fold ``--verify INPUT LOGITS`` into ``--logits``; refuse contradictory options (exit 2)."""
    files = getattr(args, "verify_files", None)
    if files:
        if len(files) != 2:
            parser.error("--verify takes no value, or INPUT.npy LOGITS.npy (the same as --logits)")
        if args.logits:
            parser.error("give the reference logits once: --logits or --verify INPUT.npy LOGITS.npy")
        args.logits = files
    if args.no_verify and args.logits:
        parser.error("--no-verify and --logits contradict each other")
    if not args.tolerance >= 0:
        parser.error(f"--tolerance {args.tolerance}: expected a number >= 0")
    return args


EXIT_CODES = "Exit codes: 0 written (and checked); 1 the check failed; 2 unusable input. On 1 and 2 nothing is written."




def check_from_args(
    conversion: Conversion,
    args: argparse.Namespace,
    builtin: Callable[[], Referee] | None,
    where: str,
    model_input: Callable[[np.ndarray], np.ndarray] | None = None,
) -> dict[str, Any]:
    """The CLI's check: skipped with --no-verify, else the user's logits when given, else ``builtin``'s
    referee (``None``: the built-in check already ran inside the converter).  Raises on failure.
    ``model_input`` maps the source's input to the converted model's (Caffe --rgb), for --logits."""
    if args.no_verify:
        conversion.metadata.verification = skipped_record("--no-verify")
    elif getattr(args, "logits", None):
        referee = logits_referee(*args.logits, conversion.spec.in_chans, conversion.spec.num_classes)
        if model_input is not None:
            referee.model_input = model_input(referee.input)
        verify(conversion, referee, args.tolerance, where)
    elif builtin is not None:
        verify(conversion, builtin(), args.tolerance, where)
    return conversion.metadata.verification


__all__ = [
    "EXIT_CODES",
    "resolve_verify_arguments",
    "check_from_args",
    "OUTPUT_SUFFIXES",
    "Referee",
    "VERIFICATION_KEYS",
    "VerificationFailed",
    "add_verify_arguments",
    "check_output_path",
    "logits_referee",
    "skipped_record",
    "summary_line",
    "verify",
]
