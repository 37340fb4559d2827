"""Reading ``.prototxt`` net definitions (protobuf text format) into a ``caffe.NetParameter``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from google.protobuf import text_format

from resnet_port.converters.caffe.errors import CaffeFormatError
from resnet_port.converters.caffe.netstate import DATA_TYPES, LOSS_TYPES
from resnet_port.converters.caffe.schema import message_class
from resnet_port.converters.caffe.textscan import cut_field, enclosing_blocks, layer_at, offset_of
from resnet_port.converters.caffe.upgrade import upgrade_net


# Parameter blocks that only feed or train the net: an unknown field inside them (a fork's data
# augmentation, a loss option, a filler) cannot change what the TEST net computes.
TRAINING_ONLY_BLOCKS = frozenset({
    "transform_param", "data_param", "image_data_param", "hdf5_data_param", "memory_data_param",
    "window_data_param", "dummy_data_param", "loss_param", "accuracy_param", "python_param", "param",
    "include", "exclude", "weight_filler", "bias_filler", "filler", "scale_filler", "shift_filler",
    "slope_filler",
})
_UNKNOWN_FIELD = re.compile(r'Message type "caffe\.(\w+)" has no field named "(\w+)"')
_MAX_DROPPED = 10_000


def _is_training_layer(span: Any) -> bool:
    kind = (span.type or "") if span is not None else ""
    return kind in DATA_TYPES or kind in LOSS_TYPES or kind.endswith(("Data", "Loss")) or kind == "Python"


def _solver_fields() -> set[str]:
    solver = {f.name for f in message_class("SolverParameter").DESCRIPTOR.fields}
    return solver - {f.name for f in message_class("NetParameter").DESCRIPTOR.fields}


def parse_prototxt_with_notes(text: str, where: str = "<prototxt>", upgrade: bool = True) -> tuple[Any, list[str]]:
    """Parse prototxt text; return the net and a note per field dropped as training-only.

    A field the schema does not know is dropped (and noted) only where it cannot change
    inference: inside a data or loss layer, or inside a training-only block (data augmentation,
    fillers, loss options).  Anywhere else it is an error naming the field, the layer and the line.
    A solver prototxt is named as such, with the command that reads it.
    """
    notes: list[str] = []
    for _ in range(_MAX_DROPPED):
        net = message_class("NetParameter")()
        try:
            text_format.Parse(text, net)
            break
        except text_format.ParseError as exc:
            message = str(exc)
            line, column = exc.GetLine(), exc.GetColumn()
            match = _UNKNOWN_FIELD.search(message)
            if match is None or line is None or line < 0:
                span = layer_at(text, offset_of(text, line, column)) if line and line > 0 else None
                named = f" (layer {span.name!r})" if span is not None and span.name else ""
                raise CaffeFormatError(f"{where}: not a Caffe net prototxt{named}: {message}") from exc
            container, field_name = match.groups()
            offset = offset_of(text, line, column)
            if container == "NetParameter" and field_name in _solver_fields():
                raise CaffeFormatError(
                    f"{where}: is a Caffe solver prototxt (it sets {field_name!r}, line {line}), not a net definition; "
                    f"`convert-solver {where}` reads it; give the net's deploy or train_val prototxt here"
                ) from exc
            span = layer_at(text, offset)
            blocks = enclosing_blocks(text, offset)
            layer = f"layer {span.name!r} ({span.type})" if span is not None else "the net header"
            if _is_training_layer(span) or TRAINING_ONLY_BLOCKS.intersection(blocks) or field_name.endswith("_filler"):
                text, removed = cut_field(text, offset)
                if not removed:
                    raise CaffeFormatError(f"{where}: line {line}: cannot read field {field_name!r} of {layer}") from exc
                path = ".".join([b for b in blocks if b not in ("layer", "layers")] + [field_name])
                notes.append(f"{layer}: {path} (line {line}) is not in BVLC Caffe's schema; training only, ignored")
                continue
            if span is None and container == "NetParameter":
                raise CaffeFormatError(f"{where}: not a Caffe net prototxt: line {line}: unknown field {field_name!r}") from exc
            raise CaffeFormatError(
                f"{where}: line {line}: unknown field {field_name!r} (in {container}) of {layer}; it might change "
                "what the net computes, so the file is refused"
            ) from exc
    else:  # pragma: no cover - a file of 10,000 unknown fields
        raise CaffeFormatError(f"{where}: too many unknown fields")
    return (upgrade_net(net, where) if upgrade else net), notes


def parse_prototxt(text: str, where: str = "<prototxt>", upgrade: bool = True) -> Any:
    """Parse prototxt text; ``upgrade`` applies Caffe's V1-layer and input-header upgrades."""
    return parse_prototxt_with_notes(text, where, upgrade)[0]


def read_prototxt_with_notes(path: str | Path, upgrade: bool = True) -> tuple[Any, list[str]]:
    """`read_prototxt`, and the notes of training-only fields it dropped (see parse_prototxt_with_notes)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CaffeFormatError(f"{path}: cannot read the prototxt: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CaffeFormatError(
            f"{path}: not a text prototxt (byte {exc.start} is not UTF-8); a binary .caffemodel goes first, "
            "the prototxt after --prototxt"
        ) from exc
    net, notes = parse_prototxt_with_notes(text, str(path), upgrade=upgrade)
    if not net.layer and not net.layers:
        raise CaffeFormatError(f"{path}: the prototxt defines no layers")
    return net, notes


def read_prototxt(path: str | Path, upgrade: bool = True) -> Any:
    """The ``NetParameter`` of a prototxt file (deploy or train_val), its layers in file order.

    Each layer keeps its ``param { lr_mult decay_mult }`` (``layer.param``), ``include { phase }``
    rules and type-specific parameters; V1 files come back in the current format.
    """
    return read_prototxt_with_notes(path, upgrade)[0]


__all__ = ["TRAINING_ONLY_BLOCKS", "parse_prototxt", "parse_prototxt_with_notes", "read_prototxt", "read_prototxt_with_notes"]
