"""The registry of fuzzed readers: each a name, the function that reads a path, the suffix its
files carry, and a seed function that writes valid files for the mutations to start from.

Register a new reader with `@fuzz_target`; `test_fuzz_readers.py` picks it up.  Seeds are made here
by the toolkit's own writers or by the real libraries (torch, safetensors, onnx), small so that
thousands of mutations fit in a few seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from tests.audit.pairs import random_state_dict, small_spec, torch_prep


@dataclass(frozen=True)
class FuzzTarget:
    name: str
    read: Callable[[Path], Any]
    seeds: Callable[[Path], list[bytes]]
    suffix: str


FUZZ_TARGETS: dict[str, FuzzTarget] = {}


def fuzz_target(name: str, read: Callable[[Path], Any], suffix: str):
    def register(seeds: Callable[[Path], list[bytes]]) -> Callable[[Path], list[bytes]]:
        if name in FUZZ_TARGETS:
            raise RuntimeError(f"fuzz target {name} registered twice")
        FUZZ_TARGETS[name] = FuzzTarget(name, read, seeds, suffix)
        return seeds

    return register


def _tiny_state(arch: str = "resnet18", seed: int = 0):
    spec = small_spec(arch, widths=(4, 4, 8, 8), stem_width=4, num_classes=3)
    return spec, random_state_dict(spec, seed)


def _read_raw(path: Path) -> Any:
    from checkpoints import read_raw

    return read_raw(path)


@fuzz_target("checkpoints.read_raw", _read_raw, ".pth")
def checkpoint_seeds(work: Path) -> list[bytes]:
    """A toolkit .pth and .safetensors, a plain state_dict (zip), and a legacy (non-zip) pickle file."""
    from checkpoints import CheckpointMetadata, save_checkpoint

    spec, state = _tiny_state()
    meta = CheckpointMetadata(spec=spec, preprocessing=torch_prep())
    files = [save_checkpoint(work / "seed.pth", spec, state, meta), save_checkpoint(work / "seed.safetensors", spec, state, meta)]
    plain = {k: v for k, v in list(state.items())[:6]}
    torch.save({"state_dict": plain}, work / "plain.pth")
    torch.save(plain, work / "legacy.pth", _use_new_zipfile_serialization=False)
    files += [work / "plain.pth", work / "legacy.pth"]
    return [Path(f).read_bytes() for f in files]


def _load_model(path: Path) -> Any:
    from checkpoints import load_model

    return load_model(path)


@fuzz_target("checkpoints.load_model", _load_model, ".safetensors")
def load_model_seeds(work: Path) -> list[bytes]:
    """The whole loading path, metadata record and strict fit included."""
    from checkpoints import CheckpointMetadata, save_checkpoint

    spec, state = _tiny_state("resnet50")
    meta = CheckpointMetadata(spec=spec, preprocessing=torch_prep())
    return [save_checkpoint(work / "seed.safetensors", spec, state, meta).read_bytes()]


def tiny_onnx(path: Path) -> Path:
    """A small reference ResNet exported by torch's ONNX exporter, BatchNorms kept as nodes."""
    from resnet_ref import build_model

    spec, state = _tiny_state("resnet18_v1")
    model = build_model(spec)
    model.load_state_dict({**model.state_dict(), **state})
    model.eval()
    torch.onnx.export(
        model,
        torch.zeros(1, 3, 32, 32),
        str(path),
        input_names=["data"],
        output_names=["logits"],
        dynamo=False,
        opset_version=13,
        training=torch.onnx.TrainingMode.PRESERVE,  # keep BatchNorm nodes (eval export folds them)
        do_constant_folding=False,
    )
    return path


def _convert_onnx(path: Path) -> Any:
    from converters.onnx import convert_onnx

    return convert_onnx(path)


@fuzz_target("converters.onnx.convert_onnx", _convert_onnx, ".onnx")
def onnx_seeds(work: Path) -> list[bytes]:
    return [tiny_onnx(work / "seed.onnx").read_bytes()]
