"""A bounded-time, property-based fuzzer for file readers.

Each input is a seed file (a valid file the reader accepts) changed by one hypothesis-drawn
mutation: truncated, bits flipped, bytes overwritten or inserted, a length-like field replaced by a
huge number, or replaced by random bytes.  The property: the reader returns, or raises the
toolkit's own `InputError`; any other exception, a hang (per-input alarm) or a large jump in the
process's peak memory fails the test.  Examples run in rounds until a time budget (FUZZ_SECONDS, default 4 per
reader) is spent, so each reader costs a few seconds in CI whatever its speed.
"""

from __future__ import annotations

import os
import resource
import signal
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resnet_port.errors import InputError

BUDGET_S = float(os.environ.get("FUZZ_SECONDS", "4"))  # per reader
ROUND_EXAMPLES, MAX_EXAMPLES = 40, 5000
PER_INPUT_TIMEOUT_S = 10
MAX_RSS_GROWTH_MB = 1024  # a reader that trusts a size field would allocate far more than this
HUGE_VALUES = (2**31 - 1, 2**32 - 1, 2**62, 2**63 - 1, 2**64 - 1)


class Hang(Exception):
    """Raised by the alarm when one input takes longer than PER_INPUT_TIMEOUT_S."""


@dataclass
class FuzzStats:
    reader: str
    inputs: int = 0
    accepted: int = 0
    refused: int = 0
    seconds: float = 0.0
    messages: set[str] = field(default_factory=set)


def mutations(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    """Seed files, each changed in one way a damaged or hostile file would be."""
    seed = st.sampled_from(seeds)

    def truncate(data: bytes, draw) -> bytes:
        return data[: draw(st.integers(0, max(len(data) - 1, 0)))]

    def flip(data: bytes, draw) -> bytes:
        out = bytearray(data)
        for _ in range(draw(st.integers(1, 16))):
            i = draw(st.integers(0, len(out) - 1))
            out[i] ^= 1 << draw(st.integers(0, 7))
        return bytes(out)

    def overwrite(data: bytes, draw) -> bytes:
        i = draw(st.integers(0, len(data) - 1))
        chunk = draw(st.binary(min_size=1, max_size=32))
        return data[:i] + chunk + data[i + len(chunk) :]

    def insert(data: bytes, draw) -> bytes:
        i = draw(st.integers(0, len(data)))
        return data[:i] + draw(st.binary(min_size=1, max_size=64)) + data[i:]

    def huge_field(data: bytes, draw) -> bytes:
        # Length fields near the start matter most: bias positions towards the header.
        limit = min(len(data) - 1, draw(st.sampled_from([64, 512, 4096, len(data)])))
        i = draw(st.integers(0, max(limit, 0)))
        value = draw(st.sampled_from(HUGE_VALUES))
        packed = struct.pack("<Q", value) if draw(st.booleans()) else struct.pack("<I", value & 0xFFFFFFFF)
        return data[:i] + packed + data[i + len(packed) :]

    def random_bytes(data: bytes, draw) -> bytes:
        return draw(st.binary(min_size=0, max_size=2048))

    def head_then_random(data: bytes, draw) -> bytes:
        keep = draw(st.integers(1, min(len(data), 256)))
        return data[:keep] + draw(st.binary(min_size=0, max_size=1024))

    kinds = [truncate, flip, overwrite, insert, huge_field, random_bytes, head_then_random]

    @st.composite
    def mutate(draw) -> bytes:
        data = draw(seed)
        kind = draw(st.sampled_from(kinds))
        return kind(data, draw) if data else draw(st.binary(max_size=256))

    return mutate()


def _alarm(signum, frame):  # noqa: ARG001 - signal handler signature
    raise Hang(f"one input took more than {PER_INPUT_TIMEOUT_S} s")


def call_once(read: Callable[[Path], Any], path: Path, data: bytes, stats: FuzzStats) -> None:
    path.write_bytes(data)
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(PER_INPUT_TIMEOUT_S)
    try:
        read(path)
        stats.accepted += 1
    except InputError as exc:
        stats.refused += 1
        message = str(exc)
        if "\n" in message.strip():
            raise AssertionError(f"{stats.reader}: the error is not one line: {message!r}") from exc
        stats.messages.add(message.split(":")[0])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        stats.inputs += 1


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def fuzz_reader(name: str, read: Callable[[Path], Any], seeds: list[bytes], work: Path, suffix: str) -> FuzzStats:
    """Run the property over ``read`` for about BUDGET_S seconds; return what was tried."""
    stats = FuzzStats(name)
    path = work / f"fuzz-input{suffix}"
    for data in seeds:  # every seed must be accepted: a fuzzer whose seeds are refused tests little
        path.write_bytes(data)
        read(path)
    rss_before = peak_rss_mb()

    @settings(
        max_examples=ROUND_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=False,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )
    @given(mutations(seeds))
    def property_holds(data: bytes) -> None:
        call_once(read, path, data, stats)

    # Rounds of fresh random examples until the budget is spent: bounded time whatever the reader's speed.
    start = time.perf_counter()
    while time.perf_counter() - start < BUDGET_S and stats.inputs < MAX_EXAMPLES:
        property_holds()
    stats.seconds = time.perf_counter() - start
    growth = peak_rss_mb() - rss_before
    if growth > MAX_RSS_GROWTH_MB:
        raise AssertionError(f"{name}: peak memory grew by {growth:.0f} MB while fuzzing: a size read from a file was trusted")
    return stats
