"""Which net and which weights: a prototxt and/or the caffemodel's own net, paired as Caffe pairs them.

The prototxt given defines the graph; the weights come from the caffemodel by layer name (shape
checked where each layer is read, naming both shapes).  When the caffemodel carries its own net
(a training snapshot holds the TRAIN net) the two are compared by meaning (agreement.py): a
difference that changes inference is a warning, and the prototxt wins.  Then the chosen net is
cleaned into BVLC's vocabulary (normalise.py) for the graph recogniser.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from resnet_port.converters.caffe.agreement import compare_nets
from resnet_port.converters.caffe.caffemodel import CaffeModel, read_caffemodel
from resnet_port.converters.caffe.layers import blob_id
from resnet_port.converters.caffe.normalise import Normalised, is_nvidia, normalise, pool_reading_of
from resnet_port.converters.caffe.prototxt import read_prototxt_with_notes
from resnet_port.converters.common import ConversionReport
from resnet_port.errors import ConversionError


@dataclass
class Paired:
    """The cleaned TEST net and its blobs, and where they came from."""

    model: CaffeModel
    prototxt_net: Any | None  # as written (None without --prototxt)
    clean: Normalised  # .net: TEST phase, BVLC layers; .blobs: by layer name
    where: str  # the file the graph comes from
    pool_reading: str  # how field 13 of the caffemodel's pooling layers was read
    pool_reading_why: str

    @property
    def net(self) -> Any:
        return self.clean.net

    @property
    def blobs(self) -> dict[str, list[np.ndarray]]:
        return self.clean.blobs


def pair(model_path: Path, prototxt: Path | None, report: ConversionReport) -> Paired:
    """Read the caffemodel (and prototxt), pair them, clean the net; notes and warnings go to ``report``."""
    model = read_caffemodel(model_path)
    prototxt_net = None
    if prototxt is not None:
        prototxt_net, text_notes = read_prototxt_with_notes(prototxt)
        report.notes.extend(text_notes)
        report.source_files.append(str(prototxt))
    reading, why = pool_reading_of(prototxt_net)
    if prototxt_net is not None:
        net, where = prototxt_net, str(prototxt)
        if model.net is not None:
            warnings, extra = compare_nets(prototxt_net, model.net, prototxt, model_path, reading)
            report.warnings.extend(warnings)
        else:
            extra = sorted(set(model.blobs) - {layer.name for layer in net.layer})
        for name in extra:
            for i in range(len(model.blobs.get(name, []))):
                report.skip(blob_id(name, i), f"layer {name!r} is in {model_path.name} but not in {prototxt.name}")
    elif model.net is None:
        raise ConversionError(f"{model_path}: an HDF5 snapshot holds only blobs; give the net with --prototxt")
    else:
        net, where = model.net, str(model_path)
    if model.net is not None and any(layer.type == "Pooling" for layer in model.net.layer):
        field = "ceil_mode" if reading == "fork" else "round_mode"
        report.notes.append(f"pooling rounding of {model_path.name} (field 13) read as {field}: {why}")
    # A prototxt may hold both phases (train_val); the caffemodel's own net was filtered by Caffe
    # when it was built (a solver snapshot holds the TRAIN net), so it is taken as it is.
    # NVIDIA Caffe's BatchNorm semantics apply when either definition comes from NVIDIA Caffe.
    nvidia = is_nvidia(net) or (model.net is not None and is_nvidia(model.net))
    clean = normalise(
        net, model.blobs, where, filter_phase=prototxt is not None, pool_reading="bvlc" if prototxt is not None else reading, nvidia=nvidia
    )
    for name in clean.details.get("excluded_from_test", []):
        report.skip(name, "excluded from the TEST phase")
    report.notes.extend(clean.notes)
    report.warnings.extend(clean.warnings)
    return Paired(model, prototxt_net, clean, where, reading, why)


__all__ = ["Paired", "pair"]
