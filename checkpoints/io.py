"""Reading and writing checkpoints: ``.pth`` (torch zip, loaded with ``weights_only=True``) and
``.safetensors`` (metadata in the header), chosen by extension on write and by content on read.

A toolkit checkpoint holds the state_dict, the metadata record as JSON, and the mean image (if the
preprocessing has one) as a tensor.  Writing is atomic: the bytes go to a temporary file in the
destination's folder, which is renamed over the destination only once complete.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch

from resnet_port.checkpoints.containers import WeightsChoice, find_weights
from resnet_port.checkpoints.metadata import CheckpointMetadata
from resnet_port.checkpoints.untrusted import UnsafeGlobalError, load_untrusted
from resnet_port.errors import CheckpointError
from resnet_port.resnet_ref import ResNet, ResNetSpec, build_model, state_dict_problems

FORMAT_NAME = "resnet-port-checkpoint"
FORMAT_VERSION = 1
SAFETENSORS_KEY = "resnet_port"  # one namespaced header key holding the JSON record
MEAN_IMAGE_KEY = "__resnet_port__.mean_image"
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
SAFETENSORS_SUFFIXES = (".safetensors",)


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the body succeeds."""
    dest = Path(path)
    if dest.parent and not dest.parent.exists():
        raise CheckpointError(f"{dest}: the folder {dest.parent} does not exist")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent or ".")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates the file 0600; a written checkpoint, report or page gets the permissions any
        # other new file would get (0666 less the umask), as `open(path, "w")` would have given it.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_checkpoint(
    path: str | Path,
    spec: ResNetSpec,
    state_dict: Mapping[str, torch.Tensor],
    metadata: CheckpointMetadata,
) -> Path:
    """Write a checkpoint after checking that ``state_dict`` fits ``spec`` exactly."""
    path = Path(path)
    if metadata.spec != spec:
        raise CheckpointError(f"{path}: the metadata's spec differs from the spec given to save_checkpoint")
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    model = _model_from(spec, tensors, str(path))  # strict check before anything is written
    if metadata.num_params is None:
        metadata.num_params = sum(p.numel() for p in model.parameters())
    record = metadata.to_dict()
    mean_image = metadata.preprocessing.mean_image
    suffix = path.suffix.lower()
    with atomic_output(path) as tmp:
        if suffix in SAFETENSORS_SUFFIXES:
            from safetensors.torch import save_file

            if MEAN_IMAGE_KEY in tensors:
                raise CheckpointError(f"{path}: state_dict uses the reserved key {MEAN_IMAGE_KEY}")
            if mean_image is not None:
                tensors[MEAN_IMAGE_KEY] = torch.from_numpy(np.ascontiguousarray(mean_image))
            header = {SAFETENSORS_KEY: json.dumps({"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "metadata": record})}
            save_file(tensors, str(tmp), metadata=header)
        elif suffix in TORCH_SUFFIXES:
            payload = {
                "format": FORMAT_NAME,
                "format_version": FORMAT_VERSION,
                "metadata": json.dumps(record),
                "state_dict": tensors,
                "mean_image": None if mean_image is None else torch.from_numpy(np.ascontiguousarray(mean_image)),
            }
            torch.save(payload, str(tmp))
        else:
            raise CheckpointError(
                f"{path}: unknown checkpoint extension {suffix or '(none)'}; use .pth or .safetensors"
            )
    return path


@dataclass
class RawCheckpoint:
    """What a checkpoint file holds, read untrusted-safe: the tensors, the toolkit record (None for
    files from elsewhere), the mean image, which entry the weights came from, and which foreign
    globals were loaded as inert stand-ins."""

    tensors: dict[str, torch.Tensor]
    record: dict[str, Any] | None
    mean_image: torch.Tensor | None
    choice: WeightsChoice | None = None
    stand_ins: list[str] = field(default_factory=list)

    def details(self) -> dict[str, Any]:
        """Facts for ``SourceInfo.details``: the weights entry, the container, the stand-ins."""
        out: dict[str, Any] = {}
        if self.choice is not None:
            out.update(self.choice.to_dict())
        if self.stand_ins:
            out["pickle_stand_ins"] = list(self.stand_ins)
        return out


def read_raw(
    path: str | Path, ema: bool = False
) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None, torch.Tensor | None]:
    """(tensors, toolkit record or None, mean image or None) from any supported file, untrusted-safe."""
    raw = read_checkpoint(path, ema=ema)
    return raw.tensors, raw.record, raw.mean_image


def read_checkpoint(path: str | Path, ema: bool = False) -> RawCheckpoint:
    """Read any supported file; ``ema`` picks the EMA weights of a training checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    with open(path, "rb") as handle:
        head = handle.read(16)
    if len(head) < 8:
        raise CheckpointError(f"{path}: {len(head)} bytes is too short to be a checkpoint")
    if _looks_like_safetensors(path, head):
        tensors, record, mean_image = _read_safetensors(path)
        if ema:
            raise CheckpointError(f"{path}: --ema given, but a safetensors file holds one set of weights, no EMA entry")
        return RawCheckpoint(tensors, record, mean_image)
    return _read_torch(path, head, ema)


def _looks_like_safetensors(path: Path, head: bytes) -> bool:
    header_len = int.from_bytes(head[:8], "little")
    return head[8:9] == b"{" and 0 < header_len <= path.stat().st_size - 8


def _read_safetensors(path: Path):
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc
    mean_image = tensors.pop(MEAN_IMAGE_KEY, None)
    record = None
    if SAFETENSORS_KEY in header:
        wrapper = _parse_json(path, header[SAFETENSORS_KEY])
        _check_format(path, wrapper)
        record = wrapper.get("metadata")
    return tensors, record, mean_image


def _read_torch(path: Path, head: bytes, ema: bool) -> RawCheckpoint:
    if not (head.startswith(b"PK") or head[:1] == b"\x80"):
        raise CheckpointError(f"{path}: not a PyTorch or safetensors checkpoint (unrecognised first bytes {head[:8]!r})")
    try:
        loaded = load_untrusted(path)
    except UnsafeGlobalError as exc:
        raise CheckpointError(
            f"{path}: refused to load: the pickle names the global {exc.name}, which is code (it could run "
            "commands, import modules or read files). Only data is loaded from checkpoints."
        ) from exc
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()
        reason = next((line for line in first if "GLOBAL" in line or "global" in line), first[0] if first else "")
        raise CheckpointError(
            f"{path}: refused to load: the pickle needs more than tensors, plain containers and inert objects, which "
            f"could run code ({reason.strip()[:200]}). Only weights-only checkpoints are loaded."
        ) from exc
    except Exception as exc:  # torch.load raises a dozen undocumented types on damaged bytes (found by fuzzing)
        raise CheckpointError(f"{path}: corrupted or truncated checkpoint ({type(exc).__name__}: {str(exc)[:200]})") from exc
    payload = loaded.payload
    if isinstance(payload, dict) and payload.get("format") == FORMAT_NAME:
        _check_format(path, payload)
        record = _parse_json(path, payload.get("metadata"))
        state = payload.get("state_dict")
        if not isinstance(state, dict):
            raise CheckpointError(f"{path}: toolkit checkpoint without a state_dict")
        if ema:
            raise CheckpointError(f"{path}: --ema given, but a toolkit checkpoint holds one set of weights, no EMA entry")
        return RawCheckpoint(_tensor_dict(path, state), record, payload.get("mean_image"), stand_ins=loaded.stand_ins)
    state, choice = find_weights(path, payload, ema=ema)
    return RawCheckpoint(_tensor_dict(path, state), None, None, choice, loaded.stand_ins)


def _check_format(path: Path, wrapper: Mapping[str, Any]) -> None:
    if wrapper.get("format") != FORMAT_NAME or wrapper.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {wrapper.get('format')!r} version {wrapper.get('format_version')!r} "
            f"is not {FORMAT_NAME} version {FORMAT_VERSION}"
        )


def _parse_json(path: Path, text: Any) -> dict[str, Any]:
    if not isinstance(text, str):
        raise CheckpointError(f"{path}: the metadata record is missing")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: the metadata record is not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: the metadata record is not a JSON object")
    return data


def unwrap_state_dict(path: Path | str, payload: Any, ema: bool = False) -> dict[str, Any]:
    """Find the state_dict inside the wrappers training scripts put around it (see `find_weights`)."""
    return find_weights(path, payload, ema=ema)[0]


def _tensor_dict(path: Path | str, state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        if not isinstance(key, str):
            raise CheckpointError(f"{path}: state_dict key {key!r} is not a string")
        if isinstance(value, torch.Tensor):
            out[key] = value
    return out


def _model_from(spec: ResNetSpec, state_dict: Mapping[str, torch.Tensor], where: str) -> ResNet:
    """Build ``spec`` and load ``state_dict`` strictly; errors list what is missing or extra."""
    problems = state_dict_problems(spec, state_dict)
    if problems:
        raise CheckpointError(f"{where}: the weights do not load into the architecture; {problems}")
    model = build_model(spec)
    full = dict(state_dict)
    for key, value in model.state_dict().items():
        full.setdefault(key, value)  # only num_batches_tracked can be absent
    model.load_state_dict(full, strict=True)
    return model.eval()


def load_checkpoint(path: str | Path) -> tuple[ResNetSpec, dict[str, torch.Tensor], CheckpointMetadata]:
    """(spec, state_dict, metadata) of a checkpoint written by this toolkit."""
    tensors, record, mean_image = read_raw(path)
    if record is None:
        raise CheckpointError(
            f"{path}: a plain state_dict without toolkit metadata; use load_model(path, arch=...) "
            "(or --arch / --preset on the command line)"
        )
    metadata = CheckpointMetadata.from_dict(record, None if mean_image is None else mean_image.numpy())
    return metadata.spec, tensors, metadata


def load_model(
    path: str | Path, arch: str | None = None, preset: str | None = None, ema: bool = False
) -> tuple[ResNet, CheckpointMetadata]:
    """Load any checkpoint this toolkit can read into the reference model, in eval mode.

    Toolkit checkpoints carry their spec.  Plain torchvision / timm / mmcls state dicts, bare or inside
    a training checkpoint, need ``arch`` or are matched against every registered architecture by names
    and shapes; ``ema`` takes a training checkpoint's EMA weights.
    """
    from resnet_port.checkpoints.plain import metadata_for_plain

    raw = read_checkpoint(path, ema=ema)
    if raw.record is not None:
        metadata = CheckpointMetadata.from_dict(raw.record, None if raw.mean_image is None else raw.mean_image.numpy())
        if arch is not None and metadata.arch not in (None, arch):
            raise CheckpointError(f"{path}: --arch {arch} given, but the checkpoint says it is {metadata.arch}")
        return _model_from(metadata.spec, raw.tensors, str(path)), metadata
    source_arch = raw.choice.training.get("arch") if raw.choice is not None else None
    state_dict, metadata = metadata_for_plain(Path(path), raw.tensors, arch=arch, preset=preset, source_arch=source_arch)
    metadata.source.details.update(raw.details())
    if raw.choice is not None and raw.choice.key is not None:
        metadata.notes["weights"] = f"weights from {raw.choice.key!r} of a {raw.choice.container} file ({raw.choice.rule})"
    if raw.stand_ins:
        metadata.notes["pickle_stand_ins"] = (
            "loaded as inert stand-ins (recorded, never imported or run): " + ", ".join(raw.stand_ins)
        )
    return _model_from(metadata.spec, state_dict, str(path)), metadata
