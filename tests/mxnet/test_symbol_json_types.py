"""A symbol JSON whose values have the wrong JSON types is refused by name (found by fuzzing)."""

from __future__ import annotations

import json

import pytest

from resnet_port.converters.mxnet.symbol import read_symbol_json
from resnet_port.errors import ConversionError

GOOD_NODES = [
    {"op": "null", "name": "data", "inputs": []},
    {"op": "null", "name": "w", "inputs": []},
    {"op": "Convolution", "name": "conv0", "attrs": {"kernel": "(3, 3)", "num_filter": "4"}, "inputs": [[0, 0, 0], [1, 0, 0]]},
]


@pytest.mark.parametrize(
    "mutate,expected",
    [
        (lambda d: d["nodes"][2].update(inputs=True), "'inputs' that is not a list"),
        (lambda d: d["nodes"][2].update(attrs=["kernel"]), "'attrs' that is not a JSON object"),
        (lambda d: d["nodes"][2].update(param=7), "'param' that is not a JSON object"),
        (lambda d: d["nodes"][2].update(inputs=[[True, 0, 0]]), "expected the index of an earlier node"),
        (lambda d: d.update(heads=[[]]), "'heads' entry"),
        (lambda d: d.update(heads=[]), "non-empty list"),
        (lambda d: d.update(heads={"a": 1}), "non-empty list"),
        (lambda d: d.update(heads=[[99, 0, 0]]), "'heads' entry"),
    ],
)
def test_wrong_json_types_are_conversion_errors(tmp_path, mutate, expected):
    data = {"nodes": json.loads(json.dumps(GOOD_NODES)), "heads": [[2, 0, 0]]}
    read_symbol_json(_write(tmp_path, data))  # the unmutated graph reads
    mutate(data)
    with pytest.raises(ConversionError, match=expected):
        read_symbol_json(_write(tmp_path, data))


def _write(tmp_path, data):
    path = tmp_path / "net-symbol.json"
    path.write_text(json.dumps(data))
    return path
