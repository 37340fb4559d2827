"""Labels files of the flat layouts, recognised by their first line, each label mapped onto the
checkpoint's class order.

- Caffe's ``val.txt``: ``ILSVRC2012_val_00000001.JPEG 65`` (a class index, already in the
  model's order) or ``... n01751748`` (a WordNet id, mapped by name);
- the devkit's ``ILSVRC2012_validation_ground_truth.txt``: one ILSVRC2012_ID a line, line i for
  ``ILSVRC2012_val_{i:08d}.JPEG``, mapped through the devkit's ``meta.mat`` (`validation.devkit`);
- Kaggle's ``LOC_val_solution.csv``: a ``ImageId,PredictionString`` header, then
  ``ILSVRC2012_val_00008726,n02119789 255 142 454 329 ...``: the first token is the WordNet id.

A WordNet id becomes the index of that id in the checkpoint's own class list when it has one, else
in ``--classes`` (``LOC_synset_mapping.txt``, ``synsets.txt``), else in the devkit's sorted ids.
Anything else is a one-line error naming the file and the line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from resnet_port.validation.sources import DatasetError
from resnet_port.validation.devkit import Devkit

WNID = re.compile(r"^n\d{8}$")
KAGGLE_HEADER = "ImageId,PredictionString"
FORMATS_HELP = (
    "'<image> <class index or WNID>' (Caffe val.txt), one ILSVRC2012_ID a line (the devkit's "
    f"ILSVRC2012_validation_ground_truth.txt, with --devkit) or a '{KAGGLE_HEADER}' CSV (Kaggle's LOC_val_solution.csv)"
)


class LabelsError(DatasetError):
    """A labels file that cannot be used."""


@dataclass(frozen=True)
class Entry:
    line: int
    image: str  # relative path, or a name without extension (Kaggle's ImageId)
    label: int


@dataclass
class Labels:
    format: str  # "caffe", "devkit" or "kaggle"
    entries: list[Entry]
    classes: list[str] | None  # the class order WordNet ids were mapped onto, where they were
    mapped_by_name: bool


def detect_format(path: Path, lines: Sequence[str]) -> str:
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if text.replace(" ", "") == KAGGLE_HEADER:
            return "kaggle"
        parts = text.split()
        if len(parts) == 1 and parts[0].isdigit():
            return "devkit"
        last = text.rsplit(maxsplit=1)
        if len(last) == 2 and (last[1].lstrip("-").isdigit() or WNID.match(last[1])):
            return "caffe"
        raise LabelsError(f"{path}:{number}: expected {FORMATS_HELP}; got {text[:80]!r}")
    raise LabelsError(f"{path}: lists no images")


def wnid_order(
    checkpoint_classes: Sequence[str] | None, classes: Sequence[str] | None, devkit: Devkit | None
) -> list[str] | None:
    """The class list WordNet ids are mapped onto: the checkpoint's, else --classes, else the devkit's."""
    for candidate in (checkpoint_classes, classes):
        if candidate and all(WNID.match(c) for c in candidate):
            return list(candidate)
    return devkit.classes if devkit is not None else None


def read_labels(
    path: str | Path,
    *,
    text: str | None = None,
    checkpoint_classes: Sequence[str] | None = None,
    classes: Sequence[str] | None = None,
    devkit: Devkit | None = None,
) -> Labels:
    """Parse a labels file (``text`` when it was read from elsewhere, e.g. the devkit archive)."""
    path = Path(path)
    if text is None:
        if not path.is_file():
            raise LabelsError(f"{path}: no such labels file")
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise LabelsError(f"{path}: cannot read the labels file ({exc})") from exc
    lines = text.splitlines()
    kind = detect_format(path, lines)
    order = wnid_order(checkpoint_classes, classes, devkit)
    position = {name: i for i, name in enumerate(order)} if order is not None else None
    universe = set(classes) if classes else None

    def by_name(wnid: str, number: int) -> int:
        if position is None:
            raise LabelsError(
                f"{path}:{number}: labels are WordNet ids ({wnid}) but no class list says their order: "
                "pass --classes (e.g. LOC_synset_mapping.txt) or --devkit"
            )
        if universe is not None and wnid not in universe:
            raise LabelsError(f"{path}:{number}: {wnid} is not in the --classes list")
        if wnid not in position:
            raise LabelsError(f"{path}:{number}: {wnid} is not one of the checkpoint's {len(position)} classes")
        return position[wnid]

    entries: list[Entry] = []
    if kind == "devkit":
        if devkit is None:
            raise LabelsError(
                f"{path}: one ILSVRC2012_ID a line is the devkit's ground truth, in the devkit's own class order: "
                "pass --devkit ILSVRC2012_devkit_t12 (folder or .tar.gz) to map it onto the model's"
            )
        image_number = 0
        for number, line in enumerate(lines, 1):
            value = line.strip()
            if not value:
                continue
            image_number += 1
            if not value.isdigit():
                raise LabelsError(f"{path}:{number}: expected one ILSVRC2012_ID (an integer), got {value[:80]!r}")
            wnid = devkit.wnid_of_id.get(int(value))
            if wnid is None:
                raise LabelsError(f"{path}:{number}: ILSVRC2012_ID {value} is not a class of {devkit.source}")
            entries.append(Entry(number, f"ILSVRC2012_val_{image_number:08d}.JPEG", by_name(wnid, number)))
    elif kind == "kaggle":
        header_seen = False
        for number, line in enumerate(lines, 1):
            value = line.strip()
            if not value:
                continue
            if not header_seen:
                header_seen = True
                continue
            image, _, prediction = value.partition(",")
            tokens = prediction.split()
            if not image or not tokens or not WNID.match(tokens[0]):
                raise LabelsError(f"{path}:{number}: expected 'ImageId,WNID x y x y ...', got {value[:80]!r}")
            entries.append(Entry(number, image.strip(), by_name(tokens[0], number)))
    else:
        for number, line in enumerate(lines, 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            parts = line.rsplit(maxsplit=1)
            if len(parts) != 2 or not (parts[1].lstrip("-").isdigit() or WNID.match(parts[1])):
                raise LabelsError(f"{path}:{number}: expected '<image path> <class index>', got {line.strip()[:80]!r}")
            name, label = parts[0].strip(), parts[1]
            if WNID.match(label):
                entries.append(Entry(number, name, by_name(label, number)))
                continue
            if int(label) < 0:
                raise LabelsError(f"{path}:{number}: class index {label} is negative")
            entries.append(Entry(number, name, int(label)))
    if not entries:
        raise LabelsError(f"{path}: lists no images")
    named = kind != "caffe" or any(WNID.match(line.rsplit(maxsplit=1)[-1]) for line in lines if line.strip())
    return Labels(kind, entries, order if named else None, mapped_by_name=named)
