"""What every converter shares: the result it hands over, its report, the output check, the CLI tail.

A converter reads its source and returns a `Conversion` — a `ResNetSpec`, a state_dict in the
reference names, and the metadata — and never builds models by hand.  `finish_conversion` then
checks the state_dict fills the spec exactly; the CLI tail writes the checkpoint atomically and the
report as JSON.  Every conversion ends with a numeric check against the source (converters/verify.py,
with `resnet_port.parity.compare_logits`).
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from resnet_port.checkpoints import CheckpointMetadata, save_checkpoint
from resnet_port.cli import write_json
from resnet_port.errors import ConversionError
from resnet_port.parity import compare_logits  # noqa: F401 - the one logit comparison, re-exported
from resnet_port.resnet_ref import ResNetSpec, build_model, get_spec, list_archs, state_dict_problems

# The toolkit's one parity tolerance: max |logit diff| over max |reference logit|.  Every converter
# check, the audit's "equivalent" verdict and the demo use it.
PARITY_RTOL = 1e-4


@dataclass
class ConversionReport:
    """What happened to every source layer and tensor: mapped, or skipped with a reason."""

    source_framework: str
    source_files: list[str] = field(default_factory=list)
    arch: str | None = None
    layers: list[dict[str, Any]] = field(default_factory=list)  # {"name", "type", "targets": [...]}
    mapped: dict[str, str] = field(default_factory=dict)  # target key -> source tensor name
    skipped: list[dict[str, str]] = field(default_factory=list)  # {"source", "reason"}
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # what may change the numbers: said on stderr, in --json

    def map(self, target: str, source: str) -> None:
        if target in self.mapped:
            raise ConversionError(f"{target} is filled twice: from {self.mapped[target]} and from {source}")
        self.mapped[target] = source

    def skip(self, source: str, reason: str) -> None:
        self.skipped.append({"source": source, "reason": reason})

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["num_layers"] = len(self.layers)
        out["num_mapped"] = len(self.mapped)
        out["num_skipped"] = len(self.skipped)
        return out


@dataclass
class Conversion:
    """A finished conversion: what `save_checkpoint` takes, plus the report."""

    spec: ResNetSpec
    state_dict: dict[str, torch.Tensor]
    metadata: CheckpointMetadata
    report: ConversionReport


def finish_conversion(
    spec: ResNetSpec,
    state_dict: Mapping[str, torch.Tensor],
    metadata: CheckpointMetadata,
    report: ConversionReport,
    where: str,
) -> Conversion:
    """Check that the state_dict fills ``spec`` exactly, then bundle it with its metadata."""
    problems = state_dict_problems(spec, state_dict)
    if problems:
        # name the source tensors behind the reference names the problems list (up to three)
        sources = [f"{k} <- {ref}" for k, ref in report.mapped.items() if k in problems.split()][:3]
        origin = f" (from {'; '.join(sources)})" if sources else ""
        raise ConversionError(f"{where}: the converted weights do not fit {metadata.arch or 'the spec'}: {problems}{origin}")
    metadata.conversion_report = report.to_dict()
    return Conversion(spec, dict(state_dict), metadata, report)


def run_converted(conversion: Conversion, x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Logits of the converted weights on ``x`` (float32, eval mode)."""
    model = build_model(conversion.spec)
    full = model.state_dict()
    full.update(conversion.state_dict)
    model.load_state_dict(full)
    model.eval()
    with torch.inference_mode():
        return model(torch.as_tensor(np.asarray(x, dtype=np.float32)))


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """-o / --report / --json, the same for every convert-* command."""
    parser.add_argument("-o", "--output", required=True, type=Path, help="checkpoint to write (.pth or .safetensors)")
    parser.add_argument("--report", type=Path, metavar="FILE", help="also write the conversion report as JSON")
    parser.add_argument(
        "--json", action="store_true", help="print a JSON summary on stdout instead of the readable lines"
    )


def write_outputs(conversion: Conversion, args: argparse.Namespace) -> dict[str, Any]:
    """Write the checkpoint (atomically) and, if asked, the report; return the summary printed."""
    save_checkpoint(args.output, conversion.spec, conversion.state_dict, conversion.metadata)
    if getattr(args, "report", None):
        write_json(args.report, conversion.metadata.conversion_report)
    return {
        "output": str(args.output),
        "arch": conversion.metadata.arch,
        "num_params": conversion.metadata.num_params,
        "mapped_tensors": len(conversion.report.mapped),
        "skipped": conversion.report.skipped,
        "warnings": conversion.report.warnings,
        "verification": conversion.metadata.verification,
    }


def family_name(spec: ResNetSpec, family: str, found: str | None) -> tuple[ResNetSpec, str | None]:
    """The name ``family`` registers for ``spec`` (GluonCV's resnet18_v1b rather than the same network's
    resnet18_v1), with that name's spec; else (``spec``, ``found``).  A source whose files say where they
    come from (GluonCV's block names) is named as that source names it.

    Basic blocks never stride a 1x1, so both stride readings are the same network; the family's is taken."""
    for name in list_archs(family):
        wanted = get_spec(name, spec.num_classes)
        if wanted == spec or (spec.block == "basic" and wanted == spec.replace(stride_in=wanted.stride_in)):
            return wanted, name
    return spec, found


# The release's evaluation sizes, and the input side below which a net is CIFAR-size: such nets are
# evaluated on the whole image (resizing a 32x32 picture to 37 and cropping it back throws pixels away).
RELEASE_RESIZE, RELEASE_CROP = 256, 224
SMALL_INPUT = 100


def resize_and_crop(size: tuple[int, int] | None) -> tuple[int, int, str]:
    """(resize, crop, why) for a net whose input is ``size`` (H, W), or the release's 256 / 224 when
    the file gives no size: every converter records the same rule."""
    if size is None:
        return RELEASE_RESIZE, RELEASE_CROP, "the net gives no input size: the release's resize 256, crop 224"
    side = min(size)
    if side < SMALL_INPUT:
        return side, side, f"input {size[0]}x{size[1]}: a small (CIFAR-size) net, no resize, crop {side}"
    resize = int(round(side * RELEASE_RESIZE / RELEASE_CROP))
    return resize, side, f"input {size[0]}x{size[1]}: crop {side} from a {resize} resize (the release's 224/256 ratio)"

