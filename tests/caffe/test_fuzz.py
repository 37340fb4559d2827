"""Bounded fuzzing of the caffemodel reader and the conversion: any damage to a valid file ends in a
one-line `InputError` (CLI exit 2), never another exception."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resnet_port.converters.caffe import convert_caffe
from resnet_port.errors import InputError


@pytest.mark.fuzz
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_damaged_caffemodels_fail_cleanly(tiny, tmp_path_factory, data):
    original = tiny["model"].read_bytes()
    raw = bytearray(original)
    for _ in range(data.draw(st.integers(1, 6))):
        position = data.draw(st.integers(0, len(raw) - 1))
        raw[position] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    path = tmp_path_factory.mktemp("fuzz") / "damaged.caffemodel"
    path.write_bytes(bytes(raw))
    try:
        convert_caffe(path)
    except InputError as exc:
        assert "\n" not in str(exc)
