"""The command line promises one line per unusable input, even when the message quotes a foreign
exception that spans lines (torch's ``set_()`` "expected one of:" list, found by fuzzing)."""

from __future__ import annotations

import pytest

from resnet_port.cli import run_cli
from resnet_port.errors import CheckpointError, InputError, one_line

TORCH_STYLE = (
    "x.pth: corrupted or truncated checkpoint (TypeError: set_() received an invalid combination of "
    "arguments - got (UntypedStorage, int), but expected one of:\n * ()\n * (torch.Storage source)\n"
)


def test_one_line_folds_breaks_and_indentation():
    assert one_line("a:\n * b\r\n   * c\n") == "a: * b * c"
    assert one_line("no breaks  here") == "no breaks  here"


@pytest.mark.parametrize("kind", [InputError, CheckpointError])
def test_input_errors_are_one_line(kind):
    message = str(kind(TORCH_STYLE))
    assert "\n" not in message and "\r" not in message
    assert message.startswith("x.pth: corrupted or truncated checkpoint")
    assert "expected one of: * () * (torch.Storage source)" in message


def test_cli_prints_one_line_and_exits_2(capsys):
    def main(argv):
        raise CheckpointError(TORCH_STYLE)

    assert run_cli(main)([]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "corrupted or truncated" in err
