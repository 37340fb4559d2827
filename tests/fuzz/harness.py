"""A bounded-time, property-based fuzzer for file readers.

Each input is a seed file (a valid file the reader accepts) changed by one hypothesis-drawn
mutation: truncated, bits flipped, bytes overwritten or inserted, a length-like field replaced by a
huge number, or replaced by random bytes.  The property: the reader returns, or raises the
toolkit's own `InputError`; any other exception, a hang (per-input alarm) or a large jump in the
process's peak memory fails the test.  Examples run in rounds until a time budget (FUZZ_SECONDS, default 3 per
reader) is spent, so each reader costs a few seconds in CI whatever its speed.

With ``FUZZ_SEED`` set (CI sets it), round k of a reader draws from seed (FUZZ_SEED, reader, k):
the inputs are the same on every run, so a failure reproduces and a green run elsewhere predicts
CI's.  Without it (a developer's run) every round is fresh random, to find new damage.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from resnet_port.errors import InputError

BUDGET_S = float(os.environ.get("FUZZ_SECONDS", "3"))  # per reader
FUZZ_SEED = os.environ.get("FUZZ_SEED")  # fixed inputs (CI); unset: fresh random ones
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


@dataclass(frozen=True)
class Mutation:
    """One change to one seed; small to print, so a failing example reads in one line."""

    seed: int
    kind: str
    at: int = 0
    value: int = 0
    data: bytes = b""

    def apply(self, seeds: list[bytes]) -> bytes:
        base = seeds[self.seed % len(seeds)]
        if not base or self.kind == "random":
            return self.data
        at = self.at % (len(base) + 1)
        if self.kind == "truncate":
            return base[: min(at, len(base) - 1)]
        if self.kind == "flip":
            out = bytearray(base)
            for k, byte in enumerate(self.data):  # each data byte picks a position and a bit
                i = (at + k * 7919 * (byte + 1)) % len(out)
                out[i] ^= 1 << (byte % 8)
            return bytes(out)
        if self.kind == "overwrite":
            return base[:at] + self.data + base[at + len(self.data) :]
        if self.kind == "insert":
            return base[:at] + self.data + base[at:]
        if self.kind == "huge_field":
            packed = struct.pack("<Q", self.value) if self.value > 0xFFFFFFFF or self.data else struct.pack("<I", self.value)
            return base[:at] + packed + base[at + len(packed) :]
        if self.kind == "head_then_random":
            return base[: max(at % 256, 1)] + self.data
        if self.kind == "json_value":
            return _replace_json_value(base, self.at, self.value)
        raise ValueError(f"unknown mutation {self.kind}")


# Values of every JSON type, swapped in for one value of a JSON seed: type confusion, not syntax.
JSON_VALUES = (None, True, 0, -1, 7, 2**70, 1.5, "", "x", [], [0], [-1, 0, 0], [99, 1, 0], {}, {"a": 1}, [[]])


def _json_paths(node, path=()):
    yield path
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _json_paths(value, path + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _json_paths(value, path + (index,))


def _replace_json_value(base: bytes, at: int, value: int) -> bytes:
    document = json.loads(base)
    paths = [p for p in _json_paths(document) if p]
    path = paths[at % len(paths)]
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = JSON_VALUES[value % len(JSON_VALUES)]
    return json.dumps(document).encode()


def _is_json(data: bytes) -> bool:
    try:
        json.loads(data)
    except ValueError:
        return False
    return True


def mutations(seeds: list[bytes]) -> st.SearchStrategy[Mutation]:
    """Seed files, each changed in one way a damaged or hostile file would be: truncated, bits
    flipped, bytes overwritten or inserted, a length-like field made huge (biased to the header),
    the head kept and the rest random, or random bytes altogether."""
    longest = max(len(s) for s in seeds)
    seed = st.integers(0, len(seeds) - 1)
    anywhere = st.integers(0, longest)
    header = st.one_of(st.integers(0, 64), st.integers(0, 4096), anywhere)
    structured = []
    if all(_is_json(s) for s in seeds):  # JSON files also get type confusion inside valid JSON
        values = st.integers(0, 10**6)
        structured = [st.builds(Mutation, seed, st.just("json_value"), values, values)] * 3
    return st.one_of(
        *structured,
        st.builds(Mutation, seed, st.just("truncate"), anywhere),
        st.builds(Mutation, seed, st.just("flip"), anywhere, data=st.binary(min_size=1, max_size=16)),
        st.builds(Mutation, seed, st.just("overwrite"), anywhere, data=st.binary(min_size=1, max_size=32)),
        st.builds(Mutation, seed, st.just("insert"), anywhere, data=st.binary(min_size=1, max_size=64)),
        st.builds(Mutation, seed, st.just("huge_field"), header, st.sampled_from(HUGE_VALUES), data=st.sampled_from([b"", b"q"])),
        st.builds(Mutation, seed, st.just("head_then_random"), st.integers(1, 256), data=st.binary(max_size=1024)),
        st.builds(Mutation, seed, st.just("random"), data=st.binary(max_size=2048)),
    )


def _alarm(signum, frame):  # noqa: ARG001 - signal handler signature
    raise Hang(f"one input took more than {PER_INPUT_TIMEOUT_S} s")


def call_once(read: Callable[[Path], Any], path: Path, data: bytes, stats: FuzzStats) -> None:
    path.write_bytes(data)
    failed = path.with_name(path.name + ".failing")
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
    except BaseException:
        failed.write_bytes(data)  # kept beside the input in the test's tmp folder, to reproduce
        raise
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
        phases=(Phase.explicit, Phase.generate),  # no shrinking: a Mutation already prints in one line
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )
    @given(mutations(seeds))
    def property_holds(mutation: Mutation) -> None:
        call_once(read, path, mutation.apply(seeds), stats)

    # Rounds of fresh random examples until the budget is spent: bounded time whatever the reader's speed.
    start = time.perf_counter()
    rounds = 0
    while time.perf_counter() - start < BUDGET_S and stats.inputs < MAX_EXAMPLES:
        if FUZZ_SEED is None:
            property_holds()
        else:
            seed(int(FUZZ_SEED) * 1_000_003 + zlib.crc32(name.encode()) + rounds)(property_holds)()
        rounds += 1
    stats.seconds = time.perf_counter() - start
    growth = peak_rss_mb() - rss_before
    if growth > MAX_RSS_GROWTH_MB:
        raise AssertionError(f"{name}: peak memory grew by {growth:.0f} MB while fuzzing: a size read from a file was trusted")
    return stats
