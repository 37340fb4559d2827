"""Reading ``.prototxt`` net definitions (protobuf text format) into a ``caffe.NetParameter``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from google.protobuf import text_format

from resnet_port.converters.caffe.errors import CaffeFormatError
from resnet_port.converters.caffe.schema import message_class
from resnet_port.converters.caffe.upgrade import upgrade_net


def parse_prototxt(text: str, where: str = "<prototxt>", upgrade: bool = True) -> Any:
    """Parse prototxt text; ``upgrade`` applies Caffe's V1-layer and input-header upgrades."""
    net = message_class("NetParameter")()
    try:
        text_format.Parse(text, net)
    except text_format.ParseError as exc:
        raise CaffeFormatError(f"{where}: not a Caffe net prototxt: {exc}") from exc
    return upgrade_net(net, where) if upgrade else net


def read_prototxt(path: str | Path, upgrade: bool = True) -> Any:
    """The ``NetParameter`` of a prototxt file (deploy or train_val), its layers in file order.

    Each layer keeps its ``param { lr_mult decay_mult }`` (``layer.param``), ``include { phase }``
    rules and type-specific parameters; V1 files come back in the current format.
    """
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
    net = parse_prototxt(text, str(path), upgrade=upgrade)
    if not net.layer and not net.layers:
        raise CaffeFormatError(f"{path}: the prototxt defines no layers")
    return net


__all__ = ["parse_prototxt", "read_prototxt"]
