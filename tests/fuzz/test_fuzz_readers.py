"""Every registered reader, fed truncated, bit-flipped, oversized-length and random files, ends in
the toolkit's own `InputError` (one line) or a result: never another exception, a hang or a huge
allocation.  Each prints how many inputs it tried."""

from __future__ import annotations

import pytest

from tests.fuzz.harness import fuzz_reader
from tests.fuzz.readers import FUZZ_TARGETS


def _case(name: str):
    known = FUZZ_TARGETS[name].known_crash
    if known is None:
        return name
    # Not strict: a short random run may miss the crash; a run that finds it is reported as xfail.
    return pytest.param(name, marks=pytest.mark.xfail(reason=f"known crash, reported: {known}", strict=False))


@pytest.mark.fuzz
@pytest.mark.parametrize("name", [_case(n) for n in sorted(FUZZ_TARGETS)])
def test_reader_survives_fuzzing(name, tmp_path, capsys):
    target = FUZZ_TARGETS[name]
    seeds = target.seeds(tmp_path)
    stats = fuzz_reader(name, target.read, seeds, tmp_path, target.suffix)
    with capsys.disabled():  # shown in every CI log, not only on failure
        print(
            f"\nfuzz {name}: {stats.inputs} inputs in {stats.seconds:.1f} s "
            f"({stats.refused} refused with InputError, {stats.accepted} read)"
        )
    assert stats.inputs >= 25
    assert stats.refused > 0  # mutated files must mostly be refused: a reader that accepts all checks nothing
