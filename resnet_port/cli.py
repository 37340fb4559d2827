"""What every command-line tool shares: error handling, exit codes and JSON output.

An `InputError` (unusable input) prints one line naming the file and what was wrong, and exits 2;
a failed check (`converters.verify.VerificationFailed`, any `ResnetPortError` with an ``exit_code``)
prints its line and exits with that code (1); a keyboard interrupt exits 130; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any, Callable

from resnet_port.errors import InputError, ResnetPortError


def run_cli(main: Callable[[list[str] | None], int | None]) -> Callable[[list[str] | None], int]:
    """Wrap a ``main(argv)`` so that user errors become one line on stderr and exit code 2."""

    @functools.wraps(main)
    def wrapper(argv: list[str] | None = None) -> int:
        prog = Path(sys.argv[0]).name if argv is None else main.__module__
        try:
            code = main(argv)
        except InputError as exc:
            print(f"{prog}: error: {exc}", file=sys.stderr)
            return exc.exit_code
        except ResnetPortError as exc:
            if not hasattr(exc, "exit_code"):
                raise
            print(f"{prog}: {exc}", file=sys.stderr)
            return int(exc.exit_code)
        except KeyboardInterrupt:
            print(f"{prog}: interrupted", file=sys.stderr)
            return 130
        return 0 if code is None else int(code)

    return wrapper


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON atomically ('-' writes to stdout)."""
    text = json.dumps(data, indent=2, sort_keys=False, default=str) + "\n"
    if str(path) == "-":
        sys.stdout.write(text)
        return
    from resnet_port.checkpoints.io import atomic_output

    with atomic_output(path) as tmp:
        tmp.write_text(text)
