"""Loading one side of an audit: any file the toolkit reads, brought onto the reference spec.

Each side ends as a `Side`: a spec, a state_dict in the reference names and the metadata (its
preprocessing above all).  Toolkit checkpoints and plain torchvision / timm / mmcls state dicts go
through `checkpoints`; Caffe, MXNet and ONNX files through their converters, so that the audit
compares exactly what a user of this toolkit would get.  A side whose weights do not fit its spec
is still loaded (with ``problems`` saying why), because a wrong shape is itself evidence: a
transposed classifier, a missing bias.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from resnet_port.checkpoints import CheckpointMetadata, Preprocessing, read_raw
from resnet_port.checkpoints.plain import metadata_for_plain
from resnet_port.errors import CheckpointError, InputError
from resnet_port.resnet_ref import ResNetSpec, state_dict_problems

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
NDARRAY_MAGIC = (0x112).to_bytes(8, "little")

# (suffix, kind), read top to bottom: the first suffix the file name ends with decides.
SUFFIX_KINDS: list[tuple[str, str]] = [
    (".caffemodel.h5", "caffe"),
    (".caffemodel", "caffe"),
    (".h5", "caffe"),
    (".params", "mxnet"),
    (".onnx", "onnx"),
    (".safetensors", "checkpoint"),
    (".pth", "checkpoint"),
    (".pt", "checkpoint"),
    (".bin", "checkpoint"),
    (".ckpt", "checkpoint"),
]


@dataclass
class SideOptions:
    """What a file may need besides itself (a prototxt for an .h5, an arch for a plain state_dict)."""

    arch: str | None = None
    preset: str | None = None
    prototxt: Path | None = None
    mean: Path | None = None
    mean_values: list[float] | None = None  # a Caffe file's per-channel mean (BGR), when it has no mean image
    symbol: Path | None = None
    ema: bool = False  # the EMA weights of a training checkpoint


@dataclass
class Side:
    """One network as the audit sees it."""

    label: str
    path: Path
    kind: str
    spec: ResNetSpec
    state_dict: dict[str, torch.Tensor]
    metadata: CheckpointMetadata
    problems: str = ""  # '' when the state_dict fills the spec exactly
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def preprocessing(self) -> Preprocessing:
        return self.metadata.preprocessing

    def changed(
        self,
        spec: ResNetSpec | None = None,
        state_dict: dict[str, torch.Tensor] | None = None,
        preprocessing: Preprocessing | None = None,
    ) -> "Side":
        """A copy with some parts replaced; the diagnosis tries its fixes on such copies."""
        spec = spec or self.spec
        state_dict = self.state_dict if state_dict is None else state_dict
        metadata = dataclasses.replace(
            self.metadata, spec=spec, preprocessing=preprocessing or self.metadata.preprocessing
        )
        return dataclasses.replace(
            self,
            spec=spec,
            state_dict=state_dict,
            metadata=metadata,
            problems=state_dict_problems(spec, state_dict),
        )


def file_kind(path: Path) -> str:
    """'checkpoint', 'caffe', 'mxnet' or 'onnx', from the name and, failing that, the first bytes."""
    name = path.name.lower()
    for suffix, kind in SUFFIX_KINDS:
        if name.endswith(suffix):
            return kind
    with open(path, "rb") as handle:
        head = handle.read(16)
    if head.startswith(HDF5_MAGIC):
        return "caffe"
    if head.startswith(NDARRAY_MAGIC):
        return "mxnet"
    if head.startswith(b"PK") or head[:1] == b"\x80" or head[8:9] == b"{":
        return "checkpoint"
    raise InputError(
        f"{path}: cannot tell what kind of file this is; expected a .caffemodel, .caffemodel.h5, .params, "
        ".onnx, .pth or .safetensors file"
    )


def load_side(label: str, path: str | Path, options: SideOptions | None = None) -> Side:
    """Read ``path`` into a `Side`, through the converter its kind needs."""
    path = Path(path)
    options = options or SideOptions()
    if not path.is_file():
        raise InputError(f"{path}: no such file (side {label})")
    kind = file_kind(path)
    if options.ema and kind != "checkpoint":
        raise InputError(f"{path}: --ema-{label.lower()} picks the EMA weights of a training checkpoint; this is a {kind} file")
    if kind == "checkpoint":
        spec, state_dict, metadata = _read_checkpoint(path, options)
    else:
        conversion = _CONVERTERS[kind](path, options)
        spec, state_dict, metadata = conversion.spec, conversion.state_dict, conversion.metadata
    state_dict = {k: v for k, v in state_dict.items() if isinstance(v, torch.Tensor)}
    return Side(label, path, kind, spec, state_dict, metadata, state_dict_problems(spec, state_dict))


def _read_checkpoint(path: Path, options: SideOptions):
    tensors, record, mean_image = read_raw(path, ema=options.ema)
    if record is not None:
        metadata = CheckpointMetadata.from_dict(record, None if mean_image is None else mean_image.numpy())
        return metadata.spec, tensors, metadata
    try:
        state_dict, metadata = metadata_for_plain(path, tensors, arch=options.arch, preset=options.preset)
    except KeyError as exc:
        raise CheckpointError(f"{path}: the state_dict lacks {exc.args[0]}") from exc
    return metadata.spec, state_dict, metadata


def _converter(module: str, function: str, kind: str) -> Callable[..., Any]:
    """The converter entry point, or a clear 'not available' error when it is not installed."""
    try:
        return getattr(importlib.import_module(module), function)
    except (ImportError, AttributeError) as exc:
        raise InputError(
            f"reading {kind} files needs {module}.{function}, which is not available in this install ({exc})"
        ) from exc


def _convert_caffe(path: Path, options: SideOptions):
    convert = _converter("resnet_port.converters.caffe", "convert_caffe", "Caffe")
    return convert(path, prototxt=options.prototxt, mean=options.mean, mean_values=options.mean_values)


def _convert_mxnet(path: Path, options: SideOptions):
    convert = _converter("resnet_port.converters.mxnet", "convert_mxnet", "MXNet")
    return convert(path, arch=options.arch, symbol=options.symbol)


def _convert_onnx(path: Path, options: SideOptions):
    convert = _converter("resnet_port.converters.onnx", "convert_onnx", "ONNX")
    return convert(path)


_CONVERTERS: dict[str, Callable[[Path, SideOptions], Any]] = {
    "caffe": _convert_caffe,
    "mxnet": _convert_mxnet,
    "onnx": _convert_onnx,
}
