"""convert-mxnet's referee: the source evaluated independently in float64, so no user logits are needed.

- ``arg:``/``aux:`` params with a symbol JSON (classic ``resnet-N``, Gluon ``export()``): the symbol
  graph evaluated node by node with MXNet's semantics (`interpret.run_symbol`).
- Gluon ``save_parameters`` / ``save_params`` files, which hold no graph: the Gluon model-zoo
  ResNet V1/V2 graph written out functionally from the parameter names (`gluon_graph.run_gluon`);
  GluonCV's ResNetV1b family likewise (`gluon_graph.run_gluoncv_v1b`).
  Names of another layout have no built-in referee: the user gives ``--logits`` (computed with
  MXNet) or ``--no-verify``.

The input is seeded and of 224 x 224 (batch 2; the CIFAR nets' 32 x 32): 0-255 RGB for the models that take it (the classic
symbolic ones), standard normal for the normalised-RGB Gluon models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from resnet_port.converters.common import PARITY_RTOL, Conversion
from resnet_port.converters.mxnet import gluon_names
from resnet_port.converters.mxnet.convert import default_symbol_for
from resnet_port.converters.mxnet.gluon_graph import GluonLayoutError, gluon_layout, run_gluon, run_gluoncv_v1b
from resnet_port.converters.mxnet.interpret import run_symbol
from resnet_port.converters.mxnet.ndarray import read_ndarray_file
from resnet_port.converters.mxnet.symbol import read_symbol_json
from resnet_port.converters.verify import Referee, verify
from resnet_port.errors import ConversionError

VERIFY_BATCH = 2
VERIFY_SIZE = 224


def probe_input(conversion: Conversion, seed: int) -> tuple[np.ndarray, str]:
    rng = np.random.default_rng(seed)
    size = min(VERIFY_SIZE, conversion.metadata.preprocessing.crop)  # 32 for the CIFAR nets
    shape = (VERIFY_BATCH, conversion.spec.in_chans, size, size)
    if conversion.metadata.preprocessing.pixel_max >= 255:
        return rng.uniform(0.0, 255.0, size=shape).astype(np.float32), f"seeded uniform [0, 255], seed {seed}, shape {list(shape)}"
    return rng.standard_normal(shape, dtype=np.float32), f"standard normal, seed {seed}, shape {list(shape)}"


def mxnet_referee(
    conversion: Conversion, params_path: str | Path, symbol: str | Path | None = None, seed: int = 0
) -> Referee:
    """The referee of the files convert_mxnet read (the same choice of symbol as convert_mxnet)."""
    params_path = Path(params_path)
    params = read_ndarray_file(params_path)
    if not isinstance(params, dict):
        raise ConversionError(f"{params_path}: holds unnamed arrays; expected named parameters")
    if symbol is None and any(n.startswith(("arg:", "aux:")) for n in params):
        symbol = default_symbol_for(params_path)
    x, described = probe_input(conversion, seed)
    if symbol is not None:
        graph = read_symbol_json(symbol)
        return Referee(
            name="the MXNet symbol graph evaluated node by node in torch float64",
            input=x,
            logits=lambda batch: run_symbol(graph, params, batch),
            input_description=described,
            output=None,
        )
    if gluon_names.is_gluoncv_v1b(list(params)):
        return Referee(
            name="the GluonCV ResNetV1b graph evaluated in torch float64",
            input=x,
            logits=lambda batch: run_gluoncv_v1b(params, batch, str(params_path)),
            input_description=described,
            output="fc",
        )
    if gluon_names.is_legacy(list(params)):
        try:
            params, _ = gluon_names.legacy_to_structural(params)
        except ValueError as exc:
            raise ConversionError(f"{params_path}: the save_params names do not add up to a Gluon ResNet: {exc}") from exc
    try:
        version = gluon_layout(list(params)).upper()
    except GluonLayoutError as exc:
        raise ConversionError(
            f"{params_path}: no built-in referee for this layout ({exc}); give --logits INPUT.npy LOGITS.npy computed "
            "with MXNet, or --no-verify"
        ) from None

    # Which class built a V2 thumbnail-layout file is the conversion's reading (the names cannot tell).
    raw = conversion.spec.v2_shortcut_input == "block_input"

    def logits(batch: np.ndarray) -> np.ndarray:
        try:
            return run_gluon(params, batch, str(params_path), raw)
        except GluonLayoutError as exc:
            raise ConversionError(
                f"{exc}; no built-in referee for this layout: give --logits INPUT.npy LOGITS.npy computed with MXNet, "
                "or --no-verify"
            ) from None

    return Referee(
        name=f"the {conversion.metadata.source.details.get('gluon_class') or f'Gluon model-zoo ResNet {version}'} graph evaluated in torch float64",
        input=x,
        logits=logits,
        input_description=described,
        output="output",
    )


def verify_conversion(
    conversion: Conversion, params_path: str | Path, symbol: str | Path | None = None, seed: int = 0,
    tolerance: float = PARITY_RTOL,
) -> dict[str, Any]:
    """Run the contract with the independent referee; raises `VerificationFailed` beyond ``tolerance``."""
    return verify(conversion, mxnet_referee(conversion, params_path, symbol, seed), tolerance, where=str(params_path))


__all__ = ["mxnet_referee", "probe_input", "verify_conversion"]
