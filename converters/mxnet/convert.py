"""convert_mxnet: an MXNet params file (and its symbol, if any) to a `Conversion`.

Gluon ``save_parameters`` files (and the pre-1.3 ``save_params`` ones, translated first) go to
`from_gluon`; ``arg:``/``aux:`` files with a symbol JSON to `from_symbol`.  The converted model takes
exactly what the source network takes: normalised RGB for Gluon, 0-255 RGB for the classic symbolic
models (their data BN normalises inside); the metadata says which.
"""

from __future__ import annotations

import re
from pathlib import Path

from resnet_port.converters.common import Conversion
from resnet_port.converters.mxnet import gluon_names
from resnet_port.converters.mxnet.from_gluon import convert_gluon_parameters
from resnet_port.converters.mxnet.from_symbol import convert_symbol
from resnet_port.converters.mxnet.ndarray import read_ndarray_file
from resnet_port.converters.mxnet.shared import closest_archs
from resnet_port.errors import ConversionError
from resnet_port.resnet_ref import arch_info, list_archs


def default_symbol_for(params_path: Path) -> Path | None:
    """``prefix-0000.params`` -> ``prefix-symbol.json`` when that file exists (the save_checkpoint pair)."""
    match = re.match(r"^(?P<prefix>.*)-\d{4}\.params$", params_path.name)
    if match:
        candidate = params_path.with_name(f"{match.group('prefix')}-symbol.json")
        if candidate.is_file():
            return candidate
    return None


def convert_mxnet(params_path: str | Path, arch: str | None = None, symbol: str | Path | None = None) -> Conversion:
    """Convert an MXNet params file (Gluon ``save_parameters``, or ``arg:``/``aux:`` with a symbol).

    ``arch`` names the expected architecture (refused if the file is another); without it the
    architecture is read from the file.  ``symbol`` is needed for ``arg:``/``aux:`` files; when it is
    not given, ``prefix-symbol.json`` beside ``prefix-NNNN.params`` is used if present.
    """
    params_path = Path(params_path)
    if arch is not None and arch not in list_archs():
        arch_info(arch)  # raises with close names
    params = read_ndarray_file(params_path)
    if isinstance(params, list):
        raise ConversionError(f"{params_path}: holds {len(params)} unnamed arrays; expected named parameters")
    if not params:
        raise ConversionError(f"{params_path}: holds no parameters")
    prefixed = [n for n in params if n.startswith(("arg:", "aux:"))]
    if symbol is None and prefixed:
        symbol = default_symbol_for(params_path)
        if symbol is None:
            raise ConversionError(
                f"{params_path}: holds arg:/aux: names (an export() or save_checkpoint file); pass its symbol JSON "
                "with --symbol (e.g. resnet-50-symbol.json)"
            )
    if symbol is not None:
        return convert_symbol(params_path, params, Path(symbol), arch)
    if gluon_names.is_legacy(list(params)):
        try:
            structural, legacy_names = gluon_names.legacy_to_structural(params)
        except ValueError as exc:
            raise ConversionError(f"{params_path}: the save_params names do not add up to a Gluon ResNet: {exc}") from exc
        return convert_gluon_parameters(params_path, structural, arch, legacy_names)
    return convert_gluon_parameters(params_path, params, arch)


__all__ = ["closest_archs", "convert_gluon_parameters", "convert_mxnet", "convert_symbol", "default_symbol_for"]
